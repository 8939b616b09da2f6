"""Regular-expression syntax: a pattern (Python ``re`` syntax) parsed to a tree over code points.

Nodes of the tree: ``("set", ranges)`` one character out of a set of code points, given as
sorted, disjoint, non-adjacent ``(lo, hi)`` ranges; ``("cat", [nodes])`` concatenation;
``("alt", [nodes])`` alternation; ``("rep", node, lo, hi)`` between ``lo`` and ``hi`` copies
(``hi`` None: unbounded); ``("anchor",)`` the empty string (``^``, ``$``, ``\\A``, ``\\Z`` at
the ends of the pattern, comments).

Supported: literals and escapes (``\\n \\t \\xhh \\uhhhh \\N{...}`` ...), ``.`` (any character
but a newline), classes ``[a-z_]`` and ``[^...]``, ``\\d \\w \\s \\D \\W \\S``, groups ``( )``,
``(?: )``, ``(?P<name> )``, ``|``, ``* + ?``, ``{m} {m,} {,n} {m,n}`` (lazy forms too: under
full-match semantics the language is the same), a leading ``^``/``\\A`` and a trailing
``$``/``\\Z``. Backreferences, lookaround, word boundaries, inline flags and possessive or
atomic forms raise :class:`genppl.models.interface.InputError`.

Unicode: ``.``, ``[^...]`` and literal classes are exact over all of Unicode. The shorthands
``\\d \\w \\s`` (and their negations, and any class that uses them) contribute ASCII characters
only unless ``unicode=True``, where they follow ``re`` exactly (a much larger set). Either way
every character the set admits is one ``re`` admits; by default the two agree on ASCII.

>>> parse("a|bc")
('alt', [('set', ((97, 97),)), ('cat', [('set', ((98, 98),)), ('set', ((99, 99),))])])
"""

from __future__ import annotations

import functools
import re
import unicodedata

from genppl.models.interface import InputError

__all__ = ["MAX_CODEPOINT", "SURROGATES", "minus", "normalize", "parse"]

MAX_CODEPOINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)  # not encodable in UTF-8: never in decoded text


# ---- code-point sets: sorted, disjoint, non-adjacent (lo, hi) ranges -------------------------
def normalize(ranges) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, non-adjacent (lo, hi) ranges covering ``ranges``, surrogates removed."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return minus(tuple((lo, hi) for lo, hi in out), SURROGATES)


def minus(ranges, cut):
    """``ranges`` without the code points of the one range ``cut`` = (a, b)."""
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
    return normalize(out)


def _ascii(ranges):
    return tuple((lo, min(hi, 0x7F)) for lo, hi in ranges if lo <= 0x7F)


@functools.cache
def _unicode_shorthand(letter: str):
    """Exact code-point set of ``\\d``, ``\\w`` or ``\\s`` (lower case) as Python's ``re``
    sees it, found by running ``re`` over every code point once."""
    text = "".join(map(chr, range(SURROGATES[0]))) + "".join(map(chr, range(SURROGATES[1] + 1, MAX_CODEPOINT + 1)))
    gap = SURROGATES[1] - SURROGATES[0] + 1

    def cp(i):  # index in ``text`` -> code point
        return i if i < SURROGATES[0] else i + gap

    ranges = []
    for m in re.finditer(rf"\{letter}+", text):
        lo, hi = m.start(), m.end() - 1
        if lo < SURROGATES[0] <= hi:  # a run across the surrogate gap
            ranges += [(lo, SURROGATES[0] - 1), (cp(SURROGATES[0]), cp(hi))]
        else:
            ranges.append((cp(lo), cp(hi)))
    return normalize(ranges)


def _shorthand(letter: str):
    exact = _unicode_shorthand(letter.lower())
    return exact if letter.islower() else _complement(exact)


_ANY_BUT_NEWLINE = normalize([(0, 9), (11, MAX_CODEPOINT)])


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
            return ("set", self.class_set([], [item]) if isinstance(item, str) else normalize([(item, item)]))
        if c in "*+?":
            self.fail("nothing to repeat")
        if c == "{":
            here = self.i
            if self.quantifier() is not None:
                self.fail("nothing to repeat", here)
        self.i += 1
        return ("set", normalize([(ord(c), ord(c))]))

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
            out = _complement(normalize([*ranges, *short]))
            return _ascii(out) if shorthands and not self.unicode else out
        if not self.unicode:
            short = _ascii(normalize(short))
        return normalize([*ranges, *short])



def parse(pattern: str, unicode: bool = False):
    """The syntax tree of ``pattern`` (see the module docstring); bad or unsupported syntax
    raises :class:`InputError` naming the problem and its position."""
    if not isinstance(pattern, str):
        raise InputError(f"the regex must be a str, got {type(pattern).__name__}")
    return _Parser(pattern, bool(unicode)).parse()
