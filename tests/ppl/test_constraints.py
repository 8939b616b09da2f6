"""Hard constraints: token masks and lengths, regexes, banned strings and stop strings —
their increments against the indicator they stand for, the constrained law under the locally
optimal proposal against exact enumeration, tables across token boundaries, and the tables
being data (equal treedefs, one compiled program)."""

import collections
import functools
import itertools
import math
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.models.interface import InputError
from genppl.ppl import proposals
from genppl.ppl.constraints import (BannedStrings, BannedTokens, DFAPotential, MaxLength, MinLength, Regex,
                                    StopStrings, TokenMask)
from genppl.ppl.program import Program
from tests.checkpoints import save_tokenizer
from tests.helpers import assert_matches_law

from .automata.tables import check_table
from .walk import walk

OPTIMAL = proposals.locally_optimal()

V, CAP, EOS, PROMPT = 5, 5, 0, [1]  # tokens "$abcd"
PATTERN = r"a(b|c)*d?|ca?"


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(7), vocab_size=V, max_len=CAP, eos_id=EOS)


@pytest.fixture(scope="module")
def lm11():
    return models.TabularLM.random(jax.random.key(11), vocab_size=V, max_len=CAP, eos_id=EOS)


def text_of(lm, seq):
    return lm.tokenizer.decode([t for t in seq if t != EOS])


@functools.partial(jax.jit, static_argnames=("proposal",))
def sweep(program, state, key, proposal):
    """CAP transitions; one compilation per program shape and proposal, shared by the tests."""
    total = jnp.zeros(state.done.shape, jnp.float32)
    for k in range(CAP):
        state, logw = program.step(jax.random.fold_in(key, k), state, proposal)
        total = total + logw
    return state, total


@jax.jit
def one_step(program, state, key):
    return program.step(key, state, OPTIMAL)


def run_program(program, n, key=0, proposal=OPTIMAL):
    state, total = sweep(program, program.init(n), jax.random.key(key), proposal)
    return state, np.asarray(total, np.float64)


# ---- token masks and lengths ---------------------------------------------------------------
def test_masks_and_lengths_telescope_to_their_indicators(lm):
    seqs, _ = lm.enumerate(CAP)
    body = [[t for t in s if t != EOS] for s in seqs]
    cases = [
        (BannedTokens([2, 4]), [not ({2, 4} & set(s)) for s in seqs]),
        (TokenMask(np.array([True, True, False, True, True])), [2 not in s for s in seqs]),
        (TokenMask([0, 1, 3], vocab_size=V), [set(s) <= {0, 1, 3} for s in seqs]),
        (MinLength(2, EOS), [len(b) >= 2 for b in body]),
        (MaxLength(2, EOS), [len(b) <= 2 for b in body]),
    ]
    for potential, ok in cases:
        got = walk(potential, lm, seqs, PROMPT, CAP)
        np.testing.assert_array_equal(got, np.where(ok, 0.0, -np.inf), err_msg=repr(potential))


def test_masks_and_lengths_refuse_bad_input():
    with pytest.raises(InputError, match="vocab_size"):
        TokenMask([1, 2])
    with pytest.raises(InputError, match="token ids must be in"):
        TokenMask([1, 9], vocab_size=4)
    with pytest.raises(InputError, match="integer token ids"):
        BannedTokens([1.5])
    with pytest.raises(InputError, match="non-negative integer"):
        MinLength(-1, EOS)
    with pytest.raises(InputError, match="non-negative integer"):
        MaxLength(2.5, EOS)
    with pytest.raises(InputError, match="TokenDFA"):
        DFAPotential("ab")


# ---- regular expressions -------------------------------------------------------------------
def test_regex_potential_telescopes_to_the_indicator(lm):
    seqs, _ = lm.enumerate(CAP)
    got = walk(Regex(PATTERN, lm), lm, seqs, PROMPT, CAP)
    want = [0.0 if re.fullmatch(PATTERN, text_of(lm, s)) else -math.inf for s in seqs]
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, want)


