"""Boolean operations on byte DFAs: :func:`intersect` (product) and :func:`complement`.

The product of DFAs A and B runs both at once: its states are the pairs (p, q) reachable
from (start_A, start_B), ``delta((p, q), b) = (delta_A(p, b), delta_B(q, b))``, and a pair
accepts iff both do. The complement swaps accepting and rejecting states (the dead state
becomes an accepting sink; a fresh unreachable dead state keeps the :class:`ByteDFA`
contract). Results are minimised.

>>> from genppl.ppl.automata import compile_regex
>>> d = intersect(compile_regex("a.*"), complement(compile_regex(".*b")))
>>> [d.matches(t) for t in ("a", "ab", "ba", "aa")]
[True, False, False, True]
"""

from __future__ import annotations

import numpy as np

from genppl.models.interface import InputError

from .bytes import ByteDFA, from_table

__all__ = ["complement", "intersect"]


def intersect(*dfas: ByteDFA) -> ByteDFA:
    """The product DFA: accepts what every one of ``dfas`` accepts (reachable part, minimised).

    >>> from genppl.ppl.automata import compile_regex
    >>> d = intersect(compile_regex(".*a.*"), compile_regex(".*b.*"))
    >>> [d.matches(t) for t in ("ab", "ba", "aa")]
    [True, True, False]
    """
    if not dfas:
        raise InputError("intersect needs at least one DFA")
    for d in dfas:
        if not isinstance(d, ByteDFA):
            raise InputError(f"intersect takes ppl.automata.ByteDFA objects, got {type(d).__name__}")
    result = dfas[0]
    for other in dfas[1:]:
        result = _product(result, other)
    return result


def _product(a: ByteDFA, b: ByteDFA) -> ByteDFA:
    ta, tb = a.table(), b.table()
    ids = {(a.dead, b.dead): 0, (a.start, b.start): 1} if (a.start, b.start) != (a.dead, b.dead) \
        else {(a.dead, b.dead): 0}
    pairs = list(ids)
    rows = []
    k = 0
    while k < len(pairs):
        p, q = pairs[k]
        nxt_a, nxt_b = ta[p], tb[q]
        codes = nxt_a.astype(np.int64) * tb.shape[0] + nxt_b
        row = np.empty(256, np.int64)
        for code in np.unique(codes):
            pair = (int(code) // tb.shape[0], int(code) % tb.shape[0])
            if pair not in ids:
                ids[pair] = len(pairs)
                pairs.append(pair)
            row[codes == code] = ids[pair]
        rows.append(row)
        k += 1
    accepting = np.array([a.accepting[p] and b.accepting[q] for p, q in pairs], bool)
    start = ids[(a.start, b.start)]
    return from_table(np.array(rows), accepting, start, 0)


def complement(dfa: ByteDFA) -> ByteDFA:
    """Accepts exactly the byte strings ``dfa`` rejects (the dead state becomes a sink that
    accepts; a new unreachable dead state keeps the ByteDFA contract)."""
    if not isinstance(dfa, ByteDFA):
        raise InputError(f"complement takes a ppl.automata.ByteDFA, got {type(dfa).__name__}")
    table = dfa.table()
    n = table.shape[0]
    table = np.concatenate([table, np.full((1, 256), n)])
    accepting = np.concatenate([~dfa.accepting, [False]])
    return from_table(table, accepting, dfa.start, n)
