"""Regular-expression constraints, compiled to a byte DFA and then to a token table.

The pipeline, all at construction time (numpy, no JAX):

1. parse the pattern (a ``str``, Python ``re`` syntax) into a small syntax tree over code
   points, compile it to a Thompson NFA over the UTF-8 *bytes* of the text (a code-point class
   becomes byte-range sequences), determinise it (subset construction over byte classes) and
   minimise it: a :class:`ByteDFA`;
2. run every token's bytes from every DFA state reachable at a token boundary: a
   :class:`TokenDFA` with ``table[state, token] -> next state`` and the states from which an
   accepting state is still reachable *by tokens* ("live");
3. :class:`Regex` is the token-level potential: log phi is 0 where the next state is live and
   -inf otherwise, one gather per step.

Semantics are those of ``re.fullmatch(pattern, text)``: the whole continuation must match.
Supported: literals and escapes (``\\n \\t \\xhh \\uhhhh \\N{...}`` ...), ``.`` (any
character but a newline), classes ``[a-z_]`` and ``[^...]``, ``\\d \\w \\s \\D \\W \\S``,
groups ``( )``, ``(?: )``, ``(?P<name> )``, ``|``, ``* + ?``, ``{m} {m,} {,n} {m,n}`` (lazy
forms too: the language is the same), a leading ``^``/``\\A`` and a trailing ``$``/``\\Z``
(ignored). Backreferences, lookaround, word boundaries, inline flags and possessive or atomic
forms raise :class:`models.interface.InputError`.

Unicode: ``.``, ``[^...]`` and literal classes are exact over all of Unicode. The shorthands
``\\d \\w \\s`` (and their negations, and any class that uses them) match ASCII characters only
unless ``unicode=True``, where they follow ``re`` exactly (a much larger DFA). Either way every
accepted text matches ``re.fullmatch``; by default the two agree on every ASCII text.

>>> from genppl import models, ppl
>>> lm = models.TabularLM.random(__import__("jax").random.key(0), vocab_size=5, max_len=4)
>>> dfa = ppl.compile_regex(r"[0-9]+ (apples|pears)")
>>> dfa.matches("12 pears"), dfa.matches("12 pear")
(True, False)
>>> regex = ppl.Regex("a(b|c)*", lm)        # token level, over lm's tokenizer
>>> regex.token_dfa.table.shape[1] == lm.vocab_size
True
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata

import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError

from .potential import Potential

__all__ = ["ByteDFA", "DFAPotential", "Regex", "TokenDFA", "compile_regex", "vocabulary"]

MAX_CODEPOINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)  # not encodable in UTF-8: never in decoded text
#: counted repetitions are expanded: an NFA larger than this is refused
MAX_NFA_STATES = 200_000


# ---- code-point sets: sorted, disjoint, non-adjacent (lo, hi) ranges -------------------------
def _normalize(ranges) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return _minus(tuple((lo, hi) for lo, hi in out), _SURROGATES)


def _minus(ranges, cut):
    a, b = cut
    out = []
    for lo, hi in ranges:
        if hi < a or lo > b:
            out.append((lo, hi))
            continue
        if lo < a:
            out.append((lo, a - 1))
        if hi > b:
            out.append((b + 1, hi))
    return tuple(out)


def _complement(ranges):
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODEPOINT:
        out.append((nxt, MAX_CODEPOINT))
    return _normalize(out)


def _ascii(ranges):
    return tuple((lo, min(hi, 0x7F)) for lo, hi in ranges if lo <= 0x7F)


@functools.cache
def _unicode_shorthand(letter: str):
    """Exact code-point set of ``\\d``, ``\\w`` or ``\\s`` (lower case) as Python's ``re``
    sees it, found by running ``re`` over every code point once."""
    text = "".join(map(chr, range(_SURROGATES[0]))) + "".join(map(chr, range(_SURROGATES[1] + 1, MAX_CODEPOINT + 1)))
    gap = _SURROGATES[1] - _SURROGATES[0] + 1

    def cp(i):  # index in ``text`` -> code point
        return i if i < _SURROGATES[0] else i + gap

    ranges = []
    for m in re.finditer(rf"\{letter}+", text):
        lo, hi = m.start(), m.end() - 1
        if lo < _SURROGATES[0] <= hi:  # a run across the surrogate gap
            ranges += [(lo, _SURROGATES[0] - 1), (cp(_SURROGATES[0]), cp(hi))]
        else:
            ranges.append((cp(lo), cp(hi)))
    return _normalize(ranges)


def _shorthand(letter: str):
    exact = _unicode_shorthand(letter.lower())
    return exact if letter.islower() else _complement(exact)


_ANY_BUT_NEWLINE = _normalize([(0, 9), (11, MAX_CODEPOINT)])


# ---- parser: pattern -> syntax tree ------------------------------------------------------------
# nodes: ("set", ranges) one character; ("cat", [nodes]); ("alt", [nodes]);
#        ("rep", node, lo, hi or None); ("anchor",) matches the empty string
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "a": 7}
_OCTAL = "01234567"


def _octal(ch: str) -> bool:
    return ch != "" and ch in _OCTAL


class _Parser:
    def __init__(self, pattern: str, unicode: bool):
        self.p, self.i, self.unicode = pattern, 0, unicode

    def fail(self, what: str, at: int | None = None):
        at = self.i if at is None else at
        raise InputError(f"regex {self.p!r}: {what} (at position {at})")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.p[j] if j < len(self.p) else ""

    def parse(self):
        node = self.alternation()
        if self.i < len(self.p):  # only a ')' stops the top-level alternation early
            self.fail("unbalanced parenthesis ')'")
        return node

    def alternation(self):
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self):
        items = []
        while self.i < len(self.p) and self.peek() not in "|)":
            items.append(self.quantified(self.atom()))
        return items[0] if len(items) == 1 else ("cat", items)

    # quantifiers ------------------------------------------------------------------------
    def quantifier(self):
        """(lo, hi) of a quantifier at the cursor, consumed; None (nothing consumed) if none.
        A '{' that does not form ``{m}``, ``{m,}``, ``{,n}`` or ``{m,n}`` is a literal, as in re."""
        c = self.peek()
        if c in ("*", "+", "?") and c:
            self.i += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if c != "{":
            return None
        m = re.match(r"\{(\d*)(,(\d*))?\}", self.p[self.i:])
        if not m or m.group(0) == "{}":
            return None
        lo = int(m.group(1)) if m.group(1) else 0
        if m.group(2):
            hi = int(m.group(3)) if m.group(3) else None
        else:
            hi = lo
        if hi is not None and hi < lo:
            self.fail(f"min repeat greater than max repeat in {m.group(0)}")
        self.i += len(m.group(0))
        return lo, hi

    def quantified(self, atom):
        start = self.i
        q = self.quantifier()
        if q is None:
            return atom
        if atom[0] == "anchor":
            self.fail("nothing to repeat (an anchor cannot be repeated)", start)
        if self.peek() == "?":  # lazy: the same language under full-match semantics
            self.i += 1
        elif self.peek() == "+":
            self.fail("possessive quantifiers (*+, ++, ?+, {m,n}+) are not supported")
        here = self.i
        if self.quantifier() is not None:
            self.fail("multiple repeat", here)
        return ("rep", atom, *q)

    # atoms ------------------------------------------------------------------------------
    def atom(self):
        c = self.peek()
        if c == "(":
            return self.group()
        if c == "[":
            return self.char_class()
        if c == ".":
            self.i += 1
            return ("set", _ANY_BUT_NEWLINE)
        if c == "^":
            if self.i != 0:
                self.fail("the anchor '^' is only supported at the start of the pattern")
            self.i += 1
            return ("anchor",)
        if c == "$":
            if self.i != len(self.p) - 1:
                self.fail("the anchor '$' is only supported at the end of the pattern")
            self.i += 1
            return ("anchor",)
        if c == "\\":
            item = self.escape(in_class=False)
            if isinstance(item, tuple):
                return item
            return ("set", self.class_set([], [item]) if isinstance(item, str) else _normalize([(item, item)]))
        if c in "*+?":
            self.fail("nothing to repeat")
        if c == "{":
            here = self.i
            if self.quantifier() is not None:
                self.fail("nothing to repeat", here)
        self.i += 1
        return ("set", _normalize([(ord(c), ord(c))]))

    def group(self):
        start = self.i
        self.i += 1
        if self.peek() == "?":
            kind = self.p[self.i + 1: self.i + 3]
            if kind.startswith(":"):
                self.i += 2
            elif kind == "P<":
                end = self.p.find(">", self.i)
                if end < 0 or not self.p[self.i + 3: end].isidentifier():
                    self.fail("bad group name in (?P<name>...)")
                self.i = end + 1
            elif kind == "P=":
                self.fail("backreferences (?P=name) are not supported")
            elif kind[:1] in ("=", "!") or kind in ("<=", "<!"):
                self.fail("lookaround assertions (?=, ?!, ?<=, ?<!) are not supported")
            elif kind.startswith("#"):
                end = self.p.find(")", self.i)
                if end < 0:
                    self.fail("missing ), unterminated comment", start)
                self.i = end + 1
                return ("anchor",)
            elif kind.startswith(">"):
                self.fail("atomic groups (?>...) are not supported")
            elif kind.startswith("("):
                self.fail("conditional groups (?(...)...) are not supported")
            else:
                self.fail("inline flags and other (?...) extensions are not supported")
        node = self.alternation()
        if self.peek() != ")":
            self.fail("missing ), unterminated subpattern", start)
        self.i += 1
        return node

    def escape(self, in_class: bool):
        """After a backslash: a code point (int), a shorthand letter (str, e.g. 'd'), or an
        anchor node (tuple)."""
        start = self.i
        self.i += 1
        c = self.peek()
        if not c:
            self.fail("bad escape (end of pattern)", start)
        self.i += 1
        if c in "dDwWsS":
            return c
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c]
        if c == "b":
            if in_class:
                return 8
            self.fail("word boundaries (\\b) are not supported", start)
        if c == "B":
            self.fail("word boundaries (\\B) are not supported", start)
        if c == "A" and not in_class and start == 0:
            return ("anchor",)
        if c == "Z" and not in_class and self.i == len(self.p):
            return ("anchor",)
        if c in "AZ":
            self.fail(f"the anchor \\{c} is only supported at the {'start' if c == 'A' else 'end'} "
                      "of the pattern", start)
        if c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.p[self.i: self.i + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                self.fail(f"bad escape \\{c}{digits}: expected {width} hex digits", start)
            self.i += width
            value = int(digits, 16)
            if value > MAX_CODEPOINT:
                self.fail(f"bad escape \\{c}{digits}: not a code point", start)
            return value
        if c == "N":
            m = re.match(r"\{([^}]*)\}", self.p[self.i:])
            if not m:
                self.fail("bad escape \\N: expected \\N{NAME}", start)
            try:
                value = ord(unicodedata.lookup(m.group(1)))
            except KeyError:
                self.fail(f"undefined character name {m.group(1)!r}", start)
            self.i += len(m.group(0))
            return value
        if c in _OCTAL and (in_class or c == "0" or (_octal(self.peek()) and _octal(self.peek(1)))):
            digits = c
            while len(digits) < 3 and _octal(self.peek()):
                digits += self.peek()
                self.i += 1
            value = int(digits, 8)
            if value > 0o377:
                self.fail(f"octal escape value \\{digits} outside of range 0-0o377", start)
            return value
        if c.isdigit():
            if in_class:
                self.fail(f"bad escape \\{c}", start)
            self.fail(f"backreferences (\\{c}) are not supported", start)
        if c.isascii() and c.isalnum():
            self.fail(f"bad escape \\{c}", start)
        return ord(c)

    def char_class(self):
        start = self.i
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges, shorthands, first = [], [], True
        while True:
            if self.i >= len(self.p):
                self.fail("unterminated character set", start)
            if self.peek() == "]" and not first:
                self.i += 1
                break
            first = False
            lo = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self.class_atom()
                if isinstance(lo, str) or isinstance(hi, str):
                    self.fail("bad character range (a shorthand like \\d cannot be a range end)", start)
                if hi < lo:
                    self.fail(f"bad character range {chr(lo)!r}-{chr(hi)!r}", start)
                ranges.append((lo, hi))
            elif isinstance(lo, str):
                shorthands.append(lo)
            else:
                ranges.append((lo, lo))
        return ("set", self.class_set(ranges, shorthands, negate))

    def class_atom(self):
        if self.peek() == "\\":
            item = self.escape(in_class=True)
            return item
        c = self.peek()
        self.i += 1
        return ord(c)

    def class_set(self, ranges, shorthands, negate=False):
        """Code points of a class. Without ``unicode``, what the shorthands contribute is
        limited to ASCII (a subset of re's set: sound, and exact on ASCII text)."""
        short = [r for s in shorthands for r in _shorthand(s)]
        if negate:
            out = _complement(_normalize([*ranges, *short]))
            return _ascii(out) if shorthands and not self.unicode else out
        if not self.unicode:
            short = _ascii(_normalize(short))
        return _normalize([*ranges, *short])


# ---- UTF-8: a code-point range as sequences of byte ranges -----------------------------------
def _utf8_sequences(lo: int, hi: int):
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


# ---- Thompson NFA over bytes -----------------------------------------------------------------
class _NFA:
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
                for seq in _utf8_sequences(lo, hi):
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
        raise AssertionError(kind)


# ---- DFAs over bytes -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ByteDFA:
    """A DFA over bytes. Bytes are first mapped to classes (bytes no transition tells apart).

    trans: [S, K] int32 next state per (state, byte class); byte_class: [256] int32;
    accepting: [S] bool; start, dead: state ids (``dead`` accepts nothing and loops).
    """

    trans: np.ndarray
    byte_class: np.ndarray
    accepting: np.ndarray
    start: int
    dead: int

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    def step(self, state: int, byte: int) -> int:
        return int(self.trans[state, self.byte_class[byte]])

    def run(self, data: bytes, state: int | None = None) -> int:
        """State after reading ``data`` (from ``start`` unless given)."""
        state = self.start if state is None else state
        for b in data:
            state = int(self.trans[state, self.byte_class[b]])
        return state

    def matches(self, text) -> bool:
        """Whether the whole of ``text`` (str: its UTF-8 bytes) is in the language."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        return bool(self.accepting[self.run(data)])

    def live(self) -> np.ndarray:
        """[S] bool: states from which some byte string reaches an accepting state."""
        live = self.accepting.copy()
        while True:
            grown = live | live[self.trans].any(1)
            if (grown == live).all():
                return live
            live = grown

    def __repr__(self) -> str:
        return f"ByteDFA({self.num_states} states, {self.trans.shape[1]} byte classes)"


def _determinize(nfa: _NFA, start: int, accept: int, max_states: int):
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


def minimize(trans: np.ndarray, byte_class: np.ndarray, accepting: np.ndarray, start: int, dead: int) -> ByteDFA:
    """Moore's partition refinement, then merge byte classes with identical columns."""
    block = accepting.astype(np.int64)
    count = len(np.unique(block))
    while True:
        signature = np.concatenate([block[:, None], block[trans]], axis=1)
        _, block = np.unique(signature, axis=0, return_inverse=True)
        block = block.reshape(-1)
        new_count = int(block.max()) + 1
        if new_count == count:
            break
        count = new_count
    # one representative per block
    rep = np.zeros(count, np.int64)
    rep[block[::-1]] = np.arange(len(block))[::-1]
    small = block[trans[rep]].astype(np.int32)
    # byte classes that no state tells apart become one
    _, column = np.unique(small.T, axis=0, return_inverse=True)
    column = column.reshape(-1)
    merged = np.zeros((count, int(column.max()) + 1), np.int32)
    merged[:, column] = small
    return ByteDFA(trans=merged, byte_class=column[byte_class].astype(np.int32),
                   accepting=accepting[rep].copy(), start=int(block[start]), dead=int(block[dead]))


def compile_regex(pattern: str, *, unicode: bool = False, max_states: int = 10_000) -> ByteDFA:
    """Compile ``pattern`` (Python ``re`` syntax, full-match semantics) to a minimal byte DFA.

    >>> dfa = compile_regex(r"(ab|c){2}")
    >>> [dfa.matches(t) for t in ("abc", "cab", "ab", "abcc")]
    [True, True, False, False]
    """
    if not isinstance(pattern, str):
        raise InputError(f"the regex must be a str, got {type(pattern).__name__}")
    if isinstance(max_states, bool) or not isinstance(max_states, int) or max_states < 2:
        raise InputError(f"max_states must be an integer >= 2, got {max_states!r}")
    tree = _Parser(pattern, bool(unicode)).parse()
    nfa = _NFA(pattern)
    start, accept = nfa.build(tree)
    trans, byte_class, accepting = _determinize(nfa, start, accept, max_states)
    return minimize(trans, byte_class, accepting, start=1, dead=0)


# ---- token level -----------------------------------------------------------------------------
def vocabulary(tokenizer_or_lm) -> tuple[list[bytes], int, int]:
    """(token_bytes padded to the vocabulary size, vocab_size, eos_id) of an LM or tokenizer."""
    if hasattr(tokenizer_or_lm, "tokenizer") and hasattr(tokenizer_or_lm, "vocab_size"):
        tok, vocab_size, eos_id = tokenizer_or_lm.tokenizer, tokenizer_or_lm.vocab_size, tokenizer_or_lm.eos_id
    elif hasattr(tokenizer_or_lm, "token_bytes"):
        tok = tokenizer_or_lm
        vocab_size = getattr(tok, "vocab_size", None) or len(tok.token_bytes)
        eos_id = getattr(tok, "eos_id", None)
    else:
        raise InputError("give a models.LanguageModel or a tokenizer with token_bytes (e.g. lm.tokenizer), "
                         f"got {type(tokenizer_or_lm).__name__}")
    token_bytes = [bytes(b) for b in tok.token_bytes]
    vocab_size = int(vocab_size)
    if eos_id is None or not 0 <= int(eos_id) < vocab_size:
        raise InputError(f"the tokenizer needs an EOS id in [0, {vocab_size}), got {eos_id!r}")
    if len(token_bytes) > vocab_size:
        raise InputError(f"the tokenizer has {len(token_bytes)} tokens but the vocabulary only {vocab_size}")
    return token_bytes + [b""] * (vocab_size - len(token_bytes)), vocab_size, int(eos_id)


class _TokenRunner:
    """Runs every usable token's bytes through a byte DFA from many states at once.

    Tokens are sorted by length, longest first, so that at byte position j the tokens still
    running are a prefix of the sorted list: the work is (states) x (total token bytes).
    """

    def __init__(self, dfa: ByteDFA, token_bytes, usable: np.ndarray):
        lengths = np.array([len(token_bytes[i]) for i in usable], np.int64)
        order = np.argsort(-lengths, kind="stable")
        self.tokens = usable[order]  # token ids in run order
        lengths = lengths[order]
        width = int(lengths.max()) if len(lengths) else 0
        classes = np.zeros((len(self.tokens), width), np.int32)
        for k, t in enumerate(self.tokens):
            data = np.frombuffer(token_bytes[t], np.uint8)
            classes[k, : len(data)] = dfa.byte_class[data]
        self.classes = classes
        self.running = [int((lengths > j).sum()) for j in range(width)]
        self.trans = dfa.trans

    def run(self, states: np.ndarray, hit: np.ndarray | None = None):
        """End states [len(states), T] (and, given ``hit`` [S] bool, whether a hit state was
        entered after any byte) for the tokens in ``self.tokens`` order."""
        cur = np.repeat(np.asarray(states, np.int32)[:, None], len(self.tokens), axis=1)
        seen = np.zeros(cur.shape, bool) if hit is not None else None
        for j, a in enumerate(self.running):
            nxt = self.trans[cur[:, :a], self.classes[None, :a, j]]
            cur[:, :a] = nxt
            if seen is not None:
                seen[:, :a] |= hit[nxt]
        return cur, seen


class TokenDFA:
    """A byte DFA lifted to tokens: ``table[state, token] -> next state``.

    Only states reachable at token boundaries are kept, and every state from which no token
    sequence reaches an accepting state is merged into one ``dead`` state (so "live" means
    "can still finish by tokens", not only by bytes). EOS leaves the state unchanged; tokens
    with no bytes (specials, padding rows) lead to ``dead``.

    table [S, V] int32; accepting [S] bool; live [S] bool; allowed [S, V] bool: the token is
    possible from the state (its next state is live; the EOS column: the state accepts);
    byte_state [S]: the byte-DFA state each state stands for (``dead``: the byte DFA's dead).

    >>> from genppl import models
    >>> tok = models.CharTokenizer("$ab", eos_id=0)
    >>> tdfa = TokenDFA.build(compile_regex("ab*"), tok.token_bytes, eos_id=0)
    >>> tdfa.allowed[tdfa.start].tolist()   # EOS no, 'a' yes, 'b' no
    [False, True, False]
    """

    def __init__(self, table, accepting, live, start: int, dead: int, eos_id: int, byte_state=None):
        self.table = table
        self.byte_state = byte_state
        self.accepting = accepting
        self.live = live
        self.start, self.dead, self.eos_id = int(start), int(dead), int(eos_id)
        allowed = live[table]
        allowed[:, eos_id] = accepting
        self.allowed = allowed

    @property
    def num_states(self) -> int:
        return int(self.table.shape[0])

    @classmethod
    def build(cls, dfa: ByteDFA, token_bytes, eos_id: int, vocab_size: int | None = None,
              max_entries: int = 200_000_000) -> "TokenDFA":
        """Lift ``dfa`` to the vocabulary ``token_bytes`` (bytes of each token id).

        max_entries bounds states x vocabulary (the table's size) with a clear error.
        """
        vocab_size = len(token_bytes) if vocab_size is None else int(vocab_size)
        token_bytes = list(token_bytes) + [b""] * (vocab_size - len(token_bytes))
        usable = np.array([i for i, b in enumerate(token_bytes) if b and i != eos_id], np.int64)
        runner = _TokenRunner(dfa, token_bytes, usable)

        # breadth-first over DFA states reachable at token boundaries, in batches
        order = [dfa.dead] + ([dfa.start] if dfa.start != dfa.dead else [])
        found = set(order)
        rows = {dfa.dead: np.full(len(usable), dfa.dead, np.int32)}  # dead stays dead
        frontier = order[1:]
        batch = max(1, 4_000_000 // max(1, len(usable)))
        while frontier:
            todo, frontier = frontier[:batch], frontier[batch:]
            ends, _ = runner.run(np.array(todo))
            for s, row in zip(todo, ends):
                rows[s] = row
            for s in np.unique(ends):
                if int(s) not in found:
                    found.add(int(s))
                    order.append(int(s))
                    frontier.append(int(s))
            if len(order) * vocab_size > max_entries:
                raise InputError(f"the token table would exceed {max_entries} entries ({len(order)}+ states x "
                                 f"{vocab_size} tokens): simplify the constraint")

        # compact ids over the reachable states
        remap = np.full(dfa.num_states, -1, np.int64)
        remap[order] = np.arange(len(order))
        num = len(order)
        table = np.zeros((num, vocab_size), np.int32)  # column default: dead (id 0)
        for s in order:
            table[remap[s], runner.tokens] = remap[rows[s]]
        table[:, eos_id] = np.arange(num)
        accepting = dfa.accepting[order]

        live = _reaches(table, accepting)
        live[0] = False
        # merge every non-live state into the dead state 0, keep live ones in order
        new_id = np.zeros(num, np.int32)
        keep = np.flatnonzero(live)
        new_id[keep] = np.arange(1, len(keep) + 1)
        table = new_id[table[np.concatenate([[0], keep])]]
        table[0] = 0
        start = int(new_id[remap[dfa.start]])
        accepting = np.concatenate([[False], accepting[keep]])
        live = np.concatenate([[False], np.ones(len(keep), bool)])
        byte_state = np.concatenate([[dfa.dead], np.asarray(order)[keep]]).astype(np.int32)
        return cls(table, accepting, live, start=start, dead=0, eos_id=eos_id, byte_state=byte_state)

    def run(self, tokens, state: int | None = None) -> int:
        state = self.start if state is None else state
        for t in tokens:
            state = int(self.table[state, int(t)])
        return state

    def __repr__(self) -> str:
        return f"TokenDFA({self.num_states} states x {self.table.shape[1]} tokens)"


def _reaches(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """[S] bool: states from which a token path reaches an accepting state (backward search
    over the distinct successor pairs)."""
    num, vocab = table.shape
    preds: list[set] = [set() for _ in range(num)]
    chunk = max(1, 4_000_000 // vocab)
    for lo in range(0, num, chunk):
        block = table[lo: lo + chunk]
        for k, row in enumerate(block):
            marks = np.zeros(num, bool)
            marks[row] = True
            for t in np.flatnonzero(marks):
                preds[t].add(lo + k)
    live = accepting.copy()
    stack = list(np.flatnonzero(live))
    while stack:
        for p in preds[stack.pop()]:
            if not live[p]:
                live[p] = True
                stack.append(p)
    return live


# ---- the potential ---------------------------------------------------------------------------
class DFAPotential(Potential):
    """A hard token-level constraint from a :class:`TokenDFA`: per particle a DFA state [n].

    ``logw_next`` is one gather (0 where the token keeps the state live, -inf otherwise; the
    EOS column is 0 iff the state accepts); a sequence cut at the length cap must be accepting.
    """

    token_level = True

    def __init__(self, token_dfa: TokenDFA):
        self.token_dfa = token_dfa
        # the tables are compile-time constants of every program using them: keep them small
        small = token_dfa.num_states < 2**15
        self._table = jnp.asarray(token_dfa.table.astype(np.int16) if small else token_dfa.table)
        self._allowed = jnp.asarray(token_dfa.allowed)
        self._accepting = jnp.asarray(token_dfa.accepting)

    def init(self, lm_state):
        return jnp.full(lm_state.length.shape, self.token_dfa.start, jnp.int32)

    def logw_next(self, pstate, lm_state):
        allowed = self._allowed[pstate]
        vocab = lm_state.logits.shape[-1]
        if allowed.shape[1] != vocab:  # static shapes: a tokenizer smaller than the LM's rows
            if allowed.shape[1] > vocab:
                raise InputError(f"the constraint was built for {allowed.shape[1]} tokens but the LM has {vocab}")
            allowed = jnp.pad(allowed, ((0, 0), (0, vocab - allowed.shape[1])))
        return jnp.where(allowed, 0.0, -jnp.inf).astype(jnp.float32)

    def update(self, pstate, lm_state, token):
        size = self._table.shape[1]
        nxt = self._table[pstate, jnp.minimum(token, size - 1)]
        return jnp.where(token < size, nxt, self.token_dfa.dead).astype(jnp.int32)

    def logw_cap(self, pstate, lm_state):
        return jnp.where(self._accepting[pstate], 0.0, -jnp.inf).astype(jnp.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.token_dfa.num_states} states)"


class Regex(DFAPotential):
    """The continuation must match ``pattern`` in full (``re.fullmatch`` semantics).

    tokenizer_or_lm: a :class:`models.LanguageModel` (its tokenizer, vocabulary and EOS) or a
    tokenizer with ``token_bytes`` and ``eos_id``. ``unicode``: exact Unicode ``\\d \\w \\s``
    (see the module docstring); ``max_states`` bounds the byte DFA.

    >>> import jax
    >>> from genppl import models, ppl
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)   # tokens "$abcd"
    >>> program = ppl.Program(lm, [1], max_new_tokens=4, potential=ppl.Regex("(ab)+c?", lm))
    >>> state = program.init(4)
    >>> for k in range(4):
    ...     state, logw = program.step(jax.random.key(k), state)
    >>> all(t in ("ab", "abc", "abab") for t in program.finished_text(state))
    True
    """

    def __init__(self, pattern: str, tokenizer_or_lm, *, unicode: bool = False, max_states: int = 10_000):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        self.pattern = pattern
        self.byte_dfa = compile_regex(pattern, unicode=unicode, max_states=max_states)
        super().__init__(TokenDFA.build(self.byte_dfa, token_bytes, eos_id, vocab_size))

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r}, {self.token_dfa.num_states} states)"
