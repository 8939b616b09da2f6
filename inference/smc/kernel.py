"""The SMC kernel over a :class:`ppl.Program`: pure ``init`` / ``step``, built from functions.

The target is the program's pi(x) ∝ p(x)^alpha phi(x) over finished continuations. Each step
first resamples when ESS < ``ess_threshold * n`` (every weight then becomes the log-mean-exp
of the old ones, so their sum is kept), optionally applies a rejuvenation ``move`` (an MCMC
kernel leaving the current intermediate target pi_t invariant: pi over sequences finished
before step t or of length t), then extends every unfinished particle by one transition drawn
from the ``proposal`` and adds its incremental log-weight log G (see :mod:`ppl.program`). The
move runs at every step, not only after resampling (moving only when the population
resampled was measured to bias Z_hat: z ≈ 6 over 20,000 runs), and with a move the sweep
runs all ``max_new_tokens`` steps, since a move may turn a finished particle into an
unfinished one. The estimate

    log Z_hat = log( (1/n) sum_i exp(logw_i) )   after the last step

equals the product over steps of the weighted means of the increments,
prod_t sum_i W_{t-1,i} exp(log G_{t,i}) with W normalised, so Z_hat is unbiased for
Z = sum_x p(x)^alpha phi(x). Finished particles are absorbing (no transition, no weight); a particle
whose constraint rules out every token gets weight -inf and is never resampled.

The parts are functions (blackjax style): a resampler ``(key, logw [N], n) -> ancestors [n]``,
a proposal ``(program, state, target) -> (log q, log w)`` (:mod:`ppl.proposals`) and a move
``(key, program, particles, step) -> particles`` that leaves the intermediate target of
``step`` invariant (e.g. :func:`inference.mcmc.rejuvenation`). A resampler with an ``islands``
attribute (:func:`.islands.island_resampling`) splits the particles into that many
groups, each of which decides from its own ESS, draws its own ancestors and resets its own
weights: independent SMCs side by side, whose estimates the same log-mean-exp averages. On a
device mesh (:mod:`genppl.distributed`) :func:`sweep` pins the particles to the mesh's data axis
and the weight vector to every device at each step. :func:`build_kernel` returns a hashable kernel, so :func:`run` compiles once per
kernel configuration, particle count and table shapes — not per prompt or per potential.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from genppl.distributed import constrain, replicated
from genppl.models.batch import any_prompt, where_prompt
from genppl.ppl.batch import map_prompts, prompt_keys
from genppl.ppl.program import Program, ProgramState
from genppl.ppl.proposals import locally_optimal

from .islands import check_islands, island_flags, reset_weights
from .resampling import ess, log_mean_exp, systematic
from .validation import check_kernel_parts


@struct.dataclass
class SMCState:
    """Weighted particles: ``particles`` (every leaf leads with n), ``logw`` [n], and the
    number of steps taken."""

    particles: ProgramState
    logw: jax.Array
    step: jax.Array

    @property
    def log_z(self) -> jax.Array:
        """The current estimate of log Z (log-mean-exp of the weights)."""
        return log_mean_exp(self.logw)


@struct.dataclass
class SMCInfo:
    """What one step did: ``ancestors`` [n] (identity when it did not resample), ``ess``
    after reweighting, ``resampled``, ``log_z_increment`` (the change of log Z_hat), and
    ``fault`` [n] (the particles' :attr:`ProgramState.fault` after the step: where the model
    gave NaN or infinite logits, kept even if resampling later drops the particle). ``logw``
    [n]: the log-weights after the step; :func:`sweep` fills it from the state (a kernel may
    leave it None), so a run records every step's weights for its genealogy and figures."""

    ancestors: jax.Array
    ess: jax.Array
    resampled: jax.Array
    log_z_increment: jax.Array
    fault: jax.Array
    logw: jax.Array | None = None


def init(program: Program, n: int) -> SMCState:
    """n particles at the prompt with equal weights (the prompt cache computed once).

    For a batch of B prompts (:func:`ppl.stack`): n particles per prompt, every leaf of the
    state leading with the prompt axis ([B, n] weights, [B] step counts)."""
    particles = program.init(n)
    lead = () if program.num_prompts is None else (program.num_prompts,)
    return SMCState(particles=particles, logw=jnp.zeros(lead + (n,), jnp.float32), step=jnp.zeros(lead, jnp.int32))


def finish_step(state: SMCState, particles, logw, ancestors, resampled, fault=None) -> tuple[SMCState, SMCInfo]:
    """New state and info after a step's moves, with NaN weights turned into -inf. ``fault``:
    the faults to report, if not those of the new ``particles`` (a selection may drop them)."""
    logw = jnp.where(jnp.isnan(logw), -jnp.inf, logw)
    before, after = log_mean_exp(state.logw), log_mean_exp(logw)
    info = SMCInfo(ancestors=ancestors, ess=ess(logw), resampled=resampled,
                   log_z_increment=jnp.where(jnp.isfinite(before), after - before, after),
                   fault=particles.fault if fault is None else fault)
    return SMCState(particles=particles, logw=logw, step=state.step + 1), info


