"""Regex constraints: the byte DFA against Python's ``re``, the token table against the byte
DFA, and the constrained law under the locally optimal proposal against exact enumeration."""

import itertools
import math
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genppl import models
from genppl import ppl
from genppl.models.interface import InputError
from genppl.ppl.regex import TokenDFA, _utf8_sequences, compile_regex
from tests.checkpoints import save_tokenizer
from tests.helpers import assert_matches_law

from .walk import walk


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


# ---- the byte DFA against re ---------------------------------------------------------------
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
    random_ranges = [(int(a), int(a) + int(b)) for a, b in zip(rng.integers(0, 0x100000, 30), rng.integers(0, 5000, 30))]
    for lo, hi in [(0, 0x7F), (0x70, 0x90), (0x7FF, 0x800), (0x80, 0x10FFFF), (0xE000, 0xFFFF), (0xFFF0, 0x10010),
                   *random_ranges]:
        if lo <= 0xDFFF and hi >= 0xD800:
            continue
        seqs = _utf8_sequences(lo, hi)
        probe = {*range(max(0, lo - 3), min(lo + 70, 0x110000)), *range(max(0, hi - 70), min(hi + 4, 0x110000)),
                 *rng.integers(max(0, lo - 100), min(hi + 100, 0x110000), 200).tolist()}
        for cp in probe - set(range(0xD800, 0xE000)):
            data = chr(cp).encode()
            inside = any(len(s) == len(data) and all(a <= x <= b for (a, b), x in zip(s, data)) for s in seqs)
            assert inside == (lo <= cp <= hi), (hex(lo), hex(hi), hex(cp))


# ---- bad input -----------------------------------------------------------------------------
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


def test_state_explosion_is_refused_clearly():
    with pytest.raises(InputError, match="more than 300 DFA states"):
        compile_regex("(a|b)*a(a|b){10}", max_states=300)
    with pytest.raises(InputError, match="too large"):
        compile_regex("(a{1000}){1000}")
    with pytest.raises(InputError, match="must be a str"):
        compile_regex(b"abc")


# ---- token tables --------------------------------------------------------------------------
def check_table(tdfa: TokenDFA, dfa, token_bytes, eos_id):
    """Every (state, token) entry against running the token's bytes through the byte DFA."""
    live_bytes = {int(b): s for s, b in enumerate(tdfa.byte_state) if tdfa.live[s]}
    assert tdfa.byte_state[tdfa.dead] == dfa.dead and not tdfa.live[tdfa.dead]
    assert not tdfa.allowed[tdfa.dead].any()
    for s in np.flatnonzero(tdfa.live):
        assert tdfa.accepting[s] == dfa.accepting[tdfa.byte_state[s]]
        assert tdfa.allowed[s, eos_id] == tdfa.accepting[s] and tdfa.table[s, eos_id] == s
        for t, data in enumerate(token_bytes):
            if t == eos_id:
                continue
            end = dfa.run(data, int(tdfa.byte_state[s]))
            want = live_bytes.get(end, tdfa.dead) if data else tdfa.dead
            assert tdfa.table[s, t] == want, (s, t, data)
            assert tdfa.allowed[s, t] == (want != tdfa.dead)


TOY_VOCAB = [b"", b"a", b"b", b"ab", b"ba", b"bab", b"c", b"\xc3", b"\xa9", "é".encode(), "éa".encode(), b" ",
             b"1", b"12", b"", b"a\n"]


@pytest.mark.parametrize("pattern", [r"(ab)+c?", r"a(b|c)*", r"[^a]*", r"(é|b)a+", r".{2,3}", r"b*a b?", r"\d+"])
def test_token_table_agrees_with_byte_dfa(pattern):
    dfa = compile_regex(pattern)
    tdfa = TokenDFA.build(dfa, TOY_VOCAB, eos_id=0, vocab_size=len(TOY_VOCAB) + 3)
    assert tdfa.table.shape == (tdfa.num_states, len(TOY_VOCAB) + 3)
    assert not tdfa.allowed[:, len(TOY_VOCAB):].any(), "padding rows must be banned"
    assert not tdfa.allowed[:, 14].any(), "an empty (special) token must be banned"
    check_table(tdfa, dfa, TOY_VOCAB + [b""] * 3, 0)
    # token sequences: accepted iff their bytes match, as long as every prefix stayed allowed
    for n in range(4):
        for seq in itertools.product(range(1, len(TOY_VOCAB)), repeat=n):
            state, ok = tdfa.start, True
            for t in seq:
                ok &= bool(tdfa.allowed[state, t])
                state = int(tdfa.table[state, t])
            data = b"".join(TOY_VOCAB[t] for t in seq)
            if ok:
                assert tdfa.accepting[state] == dfa.matches(data)
            elif all(TOY_VOCAB[t] for t in seq):  # (empty tokens are banned whatever the bytes)
                assert not dfa.matches(data)


def test_liveness_is_by_tokens_not_bytes():
    # "ab" needs a token ending in "b" after "a"; this vocabulary only has "xb"
    tok = types.SimpleNamespace(token_bytes=[b"", b"a", b"xb", b"ab"], eos_id=0)
    regex = ppl.Regex("ab", tok)
    start = regex.token_dfa.start
    assert regex.token_dfa.allowed[start].tolist() == [False, False, False, True]


# ---- exactness on an enumerable model ------------------------------------------------------
V, CAP, EOS, PROMPT = 5, 5, 0, [1]  # tokens "$abcd"
PATTERN = r"a(b|c)*d?|ca?"


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(7), vocab_size=V, max_len=CAP, eos_id=EOS)


