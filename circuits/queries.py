"""Queries on a :class:`circuits.layers.Circuit`: marginals, conditionals, sampling, MAP.

All run as one upward pass (log semiring, or max-product for MAP) and, for sampling and MAP,
one top-down pass that follows one unit per active block: a sum block picks a child unit
(sampled from its weights times the child's value given the evidence, or the argmax), a
Hadamard product passes its unit to every child, a Kronecker product splits it into the
pair (u // K2, u % K2), and an input block fills in its variable where it is missing.

MAP by max-product is exact for deterministic circuits (e.g. :func:`circuits.chow_liu_tree`);
on others it returns the most probable joint assignment of the variables *and* the
circuit's latent choices (the usual MPE approximation).

>>> import jax
>>> from genppl.circuits.structures import random_binary_tree
>>> c = random_binary_tree(4, num_categories=3, num_units=2, key=jax.random.key(0))
>>> params = c.init(jax.random.key(1))
>>> x = jax.numpy.array([[0, 1, 2, 0.]])
>>> bool(marginal(c, params, x, [[False, True, True, True]]) >= c.log_likelihood(params, x)[0])
True
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError

from .layers import Circuit, Product, Sum

__all__ = ["conditional", "map_assignment", "marginal", "sample"]


def _check(circuit):
    if not isinstance(circuit, Circuit):
        raise InputError(f"expected a circuits.Circuit, got {type(circuit).__name__}")


def marginal(circuit: Circuit, params, x, missing) -> jax.Array:
    """log p(x_observed) [N], the variables where ``missing`` is True summed out."""
    _check(circuit)
    return circuit.log_likelihood(params, x, missing)


def conditional(circuit: Circuit, params, x, query, evidence) -> jax.Array:
    """log p(x_query | x_evidence) [N]; ``query`` and ``evidence`` are [N, D] bool masks
    (disjoint); every other variable is summed out."""
    _check(circuit)
    query, evidence = jnp.asarray(query, bool), jnp.asarray(evidence, bool)
    if bool(jnp.any(query & evidence)):
        raise InputError("query and evidence must be disjoint sets of variables")
    both = circuit.log_likelihood(params, x, ~(query | evidence))
    return both - circuit.log_likelihood(params, x, ~evidence)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _top_down(circuit: Circuit, params, x, missing, key, greedy: bool):
    vals = circuit.forward(params, x, missing, "max" if greedy else "sum")
    n = x.shape[0]
    units = [None] * len(circuit.blocks)
    units[-1] = jnp.zeros((n,), jnp.int32)
    out = x
    keys = jax.random.split(key, len(circuit.blocks))

    def give(child, active, unit):
        prev = units[child] if units[child] is not None else jnp.full((n,), -1, jnp.int32)
        units[child] = jnp.where(active, unit, prev)

    for i in reversed(range(len(circuit.blocks))):
        b, p, u = circuit.blocks[i], params[i], units[i]
        if u is None:
            continue
        active = u >= 0
        safe = jnp.maximum(u, 0)
        if isinstance(b, Sum):
            child_vals = jnp.concatenate([vals[c] for c in b.children], -1)
            logits = p[safe] + child_vals
            pick = jnp.argmax(logits, -1) if greedy else jax.random.categorical(keys[i], logits, -1)
            offset = 0
            for c in b.children:
                size = circuit.sizes[c]
                inside = (pick >= offset) & (pick < offset + size)
                give(c, active & inside, (pick - offset).astype(jnp.int32))
                offset += size
        elif isinstance(b, Product):
            if b.mode == "hadamard":
                for c in b.children:
                    give(c, active, safe)
            else:
                k2 = circuit.sizes[b.children[1]]
                give(b.children[0], active, safe // k2)
                give(b.children[1], active, safe % k2)
        else:
            fill = missing[:, b.var] & active
            if b.num_categories:
                logits = p[safe]
                value = jnp.argmax(logits, -1) if greedy else jax.random.categorical(keys[i], logits, -1)
                value = value.astype(out.dtype)
            else:
                mean, std = p[safe, 0], jnp.exp(p[safe, 1])
                value = mean if greedy else mean + std * jax.random.normal(keys[i], (n,), out.dtype)
            out = out.at[:, b.var].set(jnp.where(fill, value, out[:, b.var]))
    return out, vals[-1][:, 0]


def sample(circuit: Circuit, params, key, n: int | None = None, x=None, missing=None) -> jax.Array:
    """Exact samples [N, D]: unconditional (give ``n``) or of the ``missing`` variables given
    the observed ones in ``x`` (conditional sampling)."""
    _check(circuit)
    if x is None:
        if n is None:
            raise InputError("give n (unconditional samples) or x with a missing mask")
        x = jnp.zeros((int(n), circuit.num_vars))
        missing = jnp.ones(x.shape, bool)
    x, missing = circuit.check_data(x, missing)
    return _top_down(circuit, params, x, missing, key, False)[0]


def map_assignment(circuit: Circuit, params, x=None, missing=None):
    """Max-product MAP completion: (assignment [N, D], its log max-product value [N]).
    Without ``x``: the single most probable assignment of every variable."""
    _check(circuit)
    if x is None:
        x = jnp.zeros((1, circuit.num_vars))
        missing = jnp.ones(x.shape, bool)
    x, missing = circuit.check_data(x, missing)
    return _top_down(circuit, params, x, missing, jax.random.key(0), True)
