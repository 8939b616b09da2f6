"""Regex to byte DFA: the DFA against Python's ``re`` (on every short text, on random
patterns, with Unicode shorthands), UTF-8 byte-range sequences, and size limits."""

import itertools
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genppl.models.interface import InputError
from genppl.ppl.automata import compile_regex, utf8_sequences


def assert_agrees_with_re(pattern, texts, unicode=False):
    """Equal to re.fullmatch on ASCII text (on every text with ``unicode``); on other text,
    accepted by the DFA implies matched by re (the constraint is never unsound)."""
    dfa = compile_regex(pattern, unicode=unicode)
    for text in texts:
        want, got = bool(re.fullmatch(pattern, text)), dfa.matches(text)
        if unicode or text.isascii():
            assert got == want, (pattern, text, got, want)
        else:
            assert want or not got, (pattern, text, "accepted by the DFA, rejected by re")


PATTERNS = [
    r"[0-9]+ (apples|pears)", r"a(b|c)*d?", r"(ab|c){2}", r"\d{2}-\d{1,2}", r".*", r"a.b", r"[^a]*",
    r"x{2,4}y?", r"(a|b)*abb", r"\w+@\w+\.c", r"[\s\S]", r"[^\s\S]", r"é+", r"[à-ÿ]+", r"^a$",
    r"a{,2}", r"a{", r"a{}", r"a{x}", r"\x61\u00e9\N{DIGIT ONE}", r"(?:a|)b", r"\D\W\S", r"[]a]+",
    r"[^]a]", r"[a-]", r"[\w.-]+", r"\.\\\n", r"(?P<x>a|bc)+", r"a*?b+?c??", r"(a(?#note)|b)c",
    r"[\d\s]*", r"[^\d\n]+", r"\0\012", r"[\1]", r"\AaZ\Z", r"|a", r"()", r"(a|b|)+", r"a{0}b",
    r"[^é]", r"\S+\s\S+", r"(?:[a-c]{2})*",
]
ALPHABET = ["a", "b", "c", "0", "1", " ", "\n", "é", ".", "-", "\\", "@", "\x00", "\n", "Z", "٣", "中", "_", "à"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_byte_dfa_agrees_with_re_on_every_short_text(pattern):
    texts = ["".join(t) for n in range(4) for t in itertools.product(ALPHABET[:16], repeat=n)]
    texts += ["é", "éé", "àà", "a٣", "中", "12 apples", "aé1", "x@y.c", "ab\nc"]
    assert_agrees_with_re(pattern, texts)


@pytest.mark.parametrize("pattern", [r"\w+", r"\d\D", r"[\s\S]", r"[^\w\d]+", r"\W?\S"])
def test_unicode_shorthands_follow_re_exactly(pattern):
    texts = ["".join(t) for n in range(3) for t in itertools.product("a1 _é٣中\u00a0\u2003!\n\x1c", repeat=n)]
    assert_agrees_with_re(pattern, texts, unicode=True)


def regexes():
    """Random patterns in the supported syntax."""
    atoms = st.sampled_from(["a", "b", "c", ".", r"\.", r"\d", r"\w", r"\s", r"\D", r"\W", r"\S", "[ab]",
                             "[^a]", "[a-c0]", "[^\\d ]", "é", "[éa]", "[^é]", " "])

    def extend(inner):
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda r: f"({r})"),
            inner.map(lambda r: f"(?:{r})*"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,}", "{,1}", "*?"]))
            .map(lambda t: f"({t[0]}){t[1]}"),
        )

    return st.recursive(atoms, extend, max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=regexes(), texts=st.lists(st.text(alphabet="abc.1 é٣\n_", max_size=6), min_size=20, max_size=40))
def test_random_patterns_agree_with_re(pattern, texts):
    assert_agrees_with_re(pattern, texts)


def test_utf8_sequences_encode_exactly_their_range():
    rng = np.random.default_rng(0)
    random_ranges = [(int(a), int(a) + int(b))
                     for a, b in zip(rng.integers(0, 0x100000, 30), rng.integers(0, 5000, 30))]
    for lo, hi in [(0, 0x7F), (0x70, 0x90), (0x7FF, 0x800), (0x80, 0x10FFFF), (0xE000, 0xFFFF), (0xFFF0, 0x10010),
                   *random_ranges]:
        if lo <= 0xDFFF and hi >= 0xD800:
            continue
        seqs = utf8_sequences(lo, hi)
        probe = {*range(max(0, lo - 3), min(lo + 70, 0x110000)), *range(max(0, hi - 70), min(hi + 4, 0x110000)),
                 *rng.integers(max(0, lo - 100), min(hi + 100, 0x110000), 200).tolist()}
        for cp in probe - set(range(0xD800, 0xE000)):
            data = chr(cp).encode()
            inside = any(len(s) == len(data) and all(a <= x <= b for (a, b), x in zip(s, data)) for s in seqs)
            assert inside == (lo <= cp <= hi), (hex(lo), hex(hi), hex(cp))


def test_state_explosion_is_refused_clearly():
    with pytest.raises(InputError, match="more than 300 DFA states"):
        compile_regex("(a|b)*a(a|b){10}", max_states=300)
    with pytest.raises(InputError, match="too large"):
        compile_regex("(a{1000}){1000}")
    with pytest.raises(InputError, match="must be a str"):
        compile_regex(b"abc")
    with pytest.raises(InputError, match="max_states"):
        compile_regex("a", max_states=1)
