"""Island resampling against exact enumeration: each island an independent SMC, log Z_hat the
log-mean-exp of the islands' estimates (see ``enumeration`` for the z-tests and their power:
with R = 400 runs a 3-standard-error test of E[Z_hat] = Z detects a relative bias of about
3-8 %, and the particle measure is checked per sequence within 4 standard errors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import ppl
from genppl.inference import smc
from genppl.models.interface import InputError

from .enumeration import CAP, TARGET, assert_unbiased_measure, assert_unbiased_z, exact, random_lm, run_many


def test_island_ancestors_stay_in_their_island():
    resampler = smc.island_resampling(smc.systematic, 4)
    logw = jnp.log(jnp.array([1, 0, 0, 0, 5, 1, 1, 1, 0, 0, 0, 1, 1, 2, 3, 4.0]))
    idx = np.asarray(jax.jit(resampler, static_argnums=2)(jax.random.key(0), logw, 16))
    assert np.all(idx // 4 == np.arange(16) // 4)
    np.testing.assert_array_equal(idx[:4], 0)  # island 0 has one live particle
    np.testing.assert_array_equal(idx[8:12], 11)
    assert smc.island_resampling(smc.systematic, 1) is smc.systematic


def test_islands_decide_and_reset_on_their_own():
    # island 0 degenerate (ESS 1 < 0.9 * 2), island 1 even (ESS 2): only island 0 resamples,
    # and only its weights become their log-mean-exp (its Z_hat_j is kept)
    logw = jnp.array([0.0, -jnp.inf, -1.0, -0.5])
    flags = smc.islands.island_flags(logw, 0.9, 2)
    np.testing.assert_array_equal(np.asarray(flags), [True, False])
    reset = np.asarray(smc.islands.reset_weights(logw, flags))
    np.testing.assert_allclose(reset, [np.log(0.5), np.log(0.5), -1.0, -0.5], rtol=1e-6)


def test_island_smc_is_unbiased():
    # four islands of two particles, each deciding and drawing on its own (what a mesh of four
    # devices runs with resampling="island")
    lm = random_lm(1)
    program = ppl.Program(lm, [1], CAP, potential=TARGET)
    seqs, pi, log_z, prior = exact(lm)
    log_z_hat, logw, sampled = run_many(program, 8, resampling_fn=smc.island_resampling(smc.systematic, 4),
                                        ess_threshold=0.9, proposal="prior", seed=31)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, sampled, seqs, pi, log_z, prior)


def test_particles_must_split_into_islands():
    lm = random_lm(1)
    program = ppl.Program(lm, [1], CAP, potential=TARGET)
    with pytest.raises(InputError, match="6 particles do not split into 4 islands"):
        smc.run(program, 6, kernel=smc.build_kernel(smc.island_resampling(smc.systematic, 4)), progress=False)
