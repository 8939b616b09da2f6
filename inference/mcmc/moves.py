"""MH moves: where a Metropolis–Hastings step starts regenerating the sequence.

A move is a function ``move(key, num_tokens [n]) -> m [n]`` (the position from which the
suffix is regenerated, 0 <= m < num_tokens) with a method ``move.log_prob(m, num_tokens) ->
[n]``, the log-probability of choosing m in a sequence of ``num_tokens`` tokens. The MH ratio
needs both directions: log P(m | x') for the reverse move and log P(m | x) for the forward one.

Built-ins (frozen dataclasses: hashable, so they are static jit arguments compared by value):

* :func:`suffix` — m uniform in {0, ..., n-1}: log P(m | x) = -log n (Karan & Du 2025);
* :func:`independent` — m = 0: the whole continuation is regenerated (independent MH);
* :func:`custom` — wrap two functions ``pick(key, num_tokens) -> m`` and
  ``log_prob(m, num_tokens) -> [n]`` as a move.

>>> import jax, jax.numpy as jnp
>>> from genppl.inference.mcmc import moves
>>> m = moves.suffix()(jax.random.key(0), jnp.array([3, 5]))
>>> bool(jnp.all((m >= 0) & (m < jnp.array([3, 5]))))
True
>>> [round(float(x), 4) for x in moves.suffix().log_prob(m, jnp.array([3, 5]))]
[-1.0986, -1.6094]
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError

__all__ = ["Custom", "Independent", "Suffix", "check_move", "custom", "independent", "suffix"]


@dataclasses.dataclass(frozen=True)
class Suffix:
    """Regenerate from a position m drawn uniformly in the current sequence."""

    def __call__(self, key, num_tokens):
        length = jnp.maximum(num_tokens, 1)
        u = jax.random.uniform(key, length.shape)
        return jnp.minimum((u * length).astype(jnp.int32), length - 1)

    def log_prob(self, m, num_tokens):
        return -jnp.log(jnp.maximum(num_tokens, 1).astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class Independent:
    """Regenerate the whole continuation (m = 0): an independent MH proposal."""

    def __call__(self, key, num_tokens):
        return jnp.zeros(jnp.shape(num_tokens), jnp.int32)

    def log_prob(self, m, num_tokens):
        return jnp.zeros(jnp.shape(num_tokens), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Custom:
    """A move from two functions: ``pick(key, num_tokens) -> m`` and
    ``log_prob(m, num_tokens) -> [n]`` (they must agree: log_prob is the log-probability
    with which ``pick`` returns m)."""

    pick: Callable
    log_prob_fn: Callable

    def __call__(self, key, num_tokens):
        return jnp.asarray(self.pick(key, num_tokens), jnp.int32)

    def log_prob(self, m, num_tokens):
        return jnp.asarray(self.log_prob_fn(m, num_tokens), jnp.float32)


def suffix() -> Suffix:
    """Uniform position in the current sequence (the default)."""
    return Suffix()


def independent() -> Independent:
    """Regenerate everything from the prompt."""
    return Independent()


def custom(pick: Callable, log_prob: Callable) -> Custom:
    """A user move from ``pick(key, num_tokens) -> m`` and ``log_prob(m, num_tokens) -> [n]``."""
    if not callable(pick) or not callable(log_prob):
        raise InputError("moves.custom needs two functions: pick(key, num_tokens) -> m and "
                         "log_prob(m, num_tokens) -> [n]")
    return Custom(pick, log_prob)


def check_move(move) -> None:
    """Raise InputError unless ``move`` is a move (callable with a ``log_prob`` method)."""
    if isinstance(move, str):
        raise InputError(f"move must be a function, not the string {move!r}: use "
                         "inference.mcmc.moves.suffix() or inference.mcmc.moves.independent()")
    if not callable(move) or not callable(getattr(move, "log_prob", None)):
        raise InputError("move must be a function (key, num_tokens) -> positions with a log_prob(m, num_tokens) "
                         f"method, e.g. inference.mcmc.moves.suffix(); got {move!r}")
