"""Acceptance rates of MH chains; split R-hat, bulk and tail ESS."""

import math

import numpy as np
import pytest
from numpyro import diagnostics as numpyro_diagnostics
from scipy import stats

from genppl.inference.mcmc import diagnostics
from genppl.inference.mcmc import diagnostics as diag
from genppl.models.interface import InputError


def test_acceptance_rates():
    accepted = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 1]]], bool)  # [blocks, steps, chains]
    assert diagnostics.acceptance_per_block(accepted).tolist() == [0.75, 0.25]
    assert diagnostics.acceptance_rate(accepted) == 0.5
    assert diagnostics.acceptance_per_block(np.zeros((3, 0, 2), bool)).tolist() == [0.0, 0.0, 0.0]
    assert diagnostics.acceptance_rate(np.zeros((3, 0, 2), bool)) == 0.0


# ---- split R-hat, bulk and tail ESS against formulas written here and against numpyro ------

def synthetic_chains(seed=0, chains=4, draws=400, phi=0.8, shift=0.25):
    """AR(1) chains x_t = phi x_{t-1} + e_t, the last one shifted (fixed seed)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, draws))
    for c in range(chains):
        e = rng.normal(size=draws)
        for t in range(1, draws):
            x[c, t] = phi * x[c, t - 1] + e[t]
    x[-1] += shift
    return x


def reference_rhat(x):
    """BDA3 sec. 11.4, written out with loops over the split chains."""
    half = x.shape[1] // 2
    parts = [c[:half] for c in x] + [c[-half:] for c in x]
    m, n = len(parts), half
    means = [sum(p) / n for p in parts]
    grand = sum(means) / m
    b = n / (m - 1) * sum((mu - grand) ** 2 for mu in means)
    w = sum(sum((v - mu) ** 2 for v in p) / (n - 1) for p, mu in zip(parts, means)) / m
    return math.sqrt(((n - 1) / n * w + b / n) / w)


def reference_ess(x):
    """Stan's multi-chain ESS (Vehtari et al. 2021, eqs. 10-11), autocovariances by direct
    sums, Geyer's initial positive sequence made monotone."""
    m, n = x.shape
    means = x.mean(1)
    acov = np.array([[sum((c[i] - mu) * (c[i + t] - mu) for i in range(n - t)) / n for t in range(n)]
                     for c, mu in zip(x, means)])
    w = np.mean(acov[:, 0]) * n / (n - 1)
    var_plus = (n - 1) / n * w + np.var(means, ddof=1)
    rho = [1.0 - (w - np.mean(acov[:, t])) / var_plus for t in range(n)]
    rho[0] = 1.0
    total, prev, k = 0.0, math.inf, 0
    while 2 * k + 1 < n:
        pair = rho[2 * k] + rho[2 * k + 1]
        if pair <= 0:
            break
        prev = min(prev, pair)
        total += prev
        k += 1
    return m * n / (2 * total - 1)


def reference_z(x):
    s = x.size
    return stats.norm.ppf((stats.rankdata(x).reshape(x.shape) - 3 / 8) / (s + 1 / 4))


def test_split_rhat_and_ess_match_the_definitions_and_numpyro():
    x = synthetic_chains()
    assert diag.split_rhat(x) == pytest.approx(reference_rhat(x), rel=1e-10)
    assert diag.split_rhat(x) == pytest.approx(float(numpyro_diagnostics.split_gelman_rubin(x)), rel=1e-10)
    small = x[:, :120]  # the direct-sum reference is O(n^2) per chain
    assert diag.ess(small) == pytest.approx(reference_ess(small), rel=1e-8)
    assert diag.ess(x) == pytest.approx(float(numpyro_diagnostics.effective_sample_size(x)), rel=1e-8)
    # the shifted chain is detected; identical-law chains are not
    assert diag.split_rhat(synthetic_chains(shift=3.0)) > 1.1
    assert diag.split_rhat(synthetic_chains(shift=0.0, phi=0.3, draws=2000)) < 1.02


def test_bulk_tail_ess_and_rank_rhat_match_the_definitions():
    x = synthetic_chains(1)[:, :120]
    half = x.shape[1] // 2
    split = np.concatenate([x[:, :half], x[:, -half:]])
    assert diag.ess_bulk(x) == pytest.approx(reference_ess(reference_z(split)), rel=1e-8)
    tails = [reference_ess((split <= np.quantile(split, q)).astype(float)) for q in (0.05, 0.95)]
    assert diag.ess_tail(x) == pytest.approx(min(tails), rel=1e-8)
    folded = np.abs(split - np.median(split))
    want = max(reference_rhat_of_split(reference_z(split)), reference_rhat_of_split(reference_z(folded)))
    assert diag.rank_rhat(x) == pytest.approx(want, rel=1e-10)
    # independent draws: ESS near the number of draws; AR(0.8): far below
    iid = np.random.default_rng(2).normal(size=(4, 400))
    assert 0.8 * 1600 < diag.ess_bulk(iid) < 1.25 * 1600
    assert diag.ess_bulk(synthetic_chains(3)) < 0.3 * 1600


def reference_rhat_of_split(parts):
    m, n = parts.shape
    means = parts.mean(1)
    w = np.mean([np.sum((p - mu) ** 2) / (n - 1) for p, mu in zip(parts, means)])
    b = n * np.var(means, ddof=1)
    return math.sqrt(((n - 1) / n * w + b / n) / w)


def test_diagnostics_refuse_too_few_draws():
    with pytest.raises(InputError, match="at least 4 draws"):
        diag.split_rhat(np.zeros((2, 3)))
    assert math.isnan(diag.chain_summary(np.zeros((2, 3)))["rhat"])


def test_constant_chains_have_no_diagnostics():
    assert math.isnan(diag.split_rhat(np.ones((2, 8))))
    assert diag.split_rhat(np.array([[1.0] * 8, [2.0] * 8])) == math.inf
    assert math.isnan(diag.ess(np.ones((2, 8))))
