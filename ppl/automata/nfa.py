"""Regular expressions to byte DFAs: Thompson NFA over UTF-8 bytes, subset construction,
minimisation (:func:`compile_regex`).

A syntax tree over code points (:mod:`.syntax`) becomes an NFA over bytes: a code-point set
becomes the byte-range sequences of its UTF-8 encodings (:func:`utf8_sequences`), and
concatenation, alternation and counted repetition are Thompson's constructions with
epsilon moves (repetitions are expanded, so an NFA over ``MAX_NFA_STATES`` is refused).
The subset construction runs over byte classes (the byte ranges no edge splits), and the
result is minimised (:func:`genppl.ppl.automata.bytes.minimize`).

Semantics are those of ``re.fullmatch(pattern, text)`` on the text's UTF-8 bytes.

>>> dfa = compile_regex(r"[0-9]+ (apples|pears)")
>>> dfa.matches("12 pears"), dfa.matches("12 pear")
(True, False)
"""

from __future__ import annotations

import numpy as np

from genppl.models.interface import InputError

from .bytes import ByteDFA, minimize
from .syntax import parse

__all__ = ["MAX_NFA_STATES", "NFA", "compile_regex", "determinize", "utf8_sequences"]

#: counted repetitions are expanded: an NFA larger than this is refused
MAX_NFA_STATES = 200_000


def utf8_sequences(lo: int, hi: int):
    """Byte-range sequences [((b1lo, b1hi), (b2lo, b2hi), ...)] whose concatenations are
    exactly the UTF-8 encodings of the code points lo..hi (no surrogates inside)."""
    out, stack = [], [(lo, hi)]
    while stack:
        lo, hi = stack.pop()
        split = next((b for b in (0x7F, 0x7FF, 0xFFFF) if lo <= b < hi), None)
        if split is not None:  # different encoded lengths
            stack += [(split + 1, hi), (lo, split)]
            continue
        n = len(chr(lo).encode())
        for i in range(1, n):
            m = (1 << (6 * i)) - 1  # the low i continuation bytes
            if lo & ~m != hi & ~m:
                if lo & m:
                    stack += [((lo | m) + 1, hi), (lo, lo | m)]
                    break
                if hi & m != m:
                    stack += [(hi & ~m, hi), (lo, (hi & ~m) - 1)]
                    break
        else:
            out.append(tuple(zip(chr(lo).encode(), chr(hi).encode())))
    return out