@dataclasses.dataclass(frozen=True)
class SMCKernel:
    """``kernel(key, state, program) -> (state, info)``; build with :func:`build_kernel`."""

    resampling_fn: Callable = systematic
    proposal: Callable = locally_optimal()
    ess_threshold: float = 0.5
    move: Callable | None = None

    def __call__(self, key, state: SMCState, program: Program) -> tuple[SMCState, SMCInfo]:
        n = state.logw.shape[0]
        key_resample, key_move, key_step = jax.random.split(key, 3)
        k = getattr(self.resampling_fn, "islands", 1)  # island resampling (.islands): per-island decisions
        if k == 1:
            resampled = (ess(state.logw) < self.ess_threshold * n) & jnp.isfinite(jax.nn.logsumexp(state.logw))
        else:
            check_islands(n, k)
            flags = island_flags(state.logw, self.ess_threshold, k)
            resampled = jnp.any(flags)

        def resample(particles, logw):
            # in a batch of prompts this runs when any prompt resamples: the others keep theirs
            drawn = self.resampling_fn(key_resample, replicated(logw), n).astype(jnp.int32)
            if k > 1:
                ancestors = jnp.where(jnp.repeat(flags, n // k), drawn, jnp.arange(n, dtype=jnp.int32))
                return self.resampling_fn.gather(particles, ancestors), reset_weights(logw, flags), ancestors
            ancestors = jnp.where(resampled, drawn, jnp.arange(n, dtype=jnp.int32))
            logw = jnp.where(resampled, jnp.full_like(logw, log_mean_exp(logw)), logw)
            return program.gather(particles, ancestors), logw, ancestors  # moves the filled cache only

        def keep(particles, logw):  # no gather: copying the LM cache costs as much as a step
            return particles, logw, jnp.arange(n, dtype=jnp.int32)

        particles, logw, ancestors = jax.lax.cond(any_prompt(resampled), resample, keep, state.particles, state.logw)
        if self.move is not None:  # every step: a move only when resampling would bias Z_hat
            particles = self.move(key_move, program, particles, state.step)
        particles, inc = program.step(key_step, particles, self.proposal)
        return finish_step(state, particles, logw + inc, ancestors, resampled)


def build_kernel(resampling_fn: Callable = systematic, proposal: Callable | None = None,
                 ess_threshold: float = 0.5, move: Callable | None = None) -> SMCKernel:
    """The SMC step: resample when ESS < ``ess_threshold * n`` with ``resampling_fn``, apply
    ``move(key, program, particles, step)``, extend with ``proposal`` (default: locally optimal).

    ``ess_threshold`` 0 never resamples; 1 resamples at every step with unequal weights.
    """
    proposal = locally_optimal() if proposal is None else proposal
    check_kernel_parts(resampling_fn, proposal, ess_threshold, move)
    return SMCKernel(resampling_fn, proposal, float(ess_threshold), move)


def constrain_state(state: SMCState) -> SMCState:
    """On a mesh (:func:`genppl.distributed.on`): the particles split over the data axis, the
    weight vector on every device (resampling reads all of it); a no-op otherwise."""
    return state.replace(particles=constrain(state.particles), logw=replicated(state.logw))


def sweep(kernel: Callable, program: Program, state: SMCState, key) -> tuple[SMCState, SMCInfo]:
    """Run ``kernel`` until every particle has finished (at most ``max_new_tokens`` steps).

    Pure and traceable (jit or vmap it yourself; :func:`run` jits it). Returns the final state
    and the infos stacked over ``max_new_tokens`` steps, each with the step's log-weights
    (``info.logw``); steps after the end repeat nothing (``ess`` NaN, ``resampled`` False).

    A batch of B prompts (:func:`ppl.stack`, with ``state = init(batch, n)``) runs as one
    program, the single-prompt sweep mapped over the prompt axis (:func:`ppl.map_prompts`):
    particles resample within their prompt's group, and prompt b uses the key
    ``jax.random.split(key, B)[b]`` (:func:`ppl.prompt_keys`), so it gets exactly the sweep
    of its one-prompt run with that key. Outputs then lead with the prompt axis.
    """
    if program.num_prompts is not None:
        return map_prompts(lambda one, s, k: sweep(kernel, one, s, k), program, state,
                           prompt_keys(key, program.num_prompts))
    return sweep_steps(kernel, program, state, jax.random.split(key, program.max_new_tokens))


def sweep_steps(kernel: Callable, program: Program, state: SMCState, keys, valid=None) -> tuple[SMCState, SMCInfo]:
    """The steps of :func:`sweep` with the given step keys ``keys`` [T] (one prompt): the
    sweep is ``sweep_steps(kernel, program, state, jax.random.split(key, max_new_tokens))``,
    and running its keys in consecutive slices, each from the state the last one left, gives
    the same result (how :func:`run` reports progress). ``valid`` [T] bool (optional): steps
    marked False are idle (the padding of a last, shorter slice)."""
    n = state.logw.shape[0]
    idle = SMCInfo(ancestors=jnp.arange(n, dtype=jnp.int32), ess=jnp.float32(jnp.nan),
                   resampled=jnp.zeros((), bool), log_z_increment=jnp.float32(0.0),
                   fault=jnp.full((n,), -1, jnp.int32))

    # a move may un-finish particles (it targets every sequence of the current length), so
    # with a move the sweep runs all steps even when every particle has finished
    has_move = getattr(kernel, "move", None) is not None

    def body(state, xs):
        key, ok = xs
        state = constrain_state(state)  # on a mesh: particles stay split over its data axis
        live = jnp.isfinite(jax.nn.logsumexp(state.logw)) & (jnp.any(~state.particles.done) | has_move)
        if ok is not None:
            live = live & ok

        def step(s):  # in a batch of prompts: runs while any prompt is live; the others stay idle
            new, info = kernel(key, s, program)
            return where_prompt(live, (new, info.replace(logw=None)), (s, idle))  # logw: filled below

        state, info = jax.lax.cond(any_prompt(live), step, lambda s: (s, idle), state)
        state = constrain_state(state)
        return state, info.replace(logw=state.logw)

    return jax.lax.scan(body, state, (keys, valid))