def live_prefix(text, alphabet="abcd", depth=3):
    """Brute force: some continuation of at most ``depth`` letters completes a match."""
    return any(re.fullmatch(PATTERN, text + "".join(w))
               for n in range(depth + 1) for w in itertools.product(alphabet, repeat=n))


def test_optimal_proposal_samples_the_constrained_law_with_exact_weights(lm):
    program = Program(lm, PROMPT, max_new_tokens=CAP, potential=Regex(PATTERN, lm))
    n = 4000
    state, total = run_program(program, n)
    assert bool(state.done.all())
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
        regex = Regex(pattern, lm)
        assert regex.token_dfa.start == regex.token_dfa.dead
        program = Program(lm, PROMPT, max_new_tokens=CAP, potential=regex)
        state = program.init(6)
        logw_next = np.asarray(regex.logw_next(state.potential, state.lm))
        assert np.isneginf(logw_next).all()
        state, logw = one_step(program, state, jax.random.key(0))
        assert np.isneginf(np.asarray(logw)).all() and bool(state.done.all())
        assert not np.isnan(np.asarray(state.log_p)).any()


def test_liveness_is_by_tokens_not_bytes():
    # "ab" needs a token ending in "b" after "a"; this vocabulary only has "xb"
    tok = types.SimpleNamespace(token_bytes=[b"", b"a", b"xb", b"ab"], eos_id=0)
    regex = Regex("ab", tok)
    start = regex.token_dfa.start
    assert regex.token_dfa.allowed[start].tolist() == [False, False, False, True]
    assert np.asarray(regex.allowed)[int(regex.start)].tolist() == [False, False, False, True]


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
        regex = Regex(pattern, bpe)
        check_table(regex.token_dfa, regex.byte_dfa, bpe.token_bytes, bpe.eos_id)
    apples = Regex(r"[0-9]+ (apples|pears)", bpe).token_dfa
    for text, ok in [("12 apples", True), ("7 pears", True), ("12 apple", False), ("x", False)]:
        state = apples.run(bpe.encode(text))
        assert bool(apples.accepting[state]) == ok, text
    cafe = Regex(r"caf(é|e)s?", bpe).token_dfa
    ids = bpe.encode("café")
    assert bpe.decode_bytes(ids) == "café".encode()
    assert cafe.accepting[cafe.run(ids)]


def test_bundled_tokenizer_compiles_quickly():
    tok = models.Tokenizer.from_pretrained(models.bundled_path())
    regex = Regex(r" the [a-z]+ [a-z]+s\.", tok)
    assert regex.token_dfa.table.shape[1] == tok.vocab_size
    assert regex.token_dfa.accepting[regex.token_dfa.run(tok.encode(" the big dogs."))]
    digits = Regex(r"[0-9]+", tok).token_dfa
    assert all(digits.allowed[digits.start, tok.encode(d)[0]] for d in "0123456789")


# ---- banned strings ------------------------------------------------------------------------
# a vocabulary whose tokens span several bytes, so strings fall across token boundaries
VOCAB = [b"", b"a", b"b", b"ab", b"ba", b"bab", b"e", b"E", b"x", b"\n", b".\n", b"be", b""]
TOK = types.SimpleNamespace(token_bytes=VOCAB, eos_id=0)


def banned_brute(seq, strings):
    return any(s.encode() in b"".join(VOCAB[t] for t in seq) for s in strings)


@pytest.mark.parametrize("strings", [["ab"], ["e", "E"], ["bb", "aba"], ["\n"]])
def test_banned_strings_table_across_token_boundaries(strings):
    ban = BannedStrings(strings, TOK).token_dfa
    tokens = range(1, len(VOCAB) - 1)
    assert not ban.allowed[:, len(VOCAB) - 1].any(), "an empty special token must be banned"
    for n in range(4):
        for seq in itertools.product(tokens, repeat=n):
            state, ok = ban.start, True
            for t in seq:
                ok &= bool(ban.allowed[state, t])
                state = int(ban.table[state, t])
            assert ok == (not banned_brute(seq, strings)), seq
            assert ban.allowed[state, 0] == ok  # EOS: a text without banned strings may end


