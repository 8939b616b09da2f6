"""Replaying known token sequences through a :class:`ppl.Program`: the building block of
conditional SMC, ancestor sampling and MH over any program.

:class:`Guided` wraps a proposal q (:mod:`ppl.proposals`) so that some rows follow given
tokens. For row r at generated position j (``state.lm.num_generated``):

* ``j < forced_until[r]``: the token is ``tokens[r, j]`` (a one-hot proposal), and the
  incremental log-weight is either the *real* one of q, ``target(v) - log q(v)`` (the row is a
  particle of an SMC run with proposal q: the retained trajectory of conditional SMC), when
  ``j >= scored_from[r]``, or the *target* increment ``target(v)`` itself when
  ``j < scored_from[r]``;
* ``j >= forced_until[r]``: the token is drawn from q with its real weight (``free``), or the
  row dies (``free=False``: weight -inf), which marks a replay that ran past its tokens.

Summed over a finished sequence x, the program's increments (token, boundary and cap terms)
satisfy sum_t [log G_t + log q_t(x_t)] = log gamma(x) = log p(x)^alpha phi(x), whatever q is
(with the locally optimal q, log G_t = log sum_v e^{target(v)} and log q_t(v) = target(v) -
log G_t). So a replay with ``scored_from = m`` returns log gamma(x) - log q(x_{m:} | x_{:m}),
and one with every forced token in target mode returns log gamma(x) (or, from an
intermediate state, the ratio log gamma(x) - log gamma(x_{:j}) of the SMC's intermediate
targets, which is what ancestor sampling needs).

:func:`replay` runs ``program.step`` with a proposal a fixed number of times or until every
row has finished, summing the increments. Everything is traceable.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genppl.ppl.program import Program, ProgramState
from genppl.ppl.proposals import locally_optimal

__all__ = ["Guided", "force", "replay"]


@dataclasses.dataclass(frozen=True)
class Guided:
    """A proposal that forces known tokens on some rows (see the module docstring).

    proposal: the real proposal q; tokens [n, L] int32 generated ids to follow;
    forced_until [n]: follow them at generated positions below this; scored_from [n]: forced
    tokens below this get the target increment as weight, the others q's real weight;
    free: past ``forced_until``, draw from q (True) or kill the row (False).
    """

    proposal: Callable
    tokens: jax.Array
    forced_until: jax.Array
    scored_from: jax.Array
    free: bool = True

    def __call__(self, program, state: ProgramState, target):
        log_q, log_w = self.proposal(program, state, target)
        n, vocab = target.shape
        log_w = jnp.broadcast_to(log_w, (n, vocab))
        j = state.lm.num_generated
        width = self.tokens.shape[1]
        token = self.tokens[jnp.arange(n), jnp.clip(j, 0, width - 1)]
        forced = j < self.forced_until
        one_hot = jnp.where(jnp.arange(vocab)[None, :] == token[:, None], 0.0, -jnp.inf)
        if self.free:
            new_q = jnp.where(forced[:, None], one_hot, log_q)
        else:
            new_q = jnp.where(forced[:, None], one_hot, -jnp.inf)
        in_target_mode = (forced & (j < self.scored_from))[:, None]
        return new_q, jnp.where(in_target_mode, target, log_w)


def replay(program: Program, state: ProgramState, proposal: Callable, key, num_steps=None):
    """Apply ``program.step`` with ``proposal`` ``num_steps`` times (traced int; None: until
    every row has finished, at most ``max_new_tokens``). Returns (state, summed log G [n],
    tokens generated [n])."""
    limit = program.max_new_tokens if num_steps is None else jnp.minimum(num_steps, program.max_new_tokens)
    n = state.done.shape[0]
    start = state.lm.num_generated

    def cond(carry):
        state, _, i, _ = carry
        return (i < limit) & jnp.any(~state.done)

    def body(carry):
        state, total, i, key = carry
        key, sub = jax.random.split(key)
        state, inc = program.step(sub, state, proposal)
        return state, total + inc, i + 1, key

    init = (state, jnp.zeros((n,), jnp.float32), jnp.zeros((), jnp.int32), key)
    state, total, _, _ = jax.lax.while_loop(cond, body, init)
    return state, total, state.lm.num_generated - start


def force(program: Program, tokens, lengths, key=None) -> ProgramState:
    """Particles at the given continuations: ``tokens`` [n, L] generated ids, ``lengths`` [n],
    replayed from the prompt (their potential state, stop state and flags as the program
    computes them). Traceable."""
    n, width = tokens.shape
    guided = Guided(locally_optimal(), jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32),
                    jnp.full((n,), width + 1, jnp.int32), False)
    state, _, _ = replay(program, program.init(n), guided, jax.random.key(0) if key is None else key)
    return state
