"""Power-SMC, resample-move SMC and rollout power sampling against exact enumeration."""

import jax
import numpy as np
import pytest

from genppl import inference
from genppl import models
from genppl import ppl
from genppl.inference import power, sequential_mc
from genppl.models.interface import InputError
from genppl.models.sampling import Processing
from tests.helpers import assert_matches_law, tv_noise_floor
from tests.inference.test_smc import assert_unbiased_measure, assert_unbiased_z

EOS, CAP = 0, 3


def random_lm(seed, concentration=1.0):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=4, max_len=CAP, eos_id=EOS,
                                   eos_boost=0.3, concentration=concentration)


def exact_power(lm, alpha):
    seqs, logp = lm.enumerate(CAP)
    logu = alpha * logp
    log_z = np.logaddexp.reduce(logu)
    return seqs, np.exp(logu - log_z), log_z, np.exp(logp)


_RUNNERS = {}


def run_many(program, n, runs, ess_threshold, move=None, seed=0):
    """R independent sweeps in one vmapped program: (log Z_hat [R], logw [R, n], seqs)."""
    config = ("systematic", float(ess_threshold), "resample", move)
    if config not in _RUNNERS:
        def many(program, state, keys):
            return jax.vmap(lambda k: sequential_mc._sweep_impl(program, state, k, *config))(keys)
        _RUNNERS[config] = jax.jit(many)
    state = sequential_mc.init(program, n)
    out = _RUNNERS[config](program, state, jax.random.split(jax.random.key(seed), runs))
    logw = np.asarray(out.logw, np.float64)
    tokens, length, start = (np.asarray(a) for a in
                             (out.particles.lm.tokens, out.particles.lm.length, out.particles.lm.prompt_length))
    seqs = [[tuple(int(t) for t in tokens[r, i, start[r, i]:length[r, i]]) for i in range(n)]
            for r in range(runs)]
    return np.logaddexp.reduce(logw, axis=1) - np.log(n), logw, seqs


# ---- Power-SMC ---------------------------------------------------------------------------
@pytest.mark.slow
def test_alpha_ramp_keeps_the_target_and_z_unbiased():
    lm, alpha = random_lm(1), 4.0
    support, pi, log_z, prior = exact_power(lm, alpha)
    program = power.PowerProgram(lm, [1], CAP, alpha=alpha, ramp_tokens=2, alpha_start=1.0)
    assert program.replace(prompt_ids=(0,)).ramp_tokens == 2  # what smc() compiles
    log_z_hat, logw, seqs = run_many(program, 8, 400, 0.5, seed=1)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_power_smc_with_mh_rejuvenation_is_exact():
    """Power-SMC (q = softmax(alpha logits), prefix-normaliser weights) with resampling at
    every step and two MH moves after each: Z_hat unbiased for sum_x p(x)^alpha, and the
    weighted particles unbiased for p^alpha."""
    lm, alpha = random_lm(2), 2.0
    support, pi, log_z, prior = exact_power(lm, alpha)
    program = power.PowerProgram(lm, [1], CAP, alpha=alpha)
    move = inference.MHMove(num_steps=2)
    log_z_hat, logw, seqs = run_many(program, 8, 400, 1.0, move=move, seed=2)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


@pytest.mark.slow
def test_power_smc_convenience_and_histogram():
    lm, alpha = random_lm(3), 4.0
    support, pi, log_z, _ = exact_power(lm, alpha)
    result = inference.power_smc(lm, [1], 4000, CAP, key=3, alpha=alpha, ess_threshold=0.0)
    assert "Power-SMC" in result.method and np.isfinite(result.log_z)
    # one big run: the weighted histogram is a self-normalised importance estimate of p^alpha,
    # whose noise is that of about ESS independent draws (Kish)
    est = result.distribution()
    freq = np.array([est.get(s, 0.0) for s in support])
    assert np.isclose(freq.sum(), 1.0)
    ess = result.final_ess
    assert 0.5 * np.abs(freq - pi).sum() < 2 * tv_noise_floor(pi, ess), (ess, 0.5 * np.abs(freq - pi).sum())


def test_power_smc_compiles_once():
    from genppl.models.sampling import TRACE_COUNTS

    lm = random_lm(6)
    inference.power_smc(lm, [1], 8, CAP, key=0, alpha=3.0)
    before = TRACE_COUNTS["smc"]
    inference.power_smc(lm, [2], 8, CAP, key=1, alpha=3.0)
    inference.power_smc(random_lm(7), [1], 8, CAP, key=2, alpha=3.0)
    assert TRACE_COUNTS["smc"] == before


def test_move_checks_the_program():
    lm = random_lm(4)
    banned = ppl.Program(lm, [1], CAP, alpha=2.0, potential=ppl.BannedTokens([2]))
    with pytest.raises(InputError, match="potential"):
        inference.smc(banned, 4, 0, move=inference.MHMove())
    with pytest.raises(InputError, match="ramp"):
        inference.power_smc(lm, [1], 4, CAP, ramp_tokens=2, move=inference.MHMove())
    with pytest.raises(InputError, match="num_steps"):
        inference.MHMove(num_steps=0)
    with pytest.raises(InputError, match="ramp_tokens"):
        inference.power_smc(lm, [1], 4, CAP, ramp_tokens=-1)
    with pytest.raises(InputError, match="top_k"):
        inference.power_rollout(lm, [1], 4, CAP, top_k=9)
    with pytest.raises(InputError, match="rollouts"):
        inference.power_rollout(lm, [1], 4, CAP, rollouts=0)


# ---- rollout estimates of zeta -----------------------------------------------------------
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
        cand, _, plain, jack, _ = _law(jax.random.key(m), lm, state, np.zeros(runs, bool), alpha, 4, m, CAP,
                                       CAP, Processing(1.0 / alpha))
        for name, est in (("plain", plain), ("jackknife", jack)):
            probs = np.zeros((runs, 4))
            np.put_along_axis(probs, np.asarray(cand), np.asarray(est), 1)
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
    support, pi, _, _ = exact_power(lm, alpha)
    out = inference.power_rollout(lm, [1], runs, CAP, key=5, alpha=alpha, top_k=4, rollouts=64)
    assert_matches_law(out.sequences(), support, pi)
    assert np.all(out.tokens_generated >= out.num_tokens)