class NFA:
    """A Thompson NFA over bytes: ``eps[q]`` epsilon successors, ``edges[q]`` (byte lo, byte hi,
    target) moves. :meth:`build` adds the states of a syntax tree and returns (start, end)."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int]]] = []  # (byte lo, byte hi, target)

    def state(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise InputError(f"regex {self.pattern!r} is too large (over {MAX_NFA_STATES} NFA states): "
                             "lower the counts of repetitions like {m,n}")
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node) -> tuple[int, int]:
        kind = node[0]
        if kind == "set":
            s, e = self.state(), self.state()
            for lo, hi in node[1]:
                for seq in utf8_sequences(lo, hi):
                    cur = s
                    for k, (a, b) in enumerate(seq):
                        nxt = e if k == len(seq) - 1 else self.state()
                        self.edges[cur].append((a, b, nxt))
                        cur = nxt
            return s, e
        if kind == "anchor" or (kind == "cat" and not node[1]):
            s = self.state()
            return s, s
        if kind == "cat":
            start, end = self.build(node[1][0])
            for item in node[1][1:]:
                a, b = self.build(item)
                self.eps[end].append(a)
                end = b
            return start, end
        if kind == "alt":
            s, e = self.state(), self.state()
            for branch in node[1]:
                a, b = self.build(branch)
                self.eps[s].append(a)
                self.eps[b].append(e)
            return s, e
        if kind == "rep":
            _, sub, lo, hi = node
            if lo == hi == 1:
                return self.build(sub)
            start = cur = self.state()
            for _ in range(lo):
                a, b = self.build(sub)
                self.eps[cur].append(a)
                cur = b
            if hi is None:  # a loop state: enter the copy or leave
                a, b = self.build(sub)
                loop = self.state()
                self.eps[cur].append(loop)
                self.eps[loop].append(a)
                self.eps[b].append(loop)
                return start, loop
            for _ in range(hi - lo):  # optional copies, each one may be skipped
                a, b = self.build(sub)
                nxt = self.state()
                self.eps[cur] += [a, nxt]
                self.eps[b].append(nxt)
                cur = nxt
            return start, cur
        if kind == "dfa":  # an embedded ByteDFA: its live states, byte-range edges, eps to one end
            return self.embed(node[1])
        raise AssertionError(kind)

    def embed(self, dfa) -> tuple[int, int]:
        """Add the states of a :class:`ByteDFA` (those that can still accept); returns (start, end)."""
        live = dfa.live()
        ids = {}
        for q in range(dfa.num_states):
            if live[q]:
                ids[q] = self.state()
        end = self.state()
        if not live[dfa.start]:
            return self.state(), end
        cls = dfa.byte_class
        runs, lo = [], 0  # maximal runs of bytes in one class: (lo, hi, class)
        for b in range(1, 257):
            if b == 256 or cls[b] != cls[lo]:
                runs.append((lo, b - 1, int(cls[lo])))
                lo = b
        for q, s in ids.items():
            row = dfa.trans[q]
            for a, b, c in runs:
                t = int(row[c])
                if live[t]:
                    self.edges[s].append((a, b, ids[t]))
            if dfa.accepting[q]:
                self.eps[s].append(end)
        return ids[dfa.start], end



def determinize(nfa: NFA, start: int, accept: int, max_states: int):
    """Subset construction over byte classes. Returns (trans [S, K], byte_class, accepting);
    state 0 is the dead (empty) set, state 1 the start."""
    cuts = {0, 256}
    for edges in nfa.edges:
        for lo, hi, _ in edges:
            cuts.update((lo, hi + 1))
    cuts = sorted(cuts)
    byte_class = np.zeros(256, np.int32)
    for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
        byte_class[a:b] = k
    num_classes = len(cuts) - 1
    class_edges = [[(int(byte_class[lo]), int(byte_class[hi]), t) for lo, hi, t in edges] for edges in nfa.edges]

    def closure(states):
        seen, stack = set(states), list(states)
        while stack:
            for t in nfa.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)

    ids = {frozenset(): 0}
    sets = [frozenset()]
    rows = [[0] * num_classes]
    first = closure([start])
    ids[first] = 1
    sets.append(first)
    k = 1
    while k < len(sets):
        moves: dict[int, set] = {}
        for q in sets[k]:
            for a, b, t in class_edges[q]:
                for c in range(a, b + 1):
                    moves.setdefault(c, set()).add(t)
        row, cache = [0] * num_classes, {}
        for c, targets in moves.items():
            key = frozenset(targets)
            if key not in cache:
                target_set = closure(targets)
                if target_set not in ids:
                    if len(sets) >= max_states:
                        raise InputError(
                            f"regex {nfa.pattern!r} needs more than {max_states} DFA states: simplify it "
                            "(bounded repeats such as .{1,200} or classes inside long counts multiply "
                            "states) or raise max_states")
                    ids[target_set] = len(sets)
                    sets.append(target_set)
                cache[key] = ids[target_set]
            row[c] = cache[key]
        rows.append(row)
        k += 1
    accepting = np.array([accept in s for s in sets], bool)
    return np.array(rows, np.int32).reshape(len(sets), num_classes), byte_class, accepting



def compile_regex(pattern: str, *, unicode: bool = False, max_states: int = 10_000) -> ByteDFA:
    """Compile ``pattern`` (Python ``re`` syntax, full-match semantics) to a minimal byte DFA.

    ``unicode``: exact Unicode ``\\d \\w \\s`` (see :mod:`.syntax`); ``max_states`` bounds the
    DFA before minimisation (a clear error beyond it).

    >>> dfa = compile_regex(r"(ab|c){2}")
    >>> [dfa.matches(t) for t in ("abc", "cab", "ab", "abcc")]
    [True, True, False, False]
    """
    if isinstance(max_states, bool) or not isinstance(max_states, int) or max_states < 2:
        raise InputError(f"max_states must be an integer >= 2, got {max_states!r}")
    tree = parse(pattern, unicode)
    nfa = NFA(pattern)
    start, accept = nfa.build(tree)
    trans, byte_class, accepting = determinize(nfa, start, accept, max_states)
    return minimize(trans, byte_class, accepting, start=1, dead=0)

