"""Built-in token-level constraints (hard potentials: log phi is 0 or -inf)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError

from .potential import Potential


class TokenMask(Potential):
    """Only tokens in ``allowed`` (a [V] bool mask or a list of ids) may be generated.

    EOS is governed by the mask too: leave it allowed unless finishing is forbidden.
    """

    token_level = True

    def __init__(self, allowed, vocab_size: int | None = None):
        allowed = np.asarray(allowed)
        if allowed.dtype != bool:
            if vocab_size is None:
                raise InputError("give vocab_size when the mask is a list of token ids")
            mask = np.zeros((vocab_size,), bool)
            mask[allowed.astype(int)] = True
            allowed = mask
        self.allowed = jnp.asarray(allowed)

    def logw_next(self, pstate, lm_state):
        row = jnp.where(self.allowed, 0.0, -jnp.inf)
        return jnp.broadcast_to(row, lm_state.logits.shape)

    def __repr__(self) -> str:
        return f"TokenMask({int(self.allowed.sum())}/{self.allowed.shape[0]} allowed)"


class BannedTokens(Potential):
    """These token ids may never be generated."""

    token_level = True

    def __init__(self, token_ids):
        self.token_ids = tuple(int(t) for t in token_ids)

    def logw_next(self, pstate, lm_state):
        logw = jnp.zeros(lm_state.logits.shape, jnp.float32)
        return logw.at[:, jnp.array(self.token_ids, jnp.int32)].set(-jnp.inf)

    def __repr__(self) -> str:
        return f"BannedTokens({list(self.token_ids)})"


class MinLength(Potential):
    """At least ``n`` tokens before EOS (a sequence cut at the cap must also have them)."""

    token_level = True

    def __init__(self, n: int, eos_id: int):
        self.n, self.eos_id = int(n), int(eos_id)

    def logw_next(self, pstate, lm_state):
        short = lm_state.num_generated < self.n
        logw = jnp.zeros(lm_state.logits.shape, jnp.float32)
        return logw.at[:, self.eos_id].set(jnp.where(short, -jnp.inf, 0.0))

    def logw_cap(self, pstate, lm_state):
        return jnp.where(lm_state.num_generated < self.n, -jnp.inf, 0.0)

    def __repr__(self) -> str:
        return f"MinLength({self.n})"


class MaxLength(Potential):
    """At most ``n`` tokens before EOS: after ``n`` tokens only EOS is allowed."""

    token_level = True

    def __init__(self, n: int, eos_id: int):
        self.n, self.eos_id = int(n), int(eos_id)

    def logw_next(self, pstate, lm_state):
        full = (lm_state.num_generated >= self.n)[:, None]
        is_eos = jnp.arange(lm_state.logits.shape[-1]) == self.eos_id
        return jnp.where(full & ~is_eos[None], -jnp.inf, 0.0)

    def logw_cap(self, pstate, lm_state):
        return jnp.where(lm_state.num_generated > self.n, -jnp.inf, 0.0)

    def __repr__(self) -> str:
        return f"MaxLength({self.n})"
