"""Resamplers: each gives particle i an expected n W_i copies, never picks a -inf weight
while a finite one exists, and falls back to the identity when every weight is -inf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.inference import smc

RESAMPLERS = [smc.multinomial, smc.stratified, smc.systematic, smc.residual]
LOGW = jnp.log(jnp.array([0.5, 0.0, 0.2, 0.05, 0.25]))


@pytest.mark.parametrize("resampler", RESAMPLERS, ids=lambda f: f.__name__)
def test_expected_copies_are_n_times_the_weights(resampler):
    """4,000 draws of n = 8: a copy count off by 0.1 (of 8 W_i) is about 8 standard errors."""
    n, runs = 8, 4000
    idx = np.asarray(jax.vmap(lambda k: resampler(k, LOGW, n))(jax.random.split(jax.random.key(0), runs)))
    assert idx.dtype == np.int32 and idx.shape == (runs, n)
    assert not (idx == 1).any(), "a zero-weight particle was resampled"
    counts = np.stack([(idx == i).sum(1) for i in range(5)], 1)
    mean, se = counts.mean(0), counts.std(0, ddof=1) / np.sqrt(runs) + 1e-9
    expected = n * np.exp(np.asarray(LOGW, np.float64))
    assert np.all(np.abs(mean - expected) <= 4 * se + 1e-6), (mean, expected)


@pytest.mark.parametrize("resampler", RESAMPLERS, ids=lambda f: f.__name__)
def test_all_dead_gives_the_identity(resampler):
    idx = resampler(jax.random.key(1), jnp.full((4,), -jnp.inf), 4)
    assert np.asarray(idx).tolist() == [0, 1, 2, 3]


def test_ess_and_log_mean_exp():
    assert np.isclose(float(smc.ess(jnp.zeros(6))), 6.0)
    assert float(smc.ess(jnp.array([0.0, -jnp.inf, -jnp.inf]))) == 1.0
    assert float(smc.ess(jnp.full((3,), -jnp.inf))) == 0.0
    assert np.isclose(float(smc.log_mean_exp(jnp.log(jnp.array([1.0, 3.0])))), np.log(2.0))
