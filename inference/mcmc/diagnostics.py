"""Diagnostics of MH chains: acceptance rates from the per-step ``accepted`` flags, and split
R-hat, bulk and tail ESS of several chains (definitions below).

>>> import numpy as np
>>> accepted = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 1]]], bool)  # [blocks, steps, chains]
>>> acceptance_per_block(accepted).tolist()
[0.75, 0.25]
>>> acceptance_per_block(np.zeros((3, 0, 2), bool)).tolist()  # no MH step
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["acceptance_per_block", "acceptance_rate", "chain_summary", "ess", "ess_bulk", "ess_tail",
           "rank_normalise", "rank_rhat", "split_chains", "split_rhat"]


def acceptance_rate(accepted) -> float:
    """Fraction of accepted MH proposals over every step and chain (0.0 when there were none)."""
    accepted = np.asarray(accepted)
    return float(accepted.mean()) if accepted.size else 0.0


def acceptance_per_block(accepted) -> np.ndarray:
    """[blocks] acceptance rate of each block from ``accepted`` [blocks, N_MCMC, n] (0 where a
    block ran no MH step)."""
    accepted = np.asarray(accepted)
    if not accepted.size:
        return np.zeros((accepted.shape[0],))
    return accepted.reshape(accepted.shape[0], -1).mean(axis=1)


# ---- convergence diagnostics of several chains: split R-hat, bulk and tail ESS -------------
# x is [chains, draws] (a scalar summary per draw: log target, length, reward, an indicator).
# Definitions (Gelman et al., Bayesian Data Analysis, 3rd ed., sec. 11.4-11.5; Vehtari,
# Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization, folding, and localization"):
#
# * split R-hat: cut every chain in two halves (m chains of n draws); W = mean within-chain
#   variance (1/(n-1) normalisation), B/n = variance of the chain means (1/(m-1));
#   var+ = (n-1)/n W + B/n; R-hat = sqrt(var+ / W).
# * ESS: with the autocovariances of each chain at lag t (1/n normalisation) averaged over
#   chains, rho_t = 1 - (W - mean_autocov_t) / var+; Geyer's initial positive sequence sums
#   pairs P_k = rho_{2k} + rho_{2k+1} while they are positive, made monotone (each pair at most
#   the previous); tau = -1 + 2 sum_k P_k; ESS = m n / tau.
# * rank normalisation: z = Phi^{-1}((r - 3/8) / (S + 1/4)) with r the rank of a draw among all
#   S draws (average ranks for ties); bulk ESS = ESS of z over the split chains; tail ESS =
#   min of the ESS of the indicators 1{x <= q_0.05} and 1{x <= q_0.95}; rank-normalised
#   R-hat = max(split R-hat of z, split R-hat of z of |x - median|).

def _chains(x, least: int = 4) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < least:
        from genppl.models.interface import InputError
        raise InputError(f"diagnostics need draws as [chains, draws] with at least {least} draws, got shape {x.shape}")
    return x


def split_chains(x) -> np.ndarray:
    """[2 chains, draws // 2]: every chain cut in two halves (a middle draw of an odd count dropped)."""
    x = _chains(x)
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rhat(x) -> float:
    m, n = x.shape
    within = x.var(axis=1, ddof=1).mean()
    between_over_n = x.mean(axis=1).var(ddof=1)
    var_plus = (n - 1) / n * within + between_over_n
    if within == 0:  # constant chains: undefined when they agree, divergent when they do not
        return math.nan if between_over_n == 0 else math.inf
    return float(np.sqrt(var_plus / within))


def split_rhat(x) -> float:
    """Classic split R-hat of ``x`` [chains, draws] (1 when the chains agree)."""
    return _rhat(split_chains(x))


def _autocov(x) -> np.ndarray:
    """[chains, draws] autocovariance at every lag (1/n normalisation), by FFT."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(centred, size, axis=1)
    return np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n] / n


def ess(x) -> float:
    """Effective sample size of ``x`` [chains, draws] (not split; Geyer's initial monotone
    sequence on the chain-combined autocorrelations)."""
    x = _chains(x, 2)
    m, n = x.shape
    acov = _autocov(x)
    within = acov[:, 0].mean() * n / (n - 1)
    var_plus = within * (n - 1) / n + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if var_plus == 0:  # every draw equal: no information about mixing
        return math.nan
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    pairs = rho[:-1:2] + rho[1::2]
    total, previous = 0.0, math.inf
    for p in pairs:
        if p <= 0:
            break
        previous = min(previous, p)
        total += previous
    tau = -1.0 + 2.0 * total
    return float(m * n / max(tau, 1.0 / np.log10(m * n)))


def rank_normalise(x) -> np.ndarray:
    """z = Phi^{-1}((rank - 3/8) / (S + 1/4)) of every draw, ranks over all chains (ties averaged)."""
    from scipy import special, stats

    x = np.asarray(x, np.float64)
    ranks = stats.rankdata(x, method="average").reshape(x.shape)
    return special.ndtri((ranks - 0.375) / (x.size + 0.25))


def ess_bulk(x) -> float:
    """Bulk ESS: the ESS of the rank-normalised split chains."""
    return ess(rank_normalise(split_chains(x)))


def ess_tail(x) -> float:
    """Tail ESS: min over the 5 % and 95 % quantiles q of the ESS of 1{x <= q} (split chains)."""
    s = split_chains(x)
    out = []
    for prob in (0.05, 0.95):
        q = np.quantile(s, prob)
        indicator = (s <= q).astype(np.float64)
        out.append(ess(indicator))
    return float(min(out))


def rank_rhat(x) -> float:
    """Rank-normalised split R-hat: max of the bulk (ranks) and folded (|x - median|) R-hats."""
    s = split_chains(x)
    bulk = _rhat(rank_normalise(s))
    folded = _rhat(rank_normalise(np.abs(s - np.median(s))))
    return float(max(bulk, folded))


def chain_summary(x) -> dict:
    """{"rhat", "rank_rhat", "ess_bulk", "ess_tail"} of ``x`` [chains, draws] (NaN if fewer than 4 draws)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] < 4 or x.shape[0] * x.shape[1] < 8:
        return {"rhat": math.nan, "rank_rhat": math.nan, "ess_bulk": math.nan, "ess_tail": math.nan}
    return {"rhat": split_rhat(x), "rank_rhat": rank_rhat(x), "ess_bulk": ess_bulk(x), "ess_tail": ess_tail(x)}
