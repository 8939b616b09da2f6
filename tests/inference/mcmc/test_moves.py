"""MH moves: the positions they pick and the log-probabilities the MH ratio uses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.inference.mcmc import moves
from genppl.models.interface import InputError


def test_suffix_is_uniform_over_the_current_sequence():
    n = jnp.array([1, 3, 5] * 20000)
    m = np.asarray(moves.suffix()(jax.random.key(0), n))
    assert np.all((m >= 0) & (m < np.asarray(n)))
    for length in (3, 5):
        counts = np.bincount(m[np.asarray(n) == length], minlength=length) / 20000
        assert np.abs(counts - 1 / length).max() < 5 * np.sqrt((1 / length) / 20000)
    assert np.allclose(moves.suffix().log_prob(jnp.zeros(3, jnp.int32), jnp.array([1, 3, 5])), -np.log([1, 3, 5]))


def test_independent_regenerates_everything():
    assert np.asarray(moves.independent()(jax.random.key(0), jnp.array([4, 2]))).tolist() == [0, 0]
    assert np.asarray(moves.independent().log_prob(jnp.zeros(2, jnp.int32), jnp.array([4, 2]))).tolist() == [0, 0]


def test_custom_moves_wrap_two_functions():
    last = moves.custom(lambda key, n: n - 1, lambda m, n: jnp.where(m == n - 1, 0.0, -jnp.inf))
    assert np.asarray(last(jax.random.key(0), jnp.array([3, 1]))).tolist() == [2, 0]
    assert np.asarray(last.log_prob(jnp.array([2, 2]), jnp.array([3, 4]))).tolist() == [0.0, -np.inf]
    with pytest.raises(InputError, match="custom"):
        moves.custom(lambda key, n: n, None)
    with pytest.raises(InputError, match="not the string"):
        moves.check_move("suffix")
