"""Learning circuit parameters: EM (full-batch and mini-batch) and SGD with optax.

EM uses the circuit flows as gradients: for normalised log-parameters used directly in the
forward pass, d log p(x) / d log w[u, j] is the expected number of times the edge (u, j) is
used (the flow), and d log p(x) / d (a shift of input unit u's log-density) is its flow.
Categorical inputs and sum weights are then re-estimated from the summed flows, Gaussian
inputs from flow-weighted moments. Each full-batch step never lowers the training
log-likelihood (with ``pseudocount=0``).

>>> import jax
>>> from genppl.circuits.structures import random_binary_tree
>>> c = random_binary_tree(4, num_categories=2, num_units=2, key=jax.random.key(0))
>>> params = c.init(jax.random.key(1))
>>> x = jax.random.bernoulli(jax.random.key(2), 0.3, (64, 4)).astype(float)
>>> params, history = fit_em(c, params, x, epochs=3)
>>> history[0] <= history[-1]
True
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genppl.models.interface import InputError

from .layers import Circuit, Input

__all__ = ["em_step", "fit_em", "fit_sgd"]


@functools.partial(jax.jit, static_argnums=(0,))
def _flows(circuit: Circuit, params, x, missing):
    shifts = tuple(jnp.zeros((x.shape[0], s), x.dtype) if isinstance(b, Input) and b.num_categories is None else None
                   for b, s in zip(circuit.blocks, circuit.sizes))

    def total(params, shifts):
        return jnp.sum(circuit.forward(params, x, missing, "sum", shifts)[-1])

    ll, (g_params, g_shifts) = jax.value_and_grad(total, argnums=(0, 1))(params, shifts)
    return ll, g_params, g_shifts


def _m_step(circuit: Circuit, params, g_params, g_shifts, x, missing, pseudocount, min_std=1e-3):
    new = []
    for b, p, g, f in zip(circuit.blocks, params, g_params, g_shifts):
        if p is None or (isinstance(b, Input) and b.frozen):
            new.append(p)
        elif isinstance(b, Input) and b.num_categories is None:
            f = jnp.where(missing[:, b.var][:, None], 0.0, f)  # [N, size] flows of observed values
            col = x[:, b.var][:, None]
            mass = f.sum(0)
            mean = jnp.where(mass > 0, (f * col).sum(0) / jnp.maximum(mass, 1e-30), p[:, 0])
            var = (f * (col - mean[None]) ** 2).sum(0) / jnp.maximum(mass, 1e-30)
            std = jnp.where(mass > 0, jnp.maximum(jnp.sqrt(var), min_std), jnp.exp(p[:, 1]))
            new.append(jnp.stack([mean, jnp.log(std)], -1))
        else:
            counts = g + pseudocount
            total = counts.sum(-1, keepdims=True)
            new.append(jnp.where(total > 0, jnp.log(counts) - jnp.log(jnp.where(total > 0, total, 1.0)), p))
    return tuple(new)


@functools.partial(jax.jit, static_argnums=(0,))
def _em_step(circuit, params, x, missing, pseudocount):
    ll, g_params, g_shifts = _flows(circuit, params, x, missing)
    return _m_step(circuit, params, g_params, g_shifts, x, missing, pseudocount), ll / x.shape[0]


def em_step(circuit: Circuit, params, x, missing=None, pseudocount: float = 0.0):
    """One full-batch EM step: (new params, mean log-likelihood under the old params)."""
    x, missing = circuit.check_data(x, missing)
    if not pseudocount >= 0:
        raise InputError(f"pseudocount must be >= 0, got {pseudocount!r}")
    return _em_step(circuit, params, x, missing, jnp.asarray(pseudocount, x.dtype))


@jax.jit
def _blend(old, new, eta):
    def mix(a, b):
        return jnp.logaddexp(jnp.log1p(-eta) + a, jnp.log(eta) + b)
    return mix(old, new)


def fit_em(circuit: Circuit, params, x, missing=None, *, epochs: int = 10, batch_size: int | None = None,
           step_size: float = 0.5, pseudocount: float = 0.0, key=None):
    """EM for ``epochs`` passes. Full batch (``batch_size=None``): exact EM. Mini-batch: after
    each batch, sum weights and categorical inputs move to (1 - eta) old + eta batch-EM
    (``eta = step_size``), Gaussians likewise on mean and log-std. Returns (params, mean
    log-likelihood per epoch)."""
    x, missing = circuit.check_data(x, missing)
    history = []
    if batch_size is None or batch_size >= x.shape[0]:
        for _ in range(epochs):
            params, ll = em_step(circuit, params, x, missing, pseudocount)
            history.append(float(ll))
        return params, history
    if not 0.0 < step_size <= 1.0:
        raise InputError(f"step_size must be in (0, 1], got {step_size!r}")
    key = jax.random.key(0) if key is None else key
    n = x.shape[0]
    num_batches = n // batch_size
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, n)
        total = 0.0
        for k in range(num_batches):
            idx = order[k * batch_size:(k + 1) * batch_size]
            target, ll = _em_step(circuit, params, x[idx], missing[idx], jnp.asarray(pseudocount, x.dtype))
            params = tuple(
                p if p is None else
                (p + step_size * (t - p)) if isinstance(b, Input) and b.num_categories is None else
                _blend(p, t, step_size)
                for b, p, t in zip(circuit.blocks, params, target))
            total += float(ll)
        history.append(total / num_batches)
    return params, history


def fit_sgd(circuit: Circuit, params, x, missing=None, *, optimizer=None, epochs: int = 10,
            batch_size: int = 64, key=None):
    """Maximise the log-likelihood by SGD (default ``optax.adam(0.05)``) on unconstrained
    parameters, renormalised after every step. Returns (params, mean log-likelihood per epoch,
    measured on the whole data set after each epoch)."""
    x, missing = circuit.check_data(x, missing)
    optimizer = optax.adam(0.05) if optimizer is None else optimizer
    key = jax.random.key(0) if key is None else key
    frozen = tuple(isinstance(b, Input) and b.frozen for b in circuit.blocks)

    @jax.jit
    def step(params, opt_state, xb, mb):
        def loss(params):
            return -jnp.mean(circuit.forward(circuit.normalize(params), xb, mb)[-1])
        grads = jax.grad(loss)(params)
        grads = tuple(None if g is None else (jnp.zeros_like(g) if f else g) for g, f in zip(grads, frozen))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return circuit.normalize(optax.apply_updates(params, updates)), opt_state

    opt_state = optimizer.init(params)
    n = x.shape[0]
    batch_size = min(int(batch_size), n)
    history = []
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, n)
        for k in range(n // batch_size):
            idx = order[k * batch_size:(k + 1) * batch_size]
            params, opt_state = step(params, opt_state, x[idx], missing[idx])
        history.append(float(np.mean(np.asarray(circuit.log_likelihood(params, x, missing)))))
    return params, history
