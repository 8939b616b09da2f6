"""Resample-move rejuvenation: MH steps applied to SMC particles after the resampling of each step.

For a program whose target is p(x)^alpha alone (no potential, stop strings, step delimiter
or alpha ramp), SMC's intermediate target after t steps is the stage-t law

    pi_t(x) ∝ p(x)^alpha   over sequences that end with EOS within t tokens or hold exactly t,

which is the MH kernel's stage target with cap t (:mod:`.kernel`). Applying ``num_steps`` MH
steps with cap t to every resampled particle therefore leaves pi_t invariant, and the SMC
weights and its log Z estimate stay valid. The cap must be the SMC step t itself — not the
survivors' longest length, which is below t when every surviving particle has finished: the
move would then target shorter sequences and leave particles unfinished outside the support.

:func:`rejuvenation` returns the move, a hashable function
``move(key, program, particles, step=None) -> particles`` for ``smc.build_kernel(move=...)``;
``move.check(program)`` raises when the program's target is not p^alpha alone. Non-finite
logits met by a proposal reject it and are recorded in the particles' ``fault`` (the SMC run
then reports the model fault).

For an exactly unbiased log Z_hat the SMC kernel must call the move with the step, at every
step (a move applied only when the population happened to resample, or skipped once every
particle has finished, makes the kernel depend on the population and biases Z_hat).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError, check_positive_int
from genppl.ppl.potential import Potential
from genppl.ppl.program import Program, ProgramState

from . import moves as moves_lib
from .kernel import Tempered, build_kernel, masked_sum, tempered

__all__ = ["Rejuvenation", "rejuvenation"]


@dataclasses.dataclass(frozen=True)
class Rejuvenation:
    """``num_steps`` MH steps (``move``, ``proposal``) on SMC particles; see :func:`rejuvenation`."""

    num_steps: int = 1
    move: Callable = moves_lib.Suffix()
    proposal: Callable = Tempered()

    def check(self, program: Program) -> None:
        """Raise InputError when the move would not leave the SMC targets invariant."""
        why = []
        if type(program.potential) is not Potential:
            why.append("a potential")
        if getattr(program, "stop", None) is not None:
            why.append("stop strings")
        if program.step_delimiter is not None:
            why.append("a step delimiter")
        ramp = getattr(program, "ramp_tokens", None)
        if ramp is not None and int(ramp) > 0:
            why.append("an alpha ramp")
        if why:
            raise InputError(f"MH rejuvenation targets p^alpha alone, but the program has {', '.join(why)}: "
                             "remove them, or run SMC without a move")

    def __call__(self, key, program: Program, particles: ProgramState, step=None) -> ProgramState:
        """Move the particles at SMC step ``step`` (the number of transitions taken, which is
        the token count of every unfinished particle). Without ``step`` it is read from the
        unfinished particles; when none is unfinished the move is skipped (the exact stage cap
        is then unknown)."""
        lm, width = program.lm, program.max_new_tokens
        alpha = program.alpha
        kernel = build_kernel(self.move, self.proposal)
        unfinished = ~particles.done
        if step is None:
            cap = jnp.max(jnp.where(unfinished, particles.lm.num_generated, 0))
            run = jnp.any(unfinished) & (cap > 0)
        else:
            cap = jnp.minimum(jnp.asarray(step, jnp.int32), width)
            run = cap > 0

        def rejuvenate(particles):
            chains = kernel.from_sequences(lm, particles.lm, particles.eos, alpha, width)

            def body(i, chains):
                return kernel(jax.random.fold_in(key, i), chains, lm, alpha, cap)[0]

            chains = jax.lax.fori_loop(0, self.num_steps, body, chains)
            done = chains.eos | (chains.num_tokens >= width)
            fault = getattr(particles, "fault", None)
            if fault is not None:
                # non-finite logits met by a proposal (rejected) or the rescoring: a model fault;
                # a particle stopped by a fault stays finished
                fault = jnp.where(fault >= 0, fault, chains.nonfinite)
                done = done | (particles.fault >= 0)
            moved = particles.replace(lm=chains.lm, done=done, eos=chains.eos,
                                      log_p=masked_sum(chains.logp, 0, chains.num_tokens))
            return moved if fault is None else moved.replace(fault=fault)

        return jax.lax.cond(run, rejuvenate, lambda p: p, particles)


def rejuvenation(num_steps: int = 1, move: Callable | None = None, temperature: float | None = None) -> Rejuvenation:
    """A resample-move rejuvenation move: ``num_steps`` MH steps on p^alpha after each resampling.

    move: where each MH step regenerates from (default :func:`moves.suffix`); temperature: the
    proposal's temperature (default 1/alpha). Pass the result to ``smc.build_kernel(move=...)``
    or ``power.power_smc(..., move=...)``.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import mcmc, power
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> result = power.power_smc(lm, [1], 16, 3, key=0, alpha=2.0, move=mcmc.rejuvenation(2))
    >>> bool(result.log_z <= 0.0)
    True
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    move = moves_lib.suffix() if move is None else move
    moves_lib.check_move(move)
    return Rejuvenation(num_steps, move, tempered(temperature))
