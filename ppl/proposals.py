"""Proposals: how a kernel draws the next token of a :class:`ppl.Program`.

A proposal is a function ``proposal(program, state, target) -> (log_q, log_w)``:

* ``target`` [n, V] is the log target increment of each next token,
  ``alpha * log p(v) + logw_next(v)`` (from :meth:`Program.next_token_weights`);
* ``log_q`` [n, V] is the proposal's normalised log-probabilities (a row of -inf: nothing
  can be proposed, the particle dies);
* ``log_w`` (broadcastable to [n, V]) is the incremental log-weight of choosing each token,
  ``target[v] - log_q[v]``, so that E_q[exp(log_w)] = sum_v exp(target[v]) whatever q is.

The built-ins are frozen dataclasses: hashable and compared by value, so passing an equal
proposal to a jitted kernel reuses its compiled program. Any function with the signature
works too (its identity then keys the compilation).

>>> import jax
>>> from genppl import models, ppl
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> program = ppl.Program(lm, [1], 3)
>>> state = program.init(2)
>>> log_q, log_w = ppl.proposals.prior()(program, state, program.next_token_weights(state)[1])
>>> log_q.shape
(2, 4)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError

__all__ = ["LocallyOptimal", "Prior", "Tempered", "FromLogQ", "locally_optimal", "prior", "tempered",
           "from_log_q"]


def _normalise(logits):
    return jax.nn.log_softmax(logits.astype(jnp.float32), -1)


def _weights(target, log_q):
    """target - log q, with tokens q cannot propose carrying no weight (never NaN)."""
    return jnp.where(jnp.isneginf(log_q), -jnp.inf, target - jnp.where(jnp.isneginf(log_q), 0.0, log_q))


@dataclasses.dataclass(frozen=True)
class LocallyOptimal:
    """q(v) ∝ exp(target[v]) = p(v)^alpha phi_next(v); weight log sum_v exp(target[v]),
    the same for every v. The proposal that keeps constrained SMC alive."""

    def __call__(self, program, state, target):
        total = jax.nn.logsumexp(target, -1, keepdims=True)
        log_q = jnp.where(jnp.isfinite(total), target - total, -jnp.inf)
        return log_q, total


@dataclasses.dataclass(frozen=True)
class Prior:
    """The LM itself (bootstrap): q = p(. | prefix); weight target[v] - log p(v)."""

    def __call__(self, program, state, target):
        log_q = _normalise(state.lm.logits)
        return log_q, _weights(target, log_q)


@dataclasses.dataclass(frozen=True)
class Tempered:
    """The LM at a temperature: q = softmax(logits / T); weight target[v] - log q(v).

    Truncation (top-k, top-p) is deliberately not offered: a proposal that never proposes
    some tokens estimates a smaller normaliser than the target's.
    """

    temperature: float

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 1e-4 <= t < math.inf:
            raise InputError(f"temperature must be a number in [1e-4, inf), got {t!r}")

    def __call__(self, program, state, target):
        logits = state.lm.logits.astype(jnp.float32)
        top = jnp.max(logits, -1, keepdims=True)
        log_q = _normalise((logits - top) / self.temperature)
        return log_q, _weights(target, log_q)


@dataclasses.dataclass(frozen=True)
class FromLogQ:
    """Wrap ``fn(program, state) -> log q [n, V]`` (e.g. a learned proposal) as a proposal;
    ``log q`` is renormalised, and the weight is target[v] - log q(v)."""

    fn: Callable

    def __post_init__(self):
        if not callable(self.fn):
            raise InputError(f"from_log_q needs a function (program, state) -> log q, got {self.fn!r}")

    def __call__(self, program, state, target):
        log_q = jax.nn.log_softmax(jnp.asarray(self.fn(program, state), jnp.float32), -1)
        return log_q, _weights(target, log_q)


def locally_optimal() -> LocallyOptimal:
    """q ∝ p^alpha * phi_next (the default of every kernel)."""
    return LocallyOptimal()


def prior() -> Prior:
    """The base LM as the proposal (bootstrap)."""
    return Prior()


def tempered(temperature: float) -> Tempered:
    """The base LM at ``temperature`` as the proposal (importance-corrected)."""
    return Tempered(temperature)


def from_log_q(fn) -> FromLogQ:
    """A proposal from a function ``(program, state) -> log q [n, V]``."""
    return FromLogQ(fn)
