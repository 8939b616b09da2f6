"""Bounds on log Z bracket the exact value; the EUBO gap is KL(pi||q)."""

import jax
import numpy as np
import pytest

from genppl.inference import variational

from .shared import BANNED, TARGET_GUIDE, random_params


@pytest.mark.slow
def test_bounds_bracket_log_z():
    params = random_params(variational.elbo(TARGET_GUIDE, 2))["guide"]
    banned = variational.exact_batch(BANNED)
    out = variational.bounds(TARGET_GUIDE, params, BANNED, 0, n=256, runs=64, exact=banned)
    log_z = banned["log_z"]
    assert out["eubo"] >= log_z - 1e-5  # exact expectation: a true upper bound
    assert out["smc_lower"] <= log_z + 4 * out["smc_lower_se"]
    kl_pq, kl_qp, _ = variational.exact_kl(TARGET_GUIDE, params, BANNED, banned)
    assert out["eubo"] - log_z == pytest.approx(kl_pq, abs=1e-4)
    assert out["kl_pi_q"] >= kl_pq - 1e-4


@pytest.mark.slow
def test_bounds_without_exact_samples_have_no_eubo():
    out = variational.bounds(TARGET_GUIDE, TARGET_GUIDE.init(jax.random.key(0)), BANNED, 0, n=8, runs=2)
    assert out["eubo"] is None and "kl_q_pi" not in out
    assert np.isfinite(out["elbo"]) and 0 < out["ess"] <= 1


@pytest.mark.slow  # ~40 s: conditional SMC with the guide's program
def test_csmc_upper_bound_for_the_guide():
    """With exact references the conditional-SMC upper bound lies above log Z (within 3 se),
    above the SMC lower bound, and their gap (the bidirectional KL estimate) is positive."""
    params = random_params(variational.elbo(TARGET_GUIDE, 2))["guide"]
    banned = variational.exact_batch(BANNED)
    out = variational.bounds(TARGET_GUIDE, params, BANNED, 0, n=4, runs=64, exact=banned, upper=True)
    assert out["csmc_exact_references"]
    assert out["csmc_upper"] >= banned["log_z"] - 3 * out["csmc_upper_se"]
    assert out["bidirectional_kl"] > 0
