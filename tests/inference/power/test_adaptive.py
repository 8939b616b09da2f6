"""Adaptive tempering of Power-SMC: any schedule keeps the law p^alpha and Z_hat unbiased;
the adaptive exponents hit the conditional-ESS target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.inference import power
from genppl.inference.power import adaptive
from tests.inference.smc.enumeration import (CAP, assert_unbiased_measure, assert_unbiased_z, exact, random_lm,
                                             run_many)

ALPHA = 6.0


@pytest.fixture(scope="module")
def lm():
    return random_lm(4)


def test_conditional_ess_and_bisection():
    logw = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    assert float(adaptive.conditional_ess(logw, jnp.zeros(3))) == pytest.approx(1.0)
    log_g = jnp.array([0.0, -1.0, 2.0])
    w, g = np.array([0.5, 0.3, 0.2]), np.exp([0.0, -1.0, 2.0])
    assert float(adaptive.conditional_ess(logw, log_g)) == pytest.approx((w @ g) ** 2 / (w @ g ** 2), rel=1e-5)
    logp_next = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]))
    prefix = jnp.array([-1.0, -3.0, -0.5])
    a = adaptive.next_exponent(logw, prefix, logp_next, 1.0, 8.0, 0.8)
    g = (a - 1.0) * prefix + jax.nn.logsumexp(a * logp_next, -1)
    assert 1.0 < float(a) < 8.0
    assert float(adaptive.conditional_ess(logw, g)) == pytest.approx(0.8, abs=1e-4)


@pytest.mark.slow  # ~25 s: a pilot and 400 SMC sweeps
def test_fixed_schedule_from_the_pilot_is_exact(lm):
    """The pilot's schedule ramps (1 < alphas[1] < alpha here); with it fixed, 400 SMC runs
    give E[Z_hat] = Z and the weighted particle measure Z pi for pi ∝ p^alpha (the z-tests of
    enumeration.py: ~3-8 % relative bias detectable)."""
    program = adaptive.ScheduledPowerProgram(lm, [1], CAP, alpha=ALPHA)
    table, _ = adaptive.adaptive_schedule(program, 64, jax.random.key(0), target=0.8)
    assert table[0] == 1.0 and 1.0 < table[1] < ALPHA and np.all(np.diff(table) >= 0)
    fixed = program.replace(alphas=jnp.asarray(table, jnp.float32))
    seqs, pi, log_z, prior = exact(lm, alpha=ALPHA, log_phi=lambda s: 0.0)
    log_z_hat, logw, particles = run_many(fixed, 8)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, particles, seqs, pi, log_z, prior)


@pytest.mark.slow  # ~19 s: a pilot and a run, each compiled
def test_adaptive_power_smc_runs(lm):
    result = power.adaptive_power_smc(lm, [1], 16, CAP, key=0, alpha=ALPHA, target_ess=0.9)
    assert result.schedule[0] == 1.0 and result.schedule.shape == (CAP,) and result.pilot_tokens > 0
    assert np.isfinite(result.log_z) and "adaptive tempering" in result.method
