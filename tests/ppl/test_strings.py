"""Banned strings and stop strings: across token boundaries, against brute force and against
the exact law of an enumerable model."""

import collections
import itertools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genppl import models
from genppl import ppl
from genppl.models.interface import InputError
from tests.helpers import assert_matches_law

from .walk import walk

# a vocabulary whose tokens span several bytes, so strings fall across token boundaries
VOCAB = [b"", b"a", b"b", b"ab", b"ba", b"bab", b"e", b"E", b"x", b"\n", b".\n", b"be", b""]
TOK = types.SimpleNamespace(token_bytes=VOCAB, eos_id=0)


@settings(max_examples=100, deadline=None)
@given(strings=st.lists(st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 3 + 97 for x in b)),
                        min_size=1, max_size=4),
       texts=st.lists(st.text(alphabet="abcd", max_size=8), min_size=10, max_size=30))
def test_substring_dfa_finds_every_occurrence(strings, texts):
    dfa = ppl.substring_dfa(strings)
    for text in texts:
        data = text.encode()
        state = dfa.start
        for k, b in enumerate(data):
            state = dfa.step(state, b)
            assert dfa.accepting[state] == any(data[: k + 1].endswith(s) for s in strings)


def banned_brute(seq, strings):
    return any(s.encode() in b"".join(VOCAB[t] for t in seq) for s in strings)


@pytest.mark.parametrize("strings", [["ab"], ["e", "E"], ["bb", "aba"], ["\n"]])
def test_banned_strings_table_across_token_boundaries(strings):
    ban = ppl.BannedStrings(strings, TOK).token_dfa
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


V, CAP, EOS, PROMPT = 5, 5, 0, [1]  # tokens "$abcd"


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(11), vocab_size=V, max_len=CAP, eos_id=EOS)


def text_of(lm, seq):
    return lm.tokenizer.decode([t for t in seq if t != EOS])


def test_banned_strings_telescope_on_a_char_model(lm):
    seqs, _ = lm.enumerate(CAP)
    ban = ppl.BannedStrings(["ab", "cc"], lm)  # single-character tokens: every string spans two
    got = walk(ban, lm, seqs, PROMPT, CAP)
    want = [-math.inf if "ab" in text_of(lm, s) or "cc" in text_of(lm, s) else 0.0 for s in seqs]
    np.testing.assert_array_equal(got, want)


def test_lipogram_bans_every_token_with_the_letter():
    tok = models.CharTokenizer("$aeEiou", eos_id=0)
    ban = ppl.BannedStrings(["e", "E"], tok).token_dfa
    assert ban.allowed[ban.start].tolist() == [True, True, False, False, True, True, True]


@pytest.mark.parametrize("strings, says", [
    ([], "at least one"), ([""], "empty string"), (["a", ""], "empty string"), ([3], "must be strings"),
    (7, "list of strings"),
])
def test_bad_strings_are_refused(strings, says):
    with pytest.raises(InputError, match=says):
        ppl.BannedStrings(strings, TOK)
    with pytest.raises(InputError, match=says):
        ppl.StopStrings(strings, TOK)


# ---- stop strings --------------------------------------------------------------------------
def first_stop(seq, strings, vocab):
    """Brute force: 1-based index of the token completing the first stop string, or None."""
    for k in range(1, len(seq) + 1):
        if any(s.encode() in b"".join(vocab[t] for t in seq[:k]) for s in strings):
            return k
    return None


@pytest.mark.parametrize("strings", [["\n"], ["ab", "e"], ["bb"], ["a.\n"]])
def test_stop_table_across_token_boundaries(strings):
    stop = ppl.StopStrings(strings, TOK)
    for n in range(4):
        for seq in itertools.product(range(1, len(VOCAB) - 1), repeat=n):
            state, stopped = stop.start, None
            for k, t in enumerate(seq):
                if stop.stops[state, t] and stopped is None:
                    stopped = k + 1
                state = int(stop.next_state[state, t])
            assert stopped == first_stop(seq, strings, VOCAB), seq
    assert not stop.stops[:, 0].any() and (stop.next_state[:, 0] == np.arange(stop.next_state.shape[0])).all()


def run_program(program, n, key=0):
    @jax.jit
    def sweep(program, state, key):
        total = jnp.zeros((n,), jnp.float32)
        for k in range(CAP):
            state, logw = program.step(jax.random.fold_in(key, k), state)
            total = total + logw
        return state, total

    state, total = sweep(program, program.init(n), jax.random.key(key))
    return state, np.asarray(total, np.float64)


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


def test_stop_strings_end_generation_with_the_exact_law(lm):
    strings = ["b", "ca"]
    program = ppl.Program(lm, PROMPT, max_new_tokens=CAP, proposal="prior", stop=strings)
    n = 4000
    state, total = run_program(program, n)
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


def test_stop_strings_apply_the_potentials_final_check(lm):
    # the regex needs "a+b": stopping at "b" finishes a match, stopping at "a" never does
    regex = ppl.Regex("a+b", lm)
    ok = ppl.Program(lm, PROMPT, max_new_tokens=CAP, potential=regex, stop=["b"])
    state, total = run_program(ok, 200)
    texts = ok.finished_text(state)
    finite = np.isfinite(total)
    assert finite.any() and all(texts[i].startswith("a") and texts[i].endswith("b") for i in np.flatnonzero(finite))
    assert np.asarray(state.eos)[finite].all()
    dead = ppl.Program(lm, PROMPT, max_new_tokens=CAP, potential=regex, stop=["a"])
    state, total = run_program(dead, 50)
    assert np.isneginf(total).all() and not np.isnan(total).any()


def test_stop_configuration_travels_with_the_program(lm):
    program = ppl.Program(lm, PROMPT, max_new_tokens=CAP, stop="\n")
    assert isinstance(program.stop, ppl.StopStrings) and program.stop.strings == ("\n",)
    assert program.replace(alpha=2.0).stop is program.stop
    leaves, tree = jax.tree_util.tree_flatten(program)
    assert jax.tree_util.tree_unflatten(tree, leaves).stop is program.stop
    assert "stop=" in repr(program)
    plain = ppl.Program(lm, PROMPT, max_new_tokens=CAP)
    assert plain.stop is None and plain.init(3).stop is None
    with pytest.raises(InputError, match="empty string"):
        ppl.Program(lm, PROMPT, max_new_tokens=CAP, stop=[""])
    small = ppl.StopStrings(["a"], models.CharTokenizer("$ab", eos_id=0))
    with pytest.raises(InputError, match="compiled for 3 tokens"):
        ppl.Program(lm, PROMPT, max_new_tokens=CAP, stop=small)


def test_finished_text_is_cut_after_the_stop_string():
    stop = ppl.StopStrings([".\n", "!"], TOK)
    assert stop.cut("ab.\nba") == "ab.\n"
    assert stop.cut("a!b.\n") == "a!"
    assert stop.cut("abab") == "abab"
