"""SMC-steer: Fearnhead–Clifford selection, and the steer kernel against exact enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import ppl
from genppl.inference import smc

from .enumeration import (CAP, TARGET, assert_unbiased_measure, assert_unbiased_z, exact, random_lm, run_many)


def test_without_replacement_selection_is_exact():
    lm = random_lm(8)
    program = ppl.Program(lm, [1], CAP, potential=TARGET)
    support, pi, log_z, prior = exact(lm)
    log_z_hat, logw, seqs = run_many(program, 6, kernel=smc.steer.build_kernel(), seed=8)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_without_replacement_selection_unit():
    """Fearnhead–Clifford: distinct picks, total weight kept, E[new weight of j] = w_j."""
    logw = jnp.log(jnp.array([5.0, 0.01, 1.0, 0.0, 0.3, 0.5, 2.0, 0.2, 0.05, 0.0]))
    n, runs = 4, 20000
    pick = jax.jit(jax.vmap(lambda k: smc.steer.select_without_replacement(k, logw, n)))
    chosen, new_logw = (np.asarray(a) for a in pick(jax.random.split(jax.random.key(0), runs)))
    assert all(len(set(row)) == n for row in chosen[:500]), "a candidate was chosen twice"
    w = np.exp(np.asarray(logw, np.float64))
    assert np.allclose(np.exp(new_logw).sum(1), w.sum(), rtol=1e-5)
    assert not np.isin(chosen, [3, 9]).any(), "a zero-weight candidate was chosen"
    assert (chosen == 0).sum(1).min() == 1, "the heaviest candidate must always be kept"
    contrib = np.zeros((runs, len(w)))
    np.add.at(contrib, (np.repeat(np.arange(runs), n), chosen.ravel()), np.exp(new_logw).ravel())
    mean, se = contrib.mean(0), contrib.std(0, ddof=1) / np.sqrt(runs)
    assert np.all(np.abs(mean - w) <= 4 * se + 1e-6), (mean, w)
    # fewer live candidates than slots: split, not dropped
    chosen, new_logw = smc.steer.select_without_replacement(
        jax.random.key(1), jnp.log(jnp.array([1.0, 0.0, 3.0])), 4)
    assert sorted(np.asarray(chosen).tolist()) == [0, 0, 2, 2]
    assert np.isclose(np.exp(np.asarray(new_logw)).sum(), 4.0)


def test_without_replacement_needs_token_level_program():
    lm = random_lm(20)
    program = ppl.Program(lm, [1], CAP, step_delimiter="a")
    with pytest.raises(ValueError, match="token-level"):
        smc.run(program, 8, 0, kernel=smc.steer.build_kernel())
    with pytest.raises(ValueError, match="ppl.Program"):
        smc.run(lm, 8, 0)
