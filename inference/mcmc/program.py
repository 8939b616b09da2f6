"""Metropolis–Hastings over any :class:`ppl.Program`: potentials (hard and soft, token- or
sequence-level, host-side scorers), stop strings, step-level programs, a power alpha.

Target: the program's pi(x) ∝ gamma(x) = p(x)^alpha phi(x) over finished continuations (or,
as an SMC move at step t, the SMC's intermediate target gamma_t over continuations that
finished within t transitions or took exactly t, with gamma_t(x) = prod_{s<=t} e^{target_s}
times the potential's boundary terms — the same for every proposal).

One step of a chain at x (n tokens):

1. the ``move`` picks a position m with probability P(m | x) (:mod:`.moves`: uniform
   ``suffix`` or ``independent``, m = 0);
2. x' keeps x_{:m} and continues with the program's transitions drawn from the ``proposal``
   (any :mod:`ppl.proposals` proposal: the LM, the LM at a temperature, the locally optimal
   q ∝ p^alpha phi_next, a learned one) until it finishes (or until step t);
3. x' is accepted with probability min(1, r),

    log r = [log gamma(x') - log q(x'_{m:} | x_{:m})] - [log gamma(x) - log q(x_{m:} | x_{:m})]
          + log P(m | x') - log P(m | x).

Both brackets come from one replay of 2n rows through the program (:mod:`inference.smc.replay`):
rows that follow x_{:m} then draw from q, and rows that follow x in full, the tokens before m
weighted by their target increments and those after by the real proposal weight
target(v) - log q(v). Since every transition of the program adds its exact increment (token-level
potential, boundary scores of sequence-level and host-side potentials, the cap check, stop
strings), the ratio is exact for any program. The potential's state cannot be rewound, so the
prefix is replayed (forced) from the prompt: a step costs about 2 (n + n') forward transitions
where the LM-only kernel of :mod:`.kernel` costs n' - m.

A reward-tilted target exp(r(x) / beta) with a host-side reward model r (QUEST-style) is a
program whose potential is :class:`ppl.FinalReward` (called through a callback at the end of
each proposal): pass it here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from genppl.models.interface import map_particles, InputError, check_positive_int
from genppl.ppl.program import Program, ProgramState, where_rows
from genppl.ppl.proposals import locally_optimal

from ..smc.replay import Guided, replay
from . import moves as moves_lib

__all__ = ["ProgramMH", "ProgramMHInfo", "ProgramMove", "program_mh", "program_move"]


@struct.dataclass
class ProgramMHInfo:
    """One MH step per chain: accepted, log_ratio (log r), position (m), proposed_ids [n, L] and
    proposed_length [n] (the proposal x'), proposed_tokens (LM transitions spent)."""

    accepted: jax.Array
    log_ratio: jax.Array
    position: jax.Array
    proposed_ids: jax.Array
    proposed_length: jax.Array
    proposed_tokens: jax.Array


@dataclasses.dataclass(frozen=True)
class ProgramMH:
    """``kernel(key, particles, program, num_steps=None) -> (particles, info)``; build with
    :func:`program_mh`. ``particles``: the chains' :class:`ProgramState` (every one finished,
    or at SMC stage ``num_steps``)."""

    move: Callable = moves_lib.Suffix()
    proposal: Callable = dataclasses.field(default_factory=locally_optimal)

    def __call__(self, key, particles: ProgramState, program: Program, num_steps=None):
        n = particles.done.shape[0]
        width = program.max_new_tokens
        k_pos, k_rep, k_acc = jax.random.split(key, 3)
        tokens = particles.lm.generated_ids(width)
        length = particles.lm.num_generated
        m = jnp.clip(self.move(k_pos, length), 0, jnp.maximum(length - 1, 0)).astype(jnp.int32)
        guided = Guided(self.proposal, jnp.concatenate([tokens, tokens]), jnp.concatenate([m, length]),
                        jnp.concatenate([m, m]), True)
        end, total, spent = replay(program, program.init(2 * n), guided, k_rep, num_steps)
        new = map_particles(lambda x: x[:n], end)
        back = map_particles(lambda x: x[n:], end)
        w_new, w_old = total[:n], total[n:]
        length_new = new.lm.num_generated
        log_r = (w_new - w_old) + self.move.log_prob(m, length_new) - self.move.log_prob(m, length)
        # the current sequence outside the support (never, from a valid start): any valid move
        log_r = jnp.where(jnp.isneginf(w_old) & jnp.isfinite(w_new), jnp.inf, log_r)
        bad = jnp.isnan(log_r) | (new.fault >= 0) | (back.fault >= 0) | ~jnp.isfinite(w_new)
        log_r = jnp.where(bad, -jnp.inf, log_r)
        active = length > 0
        accept = active & (jnp.log(jax.random.uniform(k_acc, (n,))) < log_r)
        moved = where_rows(accept, new, particles)
        fault = jnp.where(particles.fault >= 0, particles.fault, new.fault)
        moved = moved.replace(fault=fault)
        info = ProgramMHInfo(accept, log_r, m, new.lm.generated_ids(width), length_new,
                             jnp.sum(spent).astype(jnp.int32))
        return moved, info


def program_mh(move: Callable | None = None, proposal: Callable | None = None) -> ProgramMH:
    """MH over any program's target (see the module docstring). move: default
    :func:`moves.suffix`; proposal: a :mod:`ppl.proposals` proposal (default locally optimal)."""
    move = moves_lib.suffix() if move is None else move
    moves_lib.check_move(move)
    proposal = locally_optimal() if proposal is None else proposal
    if not callable(proposal):
        raise InputError(f"proposal must be a ppl.proposals proposal (program, state, target) -> (log q, log w), "
                         f"got {proposal!r}")
    return ProgramMH(move, proposal)


@dataclasses.dataclass(frozen=True)
class ProgramMove:
    """``num_steps`` :class:`ProgramMH` steps as an SMC resample-move: at SMC step t the chains
    target the intermediate target gamma_t (proposals replay t transitions), which leaves the
    SMC's weights and its log Z estimate valid for any program."""

    num_steps: int = 1
    kernel: ProgramMH = dataclasses.field(default_factory=ProgramMH)

    def __call__(self, key, program: Program, particles: ProgramState, step=None) -> ProgramState:
        if step is None:
            raise InputError("ProgramMove needs the SMC step (smc.build_kernel(move=...) passes it)")
        stage = jnp.asarray(step, jnp.int32)

        def move(particles):
            def body(i, particles):
                return self.kernel(jax.random.fold_in(key, i), particles, program, stage)[0]
            return jax.lax.fori_loop(0, self.num_steps, body, particles)

        return jax.lax.cond(stage > 0, move, lambda p: p, particles)


def program_move(num_steps: int = 1, move: Callable | None = None, proposal: Callable | None = None) -> ProgramMove:
    """A resample-move for ``smc.build_kernel(move=...)`` on any program: ``num_steps`` MH
    steps (``move``, ``proposal``: see :func:`program_mh`) at every SMC step."""
    return ProgramMove(check_positive_int(num_steps, "num_steps"), program_mh(move, proposal))
