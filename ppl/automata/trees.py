"""Building syntax trees by hand and compiling them to byte DFAs.

Grammars and JSON schemas (:mod:`genppl.ppl.grammar`, :mod:`genppl.ppl.jsonschema`) are
lowered to the same trees that regular expressions parse to (:mod:`.syntax`): ``("set",
ranges)`` one code point out of a set, ``("cat", [nodes])``, ``("alt", [nodes])``,
``("rep", node, lo, hi)``, and ``("dfa", byte_dfa)``: an already compiled
:class:`~genppl.ppl.automata.ByteDFA` used as a part (:func:`embed`; the NFA copies its
states, so a sub-language compiled and minimised once is not re-expanded). The helpers here build those nodes; :func:`compile_tree` runs the
regex pipeline on one (Thompson NFA over UTF-8 bytes, subset construction, minimisation).

``EMPTY`` (a set with no code points) is the empty language: any concatenation containing it
is empty, and it is how a depth bound cuts a recursion off.

>>> dfa = compile_tree(cat(literal("ab"), rep(chars([(ord("0"), ord("9"))]), 1, None)))
>>> dfa.matches("ab12"), dfa.matches("ab")
(True, False)
"""

from __future__ import annotations

from genppl.models.interface import InputError

from .bytes import ByteDFA, minimize
from .nfa import NFA, determinize
from .syntax import MAX_CODEPOINT, minus, normalize

__all__ = ["EMPTY", "EPSILON", "alt", "cat", "chars", "compile_tree", "embed", "is_empty", "literal", "optional", "rep",
           "without"]

EMPTY = ("set", ())
EPSILON = ("cat", [])


def embed(dfa: ByteDFA) -> tuple:
    """A compiled byte DFA as a tree node (its language)."""
    return ("dfa", dfa)


def chars(ranges) -> tuple:
    """One code point out of ``ranges`` [(lo, hi), ...] (inclusive; surrogates removed)."""
    return ("set", _normalize(ranges))


def literal(text: str) -> tuple:
    """Exactly ``text``."""
    return ("cat", [("set", ((ord(c), ord(c)),)) for c in text])


def is_empty(node) -> bool:
    """Whether ``node`` is syntactically the empty language (an empty set, or a cat holding one,
    or an alt of empty branches). Not a full emptiness test: used to prune as trees are built."""
    kind = node[0]
    if kind == "set":
        return not node[1]
    if kind == "cat":
        return any(is_empty(n) for n in node[1])
    if kind == "alt":
        return all(is_empty(n) for n in node[1])
    if kind == "rep":
        return node[2] > 0 and is_empty(node[1])
    if kind == "dfa":
        return not node[1].live()[node[1].start]
    return False


def cat(*nodes) -> tuple:
    """Concatenation (EMPTY if any part is)."""
    items = []
    for n in nodes:
        if is_empty(n):
            return EMPTY
        if n[0] == "cat":
            items.extend(n[1])
        else:
            items.append(n)
    return items[0] if len(items) == 1 else ("cat", items)


def alt(*nodes) -> tuple:
    """Alternation (empty branches dropped; EMPTY if none is left)."""
    items = [n for n in nodes if not is_empty(n)]
    if not items:
        return EMPTY
    return items[0] if len(items) == 1 else ("alt", items)


def rep(node, lo: int, hi: int | None) -> tuple:
    """Between ``lo`` and ``hi`` copies (``hi`` None: unbounded)."""
    if is_empty(node):
        return EPSILON if lo == 0 else EMPTY
    if lo == hi == 1:
        return node
    return ("rep", node, int(lo), None if hi is None else int(hi))


def optional(node) -> tuple:
    return rep(node, 0, 1)


def without(node, ranges) -> tuple:
    """``node`` with the code points ``ranges`` removed from every character set (so the
    language is that of ``node`` restricted to strings that avoid those characters)."""
    cut = _normalize(ranges)
    kind = node[0]
    if kind == "set":
        out = node[1]
        for lo, hi in cut:
            out = minus(out, (lo, hi))
        return ("set", out)
    if kind == "cat":
        return cat(*(without(n, cut) for n in node[1]))
    if kind == "alt":
        return alt(*(without(n, cut) for n in node[1]))
    if kind == "rep":
        return rep(without(node[1], cut), node[2], node[3])
    return node


def compile_tree(tree, name: str = "<tree>", max_states: int = 10_000) -> ByteDFA:
    """The minimal byte DFA of a syntax tree (UTF-8 encoding of its code points).

    ``name`` appears in errors (an NFA or DFA over its limit); ``max_states`` bounds the DFA
    before minimisation."""
    nfa = NFA(name)
    start, accept = nfa.build(tree)
    trans, byte_class, accepting = determinize(nfa, start, accept, max_states)
    return minimize(trans, byte_class, accepting, start=1, dead=0)


def _normalize(ranges):
    """:func:`.syntax.normalize` of user-given ranges, checked to be code points."""
    ranges = [(int(a), int(b)) for a, b in ranges]
    for lo, hi in ranges:
        if not 0 <= lo <= hi <= MAX_CODEPOINT:
            raise InputError(f"code point range ({lo}, {hi}) is outside [0, {MAX_CODEPOINT}]")
    return normalize(ranges)
