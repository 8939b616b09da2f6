"""Sampling from a proposal and teacher forcing through a program, both pure and traceable.

* :func:`rollout`: n independent sequences from a proposal (importance sampling, no
  resampling), with log w(x) = log pi_unnorm(x) - log q(x) = sum_t log G_t;
* :func:`trace`: given sequences x [B, L] teacher-forced through the program, recording per
  step t the log q(x_t | x_<t) of the token, its target increment log G_t + log q(x_t | x_<t)
  (alpha log p + potentials, twists included, plus the cap and end-of-sequence increments),
  log q and log target of finishing there (EOS), and the twist log psi(x_<=t). Sums over t
  give log q(x) and log pi_unnorm(x); it is differentiable in the program's leaves (the
  guide's parameters inside its GuidedLM), which is what every objective needs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from genppl.distributed import constrain
from genppl.models.lora import GuidedLM
from genppl.ppl.proposals import locally_optimal

__all__ = ["Trace", "generated_tokens", "rollout", "trace"]


def generated_tokens(program, state) -> jax.Array:
    """[n, max_new_tokens] generated ids, EOS-padded past each particle's end."""
    return state.lm.generated_ids(program.max_new_tokens, pad=program.lm.eos_id)


def rollout(program, key, n: int, proposal=locally_optimal()):
    """n independent samples from ``proposal``: (tokens [n, L], log w [n]) with
    log w = log pi_unnorm(x) - log q(x). Pure (``n`` static); call it inside jit."""
    state = program.init(n)

    def body(carry, k):
        state, logw = carry
        state = constrain(state)  # on a mesh (genppl.distributed.on): samples split over its data axis
        state, inc = program.step(k, state, proposal)
        return (state, logw + inc), None

    keys = jax.random.split(key, program.max_new_tokens)
    (state, logw), _ = jax.lax.scan(body, (state, jnp.zeros((n,), jnp.float32)), keys)
    return generated_tokens(program, state), logw


@struct.dataclass
class Trace:
    """Per-step records of sequences teacher-forced through a program, each [B, L].

    moving: the step extends an unfinished sequence; log_q: log q of its token;
    target: its target increment (alpha log p + potentials, twists included, plus the cap
    and end-of-sequence increments); log_q_eos / target_eos: the same for finishing there
    (EOS); twist: log psi of the prefix after the token (0 without a twist or after the end).
    ``eos`` [B]: ended with EOS; ``done`` [B]: finished.
    """

    moving: jax.Array
    log_q: jax.Array
    target: jax.Array
    log_q_eos: jax.Array
    target_eos: jax.Array
    twist: jax.Array
    eos: jax.Array
    done: jax.Array

    @property
    def log_q_total(self):
        """log q(x) [B]."""
        return jnp.sum(jnp.where(self.moving, self.log_q, 0.0), -1)

    @property
    def log_target_total(self):
        """log pi_unnorm(x) [B] (the twists telescope away)."""
        return jnp.sum(jnp.where(self.moving, self.target, 0.0), -1)


def trace(program, tokens, proposal=locally_optimal()) -> Trace:
    """Teacher-force ``tokens`` [B, L] (EOS-padded) through ``program`` with ``proposal``
    (the q whose log-probabilities are recorded); see :class:`Trace`. Pure and differentiable
    in the leaves of ``program``."""
    B = tokens.shape[0]
    state = program.init(B)
    eos = program.lm.eos_id
    rows = jnp.arange(B)
    twisted = isinstance(program.lm, GuidedLM) and program.lm.twist is not None

    def body(state, tok):
        state = constrain(state)  # on a mesh: sequences split over its data axis
        moving = ~state.done
        logp, target = program.next_token_weights(state)
        logq, _ = proposal(program, state, target)
        lq, tg = logq[rows, tok], target[rows, tok]
        new, inc, _ = program.append(state, tok, tg, logp[rows, tok], moving)
        new, inc = program.boundary(new, inc, new.done & ~state.done)
        psi = state.lm.cache["twist"][rows, tok] if twisted else jnp.zeros((B,), jnp.float32)
        psi = jnp.where(moving & ~new.done, psi, 0.0)
        out = (moving, lq, jnp.where(moving, inc, 0.0), logq[:, eos], target[:, eos], psi)
        return new, out

    state, out = jax.lax.scan(body, state, jnp.asarray(tokens, jnp.int32).T)
    out = [jnp.swapaxes(o, 0, 1) for o in out]
    return Trace(*out, eos=state.eos, done=state.done)
