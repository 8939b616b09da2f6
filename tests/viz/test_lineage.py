"""Genealogy bookkeeping and the one-run log Z uncertainty, against hand-made genealogies and
against the spread of log Z_hat over independent runs."""

import math

import jax
import numpy as np
import pytest

from genppl import models, ppl, viz
from genppl.inference import smc


def test_lineage_and_eves_by_hand():
    # step 0 keeps; step 1: particles 0,1 <- 1, particle 2 <- 2; step 2: all <- 0
    anc = np.array([[0, 1, 2], [1, 1, 2], [0, 0, 0]])
    np.testing.assert_array_equal(viz.lineage(anc), [[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 1, 2]])
    np.testing.assert_array_equal(viz.eve_indices(anc), [1, 1, 1])
    alive = viz.surviving(anc, [True, False, False])
    np.testing.assert_array_equal(alive, [[False, True, False], [False, True, False], [True, False, False],
                                          [True, False, False]])


def test_without_resampling_it_is_the_importance_sampling_estimate():
    logw = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    w = np.exp(logw) / np.exp(logw).sum()
    identity = np.tile(np.arange(4), (3, 1))
    assert math.isclose(viz.log_z_uncertainty(identity, logw), math.sqrt(np.sum(w ** 2) - 1 / 4))
    assert math.isclose(viz.log_z_uncertainty(identity, np.zeros(4)), 0.0, abs_tol=1e-12)
    assert math.isnan(viz.log_z_uncertainty(identity, np.full(4, -np.inf)))


# slow: 200 SMC runs (about 10 s); the estimator's formula is checked by hand above
@pytest.mark.slow
def test_one_run_estimate_matches_the_spread_over_runs():
    """Mean one-run sd estimate vs the empirical sd of log Z_hat over 200 independent runs.

    Power: with 200 runs the empirical sd has a relative standard error of about 1/sqrt(400)
    = 5%, so the tolerance (a factor 1.5 either way) detects an estimator biased by 50% or more
    (e.g. one that ignores the genealogy, or forgets the -1/n term at n = 8)."""
    lm = models.TabularLM.random(jax.random.key(1), vocab_size=4, max_len=4)
    program = ppl.Program(lm, [1], max_new_tokens=4, potential=ppl.BannedTokens([2]))
    kernel = smc.build_kernel(smc.multinomial, ppl.proposals.locally_optimal(), ess_threshold=0.5)
    log_z, est = [], []
    for seed in range(200):
        r = smc.run(program, 8, key=seed, kernel=kernel, progress=False)
        log_z.append(r.log_z)
        est.append(r.log_z_sd)
    log_z, est = np.array(log_z), np.array(est)
    assert np.isfinite(log_z).all()
    ratio = np.mean(est) / np.std(log_z, ddof=1)
    assert 1 / 1.5 < ratio < 1.5, ratio