def test_banned_strings_telescope_on_a_char_model(lm11):
    lm = lm11
    seqs, _ = lm.enumerate(CAP)
    ban = BannedStrings(["ab", "cc"], lm)  # single-character tokens: every string spans two
    got = walk(ban, lm, seqs, PROMPT, CAP)
    want = [-math.inf if "ab" in text_of(lm, s) or "cc" in text_of(lm, s) else 0.0 for s in seqs]
    np.testing.assert_array_equal(got, want)


def test_lipogram_bans_every_token_with_the_letter():
    tok = models.CharTokenizer("$aeEiou", eos_id=0)
    ban = BannedStrings(["e", "E"], tok).token_dfa
    assert ban.allowed[ban.start].tolist() == [True, True, False, False, True, True, True]


@pytest.mark.parametrize("strings, says", [
    ([], "at least one"), ([""], "empty string"), (["a", ""], "empty string"), ([3], "must be strings"),
    (7, "list of strings"),
])
def test_bad_strings_are_refused(strings, says):
    with pytest.raises(InputError, match=says):
        BannedStrings(strings, TOK)
    with pytest.raises(InputError, match=says):
        StopStrings(strings, TOK)


# ---- stop strings --------------------------------------------------------------------------
def first_stop(seq, strings, vocab):
    """Brute force: 1-based index of the token completing the first stop string, or None."""
    for k in range(1, len(seq) + 1):
        if any(s.encode() in b"".join(vocab[t] for t in seq[:k]) for s in strings):
            return k
    return None


@pytest.mark.parametrize("strings", [["\n"], ["ab", "e"], ["bb"], ["a.\n"]])
def test_stop_table_across_token_boundaries(strings):
    stop = StopStrings(strings, TOK)
    stops, next_state = np.asarray(stop.stops), np.asarray(stop.next_state)
    for n in range(4):
        for seq in itertools.product(range(1, len(VOCAB) - 1), repeat=n):
            state, stopped = stop.start, None
            for k, t in enumerate(seq):
                if stops[state, t] and stopped is None:
                    stopped = k + 1
                state = int(next_state[state, t])
            assert stopped == first_stop(seq, strings, VOCAB), seq
    assert not stops[:, 0].any() and (next_state[:, 0] == np.arange(next_state.shape[0])).all()


def stop_law(lm, strings):
    """Exact law of continuations cut at their first stop string: (support, probabilities)."""
    seqs, logp = lm.enumerate(CAP)
    law = collections.defaultdict(float)
    vocab = lm.tokenizer.token_bytes
    for seq, lp in zip(seqs, logp):
        k = first_stop(seq, strings, vocab)
        law[seq if k is None else seq[:k]] += math.exp(lp)
    support = sorted(law)
    return support, np.array([law[s] for s in support])


def test_stop_strings_end_generation_with_the_exact_law(lm11):
    lm = lm11
    strings = ["b", "ca"]
    program = Program(lm, PROMPT, max_new_tokens=CAP, stop=strings)
    n = 4000
    # this law has 353 sequences, many with p < 1.6e-5: assert_matches_law pools those (a
    # single draw of one would be 5 binomial standard errors out under the exact law itself)
    state, total = run_program(program, n, proposal=proposals.prior())
    assert bool(state.done.all()) and np.all(total == 0.0)  # no potential: no weight
    samples = [tuple(s) for s in state.lm.generated()]
    support, p = stop_law(lm, strings)
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-9)
    assert_matches_law(samples, support, p)
    eos = np.asarray(state.eos)
    for seq, text, ended in zip(samples, program.finished_text(state), eos):
        stopped = any(text.endswith(s) for s in strings)
        assert ended == (stopped or seq[-1] == EOS)
        assert all(s not in text[:-1] for s in strings), text  # nothing before the end


def test_stop_strings_apply_the_potentials_final_check(lm11):
    lm = lm11
    # the regex needs "a+b": stopping at "b" finishes a match, stopping at "a" never does
    regex = Regex("a+b", lm)
    ok = Program(lm, PROMPT, max_new_tokens=CAP, potential=regex, stop=["b"])
    state, total = run_program(ok, 200)
    texts = ok.finished_text(state)
    finite = np.isfinite(total)
    assert finite.any() and all(texts[i].startswith("a") and texts[i].endswith("b") for i in np.flatnonzero(finite))
    assert np.asarray(state.eos)[finite].all()
    dead = Program(lm, PROMPT, max_new_tokens=CAP, potential=regex, stop=["a"])
    state, total = run_program(dead, 200)
    assert np.isneginf(total).all() and not np.isnan(total).any()


