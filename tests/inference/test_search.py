"""Search baselines against enumeration: beam width V^T is the exhaustive argmax; the law of
best-of-N's pick is its enumerated law."""

import itertools
import math

import numpy as np
import pytest

from genppl import ppl
from genppl.inference import search
from tests.helpers import assert_matches_law
from tests.inference.smc.enumeration import TARGET, exact, random_lm

V, CAP = 4, 3


@pytest.fixture(scope="module")
def lm():
    return random_lm(5, vocab=V, cap=CAP)


@pytest.mark.slow  # 5-13 s of compilation on a shared machine; the default suite's budget is spent
def test_beam_of_width_v_to_the_t_is_the_exhaustive_argmax(lm):
    program = ppl.Program(lm, [1], CAP, potential=TARGET, alpha=2.0)
    seqs, pi, log_z, _ = exact(lm, alpha=2.0, cap=CAP)
    result = search.beam_search(program, V ** CAP)
    best = seqs[int(np.argmax(pi))]
    assert tuple(result.token_ids[result.selected]) == best
    # the beams' scores are log gamma of each kept sequence, exactly
    np.testing.assert_allclose(result.scores[result.selected], log_z + np.log(pi.max()), atol=1e-4)
    assert result.best() == result.selected_text
    # a narrow beam is not guaranteed to find it, but it returns a finished, allowed sequence
    narrow = search.beam_search(program, 2)
    assert np.isfinite(narrow.scores[narrow.selected]) and narrow.tokens <= 2 * CAP


@pytest.mark.slow  # 5-13 s of compilation on a shared machine; the default suite's budget is spent
def test_step_level_beam_keeps_the_best_candidates(lm):
    program = ppl.Program(lm, [1], CAP, potential=TARGET, alpha=2.0, step_delimiter="a")
    seqs, pi, log_z, _ = exact(lm, alpha=2.0, cap=CAP)
    result = search.beam_search(program, 4, key=0, expansions=8)
    chosen = tuple(result.token_ids[result.selected])
    assert chosen in seqs and pi[seqs.index(chosen)] > 0
    np.testing.assert_allclose(result.scores[result.selected], log_z + np.log(pi[seqs.index(chosen)]), atol=1e-4)



@pytest.mark.slow  # two more compiled searches (5-10 s); the default suite's budget is spent
def test_beam_over_many_prompts_equals_the_one_prompt_searches(lm):
    """A list of programs (prompts of different lengths) is one compiled search; prompt b's
    beams are those of its own search with key split(key, B)[b]."""
    import jax

    programs = [ppl.Program(lm, prompt, CAP, potential=TARGET, alpha=2.0, step_delimiter="a")
                for prompt in ([1], [2, 3], [3, 1, 2])]
    batch = search.beam_search(programs, 3, key=7, expansions=2)
    keys = jax.random.split(jax.random.key(7), len(programs))
    assert len(batch) == len(programs)
    for one, program, key in zip(batch, programs, keys):
        alone = search.beam_search(program, 3, key=key, expansions=2)
        assert one.token_ids == alone.token_ids and one.selected == alone.selected and one.tokens == alone.tokens
        np.testing.assert_allclose(one.scores, alone.scores, atol=1e-5)

def argmax_law(q, score, n):
    """P(pick = x) for the argmax of n i.i.d. q-candidates with distinct scores."""
    order = np.argsort(score)
    cdf = np.cumsum(q[order])
    below = np.concatenate([[0.0], cdf[:-1]])
    law = np.zeros_like(q)
    law[order] = cdf ** n - below ** n
    return law


def weighted_law(q, logw, n):
    """P(pick = x) of importance resampling: n i.i.d. q-candidates, pick i ∝ w_i."""
    law = np.zeros_like(q)
    w = np.exp(logw - logw[np.isfinite(logw)].max())
    for combo in itertools.product(range(len(q)), repeat=n):
        prob = np.prod(q[list(combo)])
        total = sum(w[c] for c in combo)
        if prob == 0 or total == 0:
            continue
        for c in combo:
            law[c] += prob * w[c] / total
    return law / law.sum()


@pytest.mark.slow  # ~30 s: 1,500 host-side best-of-N calls
def test_best_of_n_laws_match_enumeration(lm):
    """1,500 picks each: frequencies within 5 binomial standard errors of the enumerated law
    (a shift of 0.06 at p = 0.5 fails) and TV within twice its noise floor."""
    program = ppl.Program(lm, [1], CAP)
    seqs, q, _, _ = exact(lm, alpha=1.0, log_phi=lambda s: 0.0, cap=CAP)
    rng = np.random.default_rng(0)
    score = dict(zip((lm.tokenizer.decode(list(s)) for s in seqs), rng.permutation(len(seqs)).astype(float)))
    reward = lambda texts: [score[t] for t in texts]  # noqa: E731 - a host-side scorer
    runs = 1500
    picks = []
    for r in range(runs):
        out = search.best_of_n(program, 3, key=r, reward=reward)
        picks.append(tuple(out.token_ids[out.selected]))
    law = argmax_law(q, np.array([score[lm.tokenizer.decode(list(s))] for s in seqs]), 3)
    assert_matches_law(picks, seqs, law)
    # weighted by the importance weight of target p^2 under q = p: sampling importance resampling
    tilted = ppl.Program(lm, [1], CAP, alpha=2.0)
    picks = []
    for r in range(runs):
        out = search.best_of_n(tilted, 2, key=r, select="weighted")
        picks.append(tuple(out.token_ids[out.selected]))
    logw = np.log(q)  # log w = 2 log p - log p
    assert_matches_law(picks, seqs, weighted_law(q, logw, 2))


@pytest.mark.slow  # 5-13 s of compilation on a shared machine; the default suite's budget is spent
def test_self_consistency_votes(lm):
    program = ppl.Program(lm, [1], CAP)
    out = search.self_consistency(program, 16, key=0, extract=lambda t: t[:1] or None)
    assert math.isclose(sum(out.votes.values()), sum(1 for t in out.texts if t[:1]) / 16)
    assert out.answer == max(out.votes, key=out.votes.get)
    assert out.selected_text[:1] == out.answer and out.tokens > 0


def test_bad_inputs_are_refused_before_running(lm):
    from genppl.models.interface import InputError

    program = ppl.Program(lm, [1], CAP)
    with pytest.raises(InputError, match="select must be"):
        search.best_of_n(program, 2, select="max")
    with pytest.raises(InputError, match="expansions=K"):
        search.beam_search(ppl.Program(lm, [1], CAP, step_delimiter="a"), 2)
    with pytest.raises(InputError, match="extract"):
        search.self_consistency(program, 2, extract=None)
