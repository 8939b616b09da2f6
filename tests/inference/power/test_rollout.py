"""Rollout power sampling: the estimated next-token law of p^alpha against its exact value."""

import math

import jax
import numpy as np
import pytest

from genppl import models
from genppl.inference import mcmc, power
from genppl.models.interface import InputError, NonFiniteLogitsError
from tests.helpers import assert_matches_law
from tests.models.faults import FaultyLM

EOS, CAP = 0, 3


def random_lm(seed, concentration=1.0):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=4, max_len=CAP, eos_id=EOS,
                                   eos_boost=0.3, concentration=concentration)


_law = jax.jit(power.next_token_law, static_argnums=(5, 6, 7, 8, 9))


def test_rollout_bias_shrinks_with_m_and_faster_with_the_jackknife():
    lm, alpha, runs = random_lm(3, concentration=4.0), 2.0, 10000
    seqs, logp = lm.enumerate(CAP)
    pi = np.zeros(4)
    np.add.at(pi, [s[0] for s in seqs], np.exp(alpha * logp))
    pi /= pi.sum()  # exact first-token law of p^alpha
    state = lm.prefill([1], runs, CAP)
    bias, z = {}, {}
    for m in (2, 4):
        law = _law(jax.random.key(m), lm, state, np.zeros(runs, bool), alpha, 4, m, CAP, CAP, mcmc.tempered())
        assert not np.asarray(law.nonfinite).any()
        for name, est in (("plain", law.plain), ("jackknife", law.jackknife)):
            probs = np.zeros((runs, 4))
            np.put_along_axis(probs, np.asarray(law.candidates), np.asarray(est), 1)
            b, se = probs.mean(0) - pi, probs.std(0, ddof=1) / np.sqrt(runs)
            bias[name, m], z[name, m] = np.abs(b).sum(), np.max(np.abs(b) / se)
    assert z["plain", 2] > 6, "the plain estimate should be visibly biased at M = 2"
    assert bias["plain", 2] > bias["plain", 4], bias
    for m in (2, 4):
        assert bias["jackknife", m] < 0.6 * bias["plain", m], bias
    # at M = 4 the plain bias is still many standard errors away, the corrected one is not
    assert z["plain", 4] > 6 and z["jackknife", 4] < 5, z


@pytest.mark.slow
def test_rollout_sampler_with_many_rollouts_follows_p_alpha():
    lm, alpha, runs = random_lm(5, concentration=4.0), 2.0, 4000
    seqs, logp = lm.enumerate(CAP)
    pi = np.exp(alpha * logp - np.logaddexp.reduce(alpha * logp))
    out = power.power_rollout(lm, [1], runs, CAP, key=5, alpha=alpha, top_k=4, rollouts=64)
    assert_matches_law(out.sequences(), seqs, pi)
    assert np.all(out.tokens_generated >= out.num_tokens)


def test_non_finite_logits_are_reported_not_sampled_as_eos():
    """Issue 11 defect 5 (power_rollout): NaN logits — of a particle or inside one of its
    rollouts — raise NonFiniteLogitsError naming the step and the particle, instead of
    drawing EOS with a NaN log-probability."""
    lm = FaultyLM(random_lm(6), step=1, particle=None, prompt_length=1, value="nan")
    with pytest.raises(NonFiniteLogitsError, match="power_rollout.*step 0") as err:
        power.power_rollout(lm, [1], 2, CAP, key=0, alpha=2.0, top_k=2, rollouts=2)
    # the rollouts of the first token meet the faulty logits (after one token) at step 0
    assert err.value.step == 0 and err.value.particles == (0, 1)


def test_bad_input_is_an_input_error():
    lm = random_lm(4)
    with pytest.raises(InputError, match="top_k"):
        power.power_rollout(lm, [1], 4, CAP, top_k=9)
    with pytest.raises(InputError, match="rollouts"):
        power.power_rollout(lm, [1], 4, CAP, rollouts=0)
    with pytest.raises(InputError, match="horizon"):
        power.power_rollout(lm, [1], 4, CAP, horizon=0)
    with pytest.raises(InputError, match="finite"):
        power.power_rollout(lm, [1], 4, CAP, alpha=math.inf)
    with pytest.raises(InputError, match="temperature"):
        power.power_rollout(lm, [1], 4, CAP, proposal_temperature=0.0)
    with pytest.raises(InputError, match="jackknife"):
        power.power_rollout(lm, [1], 4, CAP, jackknife="yes")


# slow: three compiled programs (the batch and two prompt buckets); the batch mechanism itself
# (ppl.map_prompts / models.batch) is covered by the default tests of smc and models.sample
@pytest.mark.slow
def test_many_prompts_in_one_call_equal_the_one_prompt_runs():
    """Issue 12: rollout power sampling over a batch of prompts of two buckets equals the
    one-prompt runs with jax.random.split(key, B)[b]."""
    lm = models.TabularLM.random(jax.random.key(5), vocab_size=4, max_len=3, eos_id=0)
    prompts = [[1], [2, 3] * 9]
    out = power.power_rollout(lm, prompts, 4, 3, key=2, alpha=2.0, top_k=2, rollouts=2)
    keys = jax.random.split(jax.random.key(2), 2)
    for b, prompt in enumerate(prompts):
        one = power.power_rollout(lm, prompt, 4, 3, key=keys[b], alpha=2.0, top_k=2, rollouts=2)
        np.testing.assert_array_equal(out[b].token_ids, one.token_ids)
        np.testing.assert_array_equal(out[b].tokens_generated, one.tokens_generated)
        np.testing.assert_allclose(out[b].log_probs, one.log_probs, rtol=1e-6)
        assert out[b].prompt == one.prompt and out[b].method == one.method


@pytest.mark.slow  # compiles the chunked loop as a second program (~5 s); the chunking itself is a default test
def test_a_progress_bar_changes_nothing(monkeypatch):
    """Issue 17: with a bar, the token loop runs in chunks of one compiled program and the
    samples, log p and costs are the plain run's bits."""
    from tests.helpers import watch_progress

    lm = random_lm(3)
    options = dict(alpha=2.0, top_k=3, rollouts=2)
    quiet = power.power_rollout(lm, [1], 8, CAP, key=4, **options)
    bars = watch_progress(monkeypatch)
    shown = power.power_rollout(lm, [1], 8, CAP, key=4, **options)
    (bar,) = bars
    assert bar.total == CAP and bar.n == CAP and bar.closed and bar.options["unit"] == "token"
    np.testing.assert_array_equal(shown.token_ids, quiet.token_ids)
    np.testing.assert_array_equal(shown.tokens_generated, quiet.tokens_generated)
    assert shown.log_probs.tobytes() == quiet.log_probs.tobytes()
    power.power_rollout(lm, [1], 8, CAP, key=4, progress=False, **options)
    assert len(bars) == 1