def test_stop_configuration_travels_with_the_program(lm11):
    lm = lm11
    program = Program(lm, PROMPT, max_new_tokens=CAP, stop="\n")
    assert isinstance(program.stop, StopStrings) and program.stop.strings == ("\n",)
    assert program.replace(alpha=2.0).stop is program.stop
    # the stop tables are leaves of the program: they survive a round trip as data
    leaves, tree = jax.tree_util.tree_flatten(program)
    back = jax.tree_util.tree_unflatten(tree, leaves).stop
    assert isinstance(back, StopStrings) and back.start == program.stop.start
    assert back.vocab_size == program.stop.vocab_size and back.eos_id == program.stop.eos_id
    for name in StopStrings.data_fields:
        assert getattr(back, name) is getattr(program.stop, name)
        assert any(leaf is getattr(program.stop, name) for leaf in leaves)
    assert back.cut("ab\nba") == program.stop.cut("ab\nba") == "ab\n"
    assert "stop=" in repr(program)
    plain = Program(lm, PROMPT, max_new_tokens=CAP)
    assert plain.stop is None and plain.init(3).stop is None
    with pytest.raises(InputError, match="empty string"):
        Program(lm, PROMPT, max_new_tokens=CAP, stop=[""])
    small = StopStrings(["a"], models.CharTokenizer("$ab", eos_id=0))
    with pytest.raises(InputError, match="compiled for 3 tokens"):
        Program(lm, PROMPT, max_new_tokens=CAP, stop=small)


def test_finished_text_is_cut_after_the_stop_string():
    stop = StopStrings([".\n", "!"], TOK)
    assert stop.cut("ab.\nba") == "ab.\n"
    assert stop.cut("a!b.\n") == "a!"
    assert stop.cut("abab") == "abab"
    assert StopStrings(["é!"], TOK).cut("aé!é") == "aé!"  # cut on a character boundary


# ---- tables are data -----------------------------------------------------------------------
def test_equal_shapes_give_equal_treedefs(lm):
    structure = jax.tree_util.tree_structure
    r1, r2 = Regex("ab*", lm), Regex("ba*", lm)
    assert r1.table.shape == r2.table.shape and not np.array_equal(r1.allowed, r2.allowed)
    assert structure(r1) == structure(r2)
    assert structure(BannedStrings(["ab"], lm)) == structure(BannedStrings(["ba"], lm))
    assert structure(StopStrings(["a"], lm)) == structure(StopStrings(["b"], lm))
    assert structure(BannedTokens([1, 2])) == structure(BannedTokens([3, 4]))
    assert structure(MinLength(1, EOS)) == structure(MinLength(3, EOS))
    assert structure(MaxLength(1, EOS)) == structure(MaxLength(3, EOS))
    assert structure(TokenMask([1], V)) == structure(TokenMask([2, 3], V))
    # the pattern is for display only: dropped when flattening, the tables are the leaves
    leaves, tree = jax.tree_util.tree_flatten(r1)
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert not hasattr(back, "pattern") and not hasattr(back, "token_dfa")
    assert "ab*" in repr(r1) and "?" in repr(back)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


def test_two_regexes_share_one_compiled_program(lm):
    traces = []

    @jax.jit
    def one_step(program, state, key):
        traces.append(1)
        return program.step(key, state, OPTIMAL)

    results = []
    for pattern in ("ab*", "ba*"):
        program = Program(lm, PROMPT, max_new_tokens=CAP, potential=Regex(pattern, lm))
        state, _ = one_step(program, program.init(64), jax.random.key(0))
        results.append(set(program.finished_text(state)) | {text_of(lm, s[:1]) for s in state.lm.generated()})
    assert len(traces) == 1
    assert results[0] <= {"a", "ab", ""} and results[1] <= {"b", "ba", ""}   # each obeys its own table
