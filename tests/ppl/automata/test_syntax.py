"""The regex parser: syntax trees, and bad or unsupported patterns refused with a message
that says what (the byte DFA against Python's ``re`` is in test_nfa.py)."""

import re

import pytest

from genppl.models.interface import InputError
from genppl.ppl.automata import compile_regex, parse


@pytest.mark.parametrize("pattern, says", [
    ("(", "unterminated subpattern"), ("a)", "unbalanced parenthesis"), ("[a", "unterminated character set"),
    ("*a", "nothing to repeat"), ("a**", "multiple repeat"), ("a{3,1}", "min repeat greater"),
    (r"(a)\1", "backreferences"), ("(?P<n>a)(?P=n)", "backreferences"), ("(?=a)a", "lookaround"),
    ("(?<!a)b", "lookaround"), (r"\bfoo", "word boundaries"), ("a^b", "'^'"), ("a$b", "'$'"),
    ("(?i)a", "inline flags"), ("a*+", "possessive"), ("(?>a)", "atomic"), (r"\q", "bad escape"),
    ("[z-a]", "bad character range"), (r"[\d-z]", "bad character range"), ("\\", "bad escape"),
    (r"\N{NO SUCH NAME}", "undefined character name"), (r"\x4", "hex digits"), (r"\777", "octal"),
])
def test_unsupported_or_invalid_patterns_say_what(pattern, says):
    with pytest.raises(InputError, match=re.escape(says)):
        compile_regex(pattern)
    with pytest.raises(InputError, match=re.escape(says)):
        parse(pattern)


def test_a_pattern_must_be_a_str():
    with pytest.raises(InputError, match="must be a str"):
        compile_regex(b"abc")
    with pytest.raises(InputError, match="must be a str"):
        parse(b"abc")


def test_syntax_trees():
    a, b, c = (("set", ((ord(x), ord(x)),)) for x in "abc")
    assert parse("a|bc") == ("alt", [a, ("cat", [b, c])])
    assert parse("a{2,}") == ("rep", a, 2, None)
    assert parse("(?:a)*?") == ("rep", a, 0, None)      # lazy: the same language
    assert parse("^a$") == ("cat", [("anchor",), a, ("anchor",)])
    assert parse("[a-c]") == ("set", ((ord("a"), ord("c")),))
    assert parse("a{") == ("cat", [a, ("set", ((ord("{"), ord("{")),))])   # a literal '{', as in re
    dot = parse(".")[1]
    assert (10, 10) not in dot and dot[0] == (0, 9)     # any character but a newline
    assert (0xD800, 0xDFFF) not in dot and all(not lo <= 0xD800 <= hi for lo, hi in dot)  # no surrogates


def test_shorthands_are_ascii_unless_unicode():
    assert parse(r"\d") == ("set", ((ord("0"), ord("9")),))
    wide = parse(r"\d", unicode=True)[1]
    assert (ord("0"), ord("9")) in wide and any(lo <= ord("٣") <= hi for lo, hi in wide)