def text_of(lm, seq):
    return lm.tokenizer.decode([t for t in seq if t != EOS])


def test_regex_potential_telescopes_to_the_indicator(lm):
    seqs, _ = lm.enumerate(CAP)
    got = walk(ppl.Regex(PATTERN, lm), lm, seqs, PROMPT, CAP)
    want = [0.0 if re.fullmatch(PATTERN, text_of(lm, s)) else -math.inf for s in seqs]
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, want)


def live_prefix(text, alphabet="abcd", depth=3):
    """Brute force: some continuation of at most ``depth`` letters completes a match."""
    return any(re.fullmatch(PATTERN, text + "".join(w))
               for n in range(depth + 1) for w in itertools.product(alphabet, repeat=n))


def test_optimal_proposal_samples_the_constrained_law_with_exact_weights(lm):
    program = ppl.Program(lm, PROMPT, max_new_tokens=CAP, potential=ppl.Regex(PATTERN, lm))
    n = 4000

    @jax.jit
    def sweep(program, state, key):
        total = jnp.zeros((n,), jnp.float32)
        for k in range(CAP):
            state, logw = program.step(jax.random.fold_in(key, k), state)
            total = total + logw
        return state, total

    state, total = sweep(program, program.init(n), jax.random.key(0))
    assert bool(state.done.all())
    total = np.asarray(total, np.float64)
    samples = [tuple(s) for s in state.lm.generated()]
    texts = program.finished_text(state)

    # the exact proposal law q: p restricted to live next tokens (EOS: a full match), per prefix
    table = np.asarray(lm.table, np.float64)
    symbols = "$abcd"

    def log_q(seq):
        total, prefix = 0.0, []
        for t in seq:
            logp = table[lm.code(prefix)]
            ok = np.array([bool(re.fullmatch(PATTERN, text_of(lm, prefix))) if v == EOS
                           else live_prefix(text_of(lm, prefix) + symbols[v]) for v in range(V)])
            total += logp[t] - np.logaddexp.reduce(logp[ok])
            prefix.append(t)
        return total

    seqs, logp = lm.enumerate(CAP)
    support = [s for s in seqs if all(live_prefix(text_of(lm, s[:k])) for k in range(len(s) + 1))
               and (s[-1] != EOS or re.fullmatch(PATTERN, text_of(lm, s)))]
    q = np.exp([log_q(s) for s in support])
    np.testing.assert_allclose(q.sum(), 1.0, atol=1e-9)
    assert_matches_law(samples, support, q)

    # every particle that keeps weight matches; its weight is log p(x) + log phi(x) - log q(x)
    logp_of = dict(zip(seqs, logp))
    for seq, text, w in zip(samples, texts, total):
        if np.isfinite(w):
            assert re.fullmatch(PATTERN, text), text
            np.testing.assert_allclose(w, logp_of[seq] - log_q(seq), atol=2e-4)
        else:  # only a cut at the length cap can leave a non-matching text
            assert len(seq) == CAP and not re.fullmatch(PATTERN, text)


def test_an_unmatchable_regex_gives_minus_inf_and_no_nan(lm):
    for pattern in [r"[^\s\S]", "z+"]:  # the empty language; letters the vocabulary lacks
        regex = ppl.Regex(pattern, lm)
        assert regex.token_dfa.start == regex.token_dfa.dead
        program = ppl.Program(lm, PROMPT, max_new_tokens=CAP, potential=regex)
        state = program.init(6)
        logw_next = np.asarray(regex.logw_next(state.potential, state.lm))
        assert np.isneginf(logw_next).all()
        state, logw = program.step(jax.random.key(0), state)
        assert np.isneginf(np.asarray(logw)).all() and bool(state.done.all())
        assert not np.isnan(np.asarray(state.log_p)).any()


# ---- real tokenizers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe")
    save_tokenizer(path, vocab_size=320)  # 257 bytes and specials, then merges
    return models.Tokenizer.from_pretrained(path)


def test_byte_level_bpe_tokenizer(bpe):
    multi = [t for t, b in enumerate(bpe.token_bytes) if len(b) > 1]
    assert multi, "the tokenizer should have multi-byte tokens"
    for pattern in [r"[0-9]+ (apples|pears)", r"caf(é|e)s?", r"(the|a) [a-z]+\."]:
        regex = ppl.Regex(pattern, bpe)
        check_table(regex.token_dfa, regex.byte_dfa, bpe.token_bytes, bpe.eos_id)
    apples = ppl.Regex(r"[0-9]+ (apples|pears)", bpe).token_dfa
    for text, ok in [("12 apples", True), ("7 pears", True), ("12 apple", False), ("x", False)]:
        state = apples.run(bpe.encode(text))
        assert bool(apples.accepting[state]) == ok, text
    cafe = ppl.Regex(r"caf(é|e)s?", bpe).token_dfa
    ids = bpe.encode("café")
    assert bpe.decode_bytes(ids) == "café".encode()
    assert cafe.accepting[cafe.run(ids)]


def test_bundled_tokenizer_compiles_quickly():
    tok = models.Tokenizer.from_pretrained(models.bundled_path())
    regex = ppl.Regex(r" the [a-z]+ [a-z]+s\.", tok)
    assert regex.token_dfa.table.shape[1] == tok.vocab_size
    assert regex.token_dfa.accepting[regex.token_dfa.run(tok.encode(" the big dogs."))]
    digits = ppl.Regex(r"[0-9]+", tok).token_dfa
    assert all(digits.allowed[digits.start, tok.encode(d)[0]] for d in "0123456789")
