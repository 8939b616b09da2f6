"""Power-SMC and its alpha ramp against exact enumeration."""

import math

import jax
import numpy as np
import pytest

from genppl import models
from genppl.inference import power, smc
from genppl.models.interface import InputError, NonFiniteLogitsError
from tests.compile_count import count_compiles
from tests.helpers import tv_noise_floor
from tests.inference.smc.enumeration import assert_unbiased_measure, assert_unbiased_z, run_many
from tests.models.faults import FaultyLM

EOS, CAP = 0, 3


def random_lm(seed, concentration=1.0):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=4, max_len=CAP, eos_id=EOS,
                                   eos_boost=0.3, concentration=concentration)


def exact_power(lm, alpha):
    seqs, logp = lm.enumerate(CAP)
    logu = alpha * logp
    log_z = np.logaddexp.reduce(logu)
    return seqs, np.exp(logu - log_z), log_z, np.exp(logp)


def test_alpha_at_and_the_ramp_as_data():
    lm = random_lm(0)
    program = power.PowerProgram(lm, [1], CAP, alpha=4.0, ramp_tokens=2)
    assert [float(a) for a in program.alpha_at(np.arange(3))] == [2.5, 4.0, 4.0]
    assert [float(a) for a in power.PowerProgram(lm, [1], CAP, alpha=3.0).alpha_at(np.arange(3))] == [3.0] * 3
    # the ramp and both powers are leaves: equal static structure, and they survive flattening
    other = power.PowerProgram(random_lm(1), [2, 3], CAP, alpha=2.0, ramp_tokens=1, alpha_start=0.5)
    leaves, tree = jax.tree.flatten(program)
    assert tree == jax.tree.structure(other)
    again = jax.tree.unflatten(tree, leaves)
    assert int(again.ramp_tokens) == 2 and float(again.alpha_start) == 1.0


@pytest.mark.slow
def test_alpha_ramp_keeps_the_target_and_z_unbiased():
    lm, alpha = random_lm(1), 4.0
    support, pi, log_z, prior = exact_power(lm, alpha)
    program = power.PowerProgram(lm, [1], CAP, alpha=alpha, ramp_tokens=2, alpha_start=1.0)
    log_z_hat, logw, seqs = run_many(program, 8, runs=400, ess_threshold=0.5, seed=1)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


@pytest.mark.slow
def test_power_smc_convenience_and_histogram():
    lm, alpha = random_lm(3), 4.0
    support, pi, log_z, _ = exact_power(lm, alpha)
    result = power.power_smc(lm, [1], 4000, CAP, key=3, alpha=alpha, ess_threshold=0.0)
    assert "Power-SMC" in result.method and np.isfinite(result.log_z)
    # one big run: the weighted histogram is a self-normalised importance estimate of p^alpha,
    # whose noise is that of about ESS independent draws (Kish)
    est = result.distribution()
    freq = np.array([est.get(s, 0.0) for s in support])
    assert np.isclose(freq.sum(), 1.0)
    ess = result.final_ess
    assert 0.5 * np.abs(freq - pi).sum() < 2 * tv_noise_floor(pi, ess), (ess, 0.5 * np.abs(freq - pi).sum())


def test_power_smc_compiles_once():
    """Another prompt, alpha, ramp or model of the same shapes reuses the compiled sweep."""
    power.power_smc(random_lm(6), [1], 8, CAP, key=0, alpha=3.0, ramp_tokens=1)
    with count_compiles() as compiles:
        power.power_smc(random_lm(6), [2], 8, CAP, key=1, alpha=3.0, ramp_tokens=1)
        power.power_smc(random_lm(7), [1], 8, CAP, key=2, alpha=2.0, ramp_tokens=2, alpha_start=0.5)
        power.power_smc(random_lm(7), [1], 8, CAP, key=2, alpha=2.0)  # no ramp: the same program
    assert compiles.count_of("sweep") == 0, compiles


def test_power_smc_takes_a_resampling_function_and_checks_its_options():
    lm = random_lm(4)
    result = power.power_smc(lm, [1], 8, CAP, key=0, alpha=2.0, resampling_fn=smc.multinomial, ess_threshold=1.0)
    assert "multinomial" in result.method and result.log_z <= 0.0
    with pytest.raises(InputError, match="ramp_tokens"):
        power.power_smc(lm, [1], 4, CAP, ramp_tokens=-1)
    with pytest.raises(InputError, match="alpha_start"):
        power.power_smc(lm, [1], 4, CAP, ramp_tokens=2, alpha_start=0.0)
    with pytest.raises(InputError, match="finite"):  # issue 11 defect 11: alpha=inf
        power.power_smc(lm, [1], 4, CAP, alpha=math.inf)
    with pytest.raises(InputError, match="resampling_fn"):
        power.power_smc(lm, [1], 4, CAP, resampling_fn="systematic")


def test_non_finite_logits_are_a_model_fault():
    """Issue 11 defect 5 (Power-SMC): NaN logits of one particle at one step are reported as a
    model fault naming the step and the particle, not as a constraint killing the particle."""
    lm = FaultyLM(random_lm(8), step=1, particle=3, prompt_length=1, value="nan")
    with pytest.raises(NonFiniteLogitsError, match="step 1") as err:
        power.power_smc(lm, [1], 8, CAP, key=0, alpha=2.0, ess_threshold=0.0)
    assert err.value.particles == (3,)


# slow: three compiled programs (the batch and two prompt buckets); the batch mechanism itself
# (ppl.map_prompts / models.batch) is covered by the default tests of smc and models.sample
@pytest.mark.slow
def test_many_prompts_in_one_call_equal_the_one_prompt_runs():
    """Issue 12: Power-SMC (with its ramp) over a batch of prompts of two buckets equals the
    one-prompt runs with jax.random.split(key, B)[b]."""
    lm = random_lm(41)
    prompts = [[1], [2, 3] * 9]
    results = power.power_smc(lm, prompts, 8, CAP, key=3, alpha=3.0, ramp_tokens=2, ess_threshold=1.0)
    keys = jax.random.split(jax.random.key(3), 2)
    for b, prompt in enumerate(prompts):
        one = power.power_smc(lm, prompt, 8, CAP, key=keys[b], alpha=3.0, ramp_tokens=2, ess_threshold=1.0)
        assert results[b].token_ids == one.token_ids and results[b].method == one.method
        np.testing.assert_allclose(results[b].log_weights, one.log_weights, rtol=1e-6, atol=1e-6)
        assert results[b].log_z == pytest.approx(one.log_z, abs=1e-6)
