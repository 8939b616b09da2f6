"""Genealogies of SMC particles from the per-step ancestor indices, and the log Z uncertainty
they give.

Convention: ``ancestors`` [T, n]; ``ancestors[t, i]`` is the index, among the n particles
after step t-1 (the initial particles for t = 0), of the parent of particle i after step t.
A step that did not resample has ``ancestors[t] = arange(n)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["eve_indices", "lineage", "log_z_uncertainty", "surviving"]


def lineage(ancestors) -> np.ndarray:
    """[T + 1, n] slot of each final particle's ancestor after every step (row 0: the initial
    particle; row T: the particle itself, ``arange(n)``)."""
    anc = np.asarray(ancestors, np.int64)
    steps, n = anc.shape if anc.ndim == 2 else (0, anc.shape[0] if anc.ndim else 0)
    out = np.empty((steps + 1, n), np.int64)
    out[steps] = np.arange(n)
    for t in range(steps - 1, -1, -1):
        out[t] = anc[t][out[t + 1]]
    return out


def eve_indices(ancestors) -> np.ndarray:
    """[n] the initial particle each final particle descends from (its "Eve")."""
    return lineage(ancestors)[0]


def surviving(ancestors, final_alive=None) -> np.ndarray:
    """[T + 1, n] bool: whether particle slot i after step t has a descendant among the final
    particles (those with ``final_alive`` True, default all)."""
    anc = np.asarray(ancestors, np.int64)
    steps, n = anc.shape
    alive = np.zeros((steps + 1, n), bool)
    alive[steps] = True if final_alive is None else np.asarray(final_alive, bool)
    for t in range(steps - 1, -1, -1):
        alive[t, anc[t][alive[t + 1]]] = True
    return alive


def log_z_uncertainty(ancestors, log_weights) -> float:
    """Standard deviation of log Z_hat estimated from one SMC run (Eve-lineage estimator).

    Group the final particles by the initial particle they descend from (their Eve index E_i)
    and let W_i be the normalised final weights. The lineages behave as n independent
    importance samples whose weights are the sums S_m = sum_{i: E_i = m} W_i, so the relative
    variance of Z_hat is estimated by ``V = sum_m S_m^2 - 1/n`` (for a run without resampling,
    every particle is its own Eve and V = sum_i W_i^2 - 1/n, the usual importance-sampling
    estimate). This is the Chan & Lai (2013) asymptotic-variance estimator; by the delta
    method sd(log Z_hat) ~ sqrt(V). It is consistent as n grows but degrades when few Eves
    survive (it is then at most 1 - 1/n: a warning sign, not a precise number).

    Returns ``nan`` when every weight is -inf (no estimate) and 0.0 for one particle.
    """
    logw = np.asarray(log_weights, np.float64)
    n = logw.shape[0]
    if not np.isfinite(logw).any():
        return math.nan
    w = np.exp(logw - logw.max())
    w = w / w.sum()
    anc = np.asarray(ancestors)
    eve = eve_indices(anc) if anc.size else np.arange(n)
    sums = np.bincount(eve, weights=w, minlength=n)
    return float(math.sqrt(max(float(np.sum(sums ** 2)) - 1.0 / n, 0.0)))
