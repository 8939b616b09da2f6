"""Resamplers, one signature: ``resampler(key, logw [N], n) -> ancestor indices [n] int32``.

Each gives every particle i an expected number of copies n * W_i (W the normalised weights),
so the weighted particle system stays unbiased. They differ in variance: multinomial draws n
independent indices; stratified one uniform per stratum; systematic one shared uniform;
residual keeps floor(n W_i) copies deterministically and draws the rest multinomially.

Weights of -inf are never chosen while any weight is finite. When every weight is -inf the
indices are 0..n-1 (nothing to choose from; the caller reports the failure).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _normalised(logw):
    logw = jnp.asarray(logw, jnp.float32)
    total = jax.nn.logsumexp(logw)
    safe = jnp.where(jnp.isfinite(total), logw - total, 0.0)
    return jnp.exp(safe), jnp.isfinite(total)


def _inverse_cdf(weights, points):
    """Index of the cdf bin each sorted point in [0, 1) falls into (never a zero-weight bin)."""
    cdf = jnp.cumsum(weights)
    cdf = cdf / cdf[-1]
    idx = jnp.searchsorted(cdf, points, side="right")
    return jnp.minimum(idx, weights.shape[0] - 1).astype(jnp.int32)


def _fallback(idx, ok, n, size):
    return jnp.where(ok, idx, jnp.arange(n, dtype=jnp.int32) % size)


def multinomial(key, logw, n: int):
    weights, ok = _normalised(logw)
    idx = jax.random.categorical(key, jnp.log(weights), shape=(n,)).astype(jnp.int32)
    return _fallback(idx, ok, n, weights.shape[0])


def stratified(key, logw, n: int):
    weights, ok = _normalised(logw)
    points = (jnp.arange(n) + jax.random.uniform(key, (n,))) / n
    return _fallback(_inverse_cdf(weights, points), ok, n, weights.shape[0])


def systematic(key, logw, n: int):
    weights, ok = _normalised(logw)
    points = (jnp.arange(n) + jax.random.uniform(key, ())) / n
    return _fallback(_inverse_cdf(weights, points), ok, n, weights.shape[0])


def residual(key, logw, n: int):
    weights, ok = _normalised(logw)
    size = weights.shape[0]
    copies = jnp.floor(n * weights).astype(jnp.int32)
    # deterministic part: particle i repeated copies[i] times, written into slots 0..sum-1
    starts = jnp.cumsum(copies) - copies
    slots = jnp.arange(n)
    owner = jnp.searchsorted(starts + copies, slots, side="right").astype(jnp.int32)
    num_fixed = copies.sum()
    # random part: the remaining slots drawn from the leftover weights
    leftover = n * weights - copies
    has_left = leftover.sum() > 0
    drawn = jax.random.categorical(
        key, jnp.where(has_left, jnp.log(jnp.maximum(leftover, 0.0)), 0.0), shape=(n,)).astype(jnp.int32)
    idx = jnp.where(slots < num_fixed, jnp.minimum(owner, size - 1), drawn)
    return _fallback(idx, ok, n, size)


def ess(logw):
    """Effective sample size (sum w)^2 / sum w^2 of log-weights (0 when all are -inf)."""
    logw = jnp.asarray(logw, jnp.float32)
    a, b = jax.nn.logsumexp(logw), jax.nn.logsumexp(2 * logw)
    return jnp.where(jnp.isfinite(a), jnp.exp(2 * a - b), 0.0)


def log_mean_exp(logw):
    """log((1/N) sum_i exp(logw_i)) over the last axis (one value per prompt of a batch),
    -inf when all are -inf."""
    logw = jnp.asarray(logw, jnp.float32)
    return jax.nn.logsumexp(logw, -1) - jnp.log(logw.shape[-1])
