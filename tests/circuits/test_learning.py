"""Circuit learning: EM never lowers the likelihood; SGD improves it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from genppl import circuits
from tests.circuits.small import D, K, rbt


def em_data():
    # data with structure: variables copy a shared one with noise
    rng = np.random.default_rng(10)
    base = rng.integers(0, K, size=(300, 1))
    return ((base + (rng.random((300, D)) < 0.3)) % K).astype(np.float64)


def test_em_never_lowers_the_likelihood_with_missing_values():
    with enable_x64():
        data = em_data()
        c = rbt(11)
        params = c.init(jax.random.key(12))
        missing = np.random.default_rng(1).random(data.shape) < 0.2
        _, history = circuits.fit_em(c, params, data, missing, epochs=6)
        assert np.all(np.diff(history) >= -1e-9) and history[-1] > history[0]


@pytest.mark.slow


def test_gaussian_em_never_lowers_the_likelihood_and_sgd_improves_it():
    with enable_x64():
        data = em_data()
        g = rbt(13, gaussian=True)
        _, gh = circuits.fit_em(g, g.init(jax.random.key(14)), data, epochs=5)
        assert np.all(np.diff(gh) >= -1e-9) and gh[-1] > gh[0]
        c = rbt(11)
        params = c.init(jax.random.key(12))
        start = float(jnp.mean(c.log_likelihood(params, data)))
        _, sh = circuits.fit_sgd(c, params, data, epochs=3, batch_size=100)
        assert sh[-1] > start
        _, mb = circuits.fit_em(c, params, data, epochs=3, batch_size=100, step_size=0.5)
        assert mb[-1] > start
