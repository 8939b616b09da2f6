"""Conditional SMC, particle Gibbs and particle Gibbs with ancestor sampling (PGAS) over any
:class:`ppl.Program` (token- or step-level, with potentials, stop strings, a power alpha).

Target: the program's pi(x) ∝ gamma(x) = p(x)^alpha phi(x) over finished continuations.

**Conditional SMC** (CSMC) with N particles and a retained reference x* (a finished sequence):
row 0 always follows x* (its tokens forced, weighted by the real proposal weights
target(v) - log q(v), see :mod:`.replay`), rows 1..N-1 are ordinary SMC particles. Before
every step but the first, all particles are resampled: the free rows' ancestors are drawn
i.i.d. from the normalised weights (conditional multinomial resampling), row 0's ancestor is

* 0 (particle Gibbs, PG), or
* b with probability ∝ W_b gamma(x^b_{1:t-1} ++ x*_{t:}) / gamma_{t-1}(x^b_{1:t-1})
  (ancestor sampling, PGAS), where x*_{t:} are the reference's remaining steps and
  gamma_{t-1} = prod_{s<t} e^{target_s} is the SMC's intermediate target after t-1 steps
  (it does not depend on the proposal: q_s(v) G_s(v) = e^{target_s(v)}). The ratio is
  computed by replaying the reference's remaining tokens from every particle in target mode
  (:func:`.replay.replay`); a joined sequence that is not a valid path (a finished particle
  joined to an unfinished reference, the cap or a stop string hit before the reference's end)
  gets probability 0. The reference then becomes x^b_{1:t-1} ++ x*_{t:}.

After resampling every log-weight is set to the log-mean-exp of the old ones (so

    log Z_hat = log (1/N) sum_i exp(logw_i)   after the last step

is the usual product of weighted mean increments). Finished particles are absorbing.

**Particle Gibbs**: one iteration runs CSMC conditioned on the current reference and draws the
next reference x' = x^k with k ~ Categorical(W_T) from the final weights. The kernel
x* -> x' leaves pi invariant (Andrieu, Doucet & Holenstein 2010; with ancestor sampling,
Lindsten, Jordan & Schön 2014), for any N >= 2.

**Upper bound on log Z**: with x* ~ pi, E[1 / Z_hat_CSMC] = 1 / Z, so by Jensen
E[log Z_hat_CSMC] >= log Z, while E[log Z_hat_SMC] <= log Z. See :mod:`.bounds`.

Cost: CSMC costs what SMC costs (one transition per particle and step). Ancestor sampling
replays the reference's remaining tokens from every particle at every step: about N T^2 / 2
extra tokens for sequences of T tokens (the LM's state is not Markov, so the reference's
future must be rescored under each candidate history).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from genppl.models.interface import map_particles, InputError
from genppl.ppl.program import Program, ProgramState
from genppl.ppl.proposals import locally_optimal

from .kernel import SMCState, finish_step, sweep
from .replay import Guided, replay
from .resampling import log_mean_exp, multinomial

__all__ = ["CSMCState", "ConditionalKernel", "PGInfo", "PGState", "ParticleGibbs", "build_kernel",
           "conditional_sweep", "particle_gibbs"]


@struct.dataclass
class CSMCState:
    """Conditional SMC particles: as :class:`SMCState`, plus the ``reference`` [L] generated ids
    that row 0 follows, its ``reference_length`` and ``tokens``: LM transitions spent so far
    (rows extended, plus the ancestor-sampling replays)."""

    particles: ProgramState
    logw: jax.Array
    step: jax.Array
    reference: jax.Array
    reference_length: jax.Array
    tokens: jax.Array

    @property
    def log_z(self) -> jax.Array:
        return log_mean_exp(self.logw)


def _guided(proposal, reference, length, n: int):
    width = reference.shape[0]
    return Guided(proposal, jnp.broadcast_to(reference, (n, width)),
                  jnp.zeros((n,), jnp.int32).at[0].set(length), jnp.zeros((n,), jnp.int32), True)


def ancestor_log_weights(key, program: Program, particles: ProgramState, reference, length, proposal):
    """For every particle b: (log gamma(x^b ++ rest) - log gamma_t(x^b) [n] (-inf where the
    join is not a valid path), joined ids [n, L], joined lengths [n], tokens replayed), where
    ``rest`` is the reference's part after row 0's current position."""
    width = program.max_new_tokens
    n = particles.done.shape[0]
    done_ref = particles.lm.num_generated[0]
    own = particles.lm.generated_ids(width)
    own_len = particles.lm.num_generated
    j = jnp.arange(width)[None, :]
    src = jnp.clip(done_ref + j - own_len[:, None], 0, width - 1)
    joined = jnp.where(j < own_len[:, None], own, reference[src])
    joined_len = own_len + (length - done_ref)
    guided = Guided(proposal, joined, joined_len, jnp.full((n,), width + 1, jnp.int32), False)
    end, total, spent = replay(program, particles, guided, key)
    valid = end.done & (end.lm.num_generated == joined_len) & (joined_len <= width)
    return jnp.where(valid & ~jnp.isnan(total), total, -jnp.inf), joined, joined_len, jnp.sum(spent)


@dataclasses.dataclass(frozen=True)
class ConditionalKernel:
    """``kernel(key, state: CSMCState, program) -> (state, SMCInfo)``: one conditional SMC step;
    build with :func:`build_kernel`."""

    proposal: Callable = dataclasses.field(default_factory=locally_optimal)
    ancestor_sampling: bool = False

    def __call__(self, key, state: CSMCState, program: Program):
        n = state.logw.shape[0]
        k_res, k_anc, k_replay, k_step = jax.random.split(key, 4)
        resampled = state.step > 0

        def resample(state):
            ancestors = multinomial(k_res, state.logw, n).astype(jnp.int32)
            reference, length, spent = state.reference, state.reference_length, jnp.zeros((), jnp.int32)
            b = jnp.zeros((), jnp.int32)
            if self.ancestor_sampling:
                log_r, joined, joined_len, spent = ancestor_log_weights(
                    k_replay, program, state.particles, state.reference, state.reference_length, self.proposal)
                b = jax.random.categorical(k_anc, state.logw + log_r).astype(jnp.int32)
                reference, length = joined[b], joined_len[b]
            ancestors = ancestors.at[0].set(b)
            particles = map_particles(lambda x: x[ancestors], state.particles)
            return particles, jnp.full_like(state.logw, log_mean_exp(state.logw)), ancestors, reference, length, spent

        def keep(state):
            return (state.particles, state.logw, jnp.arange(n, dtype=jnp.int32), state.reference,
                    state.reference_length, jnp.zeros((), jnp.int32))

        particles, logw, ancestors, reference, length, spent = jax.lax.cond(resampled, resample, keep, state)
        before = particles.lm.num_generated
        particles, inc = program.step(k_step, particles, _guided(self.proposal, reference, length, n))
        spent = spent + jnp.sum(particles.lm.num_generated - before)
        smc_state, info = finish_step(SMCState(state.particles, state.logw, state.step), particles, logw + inc,
                                      ancestors, resampled)
        return CSMCState(smc_state.particles, smc_state.logw, smc_state.step, reference, length,
                         state.tokens + spent), info


def build_kernel(proposal: Callable | None = None, ancestor_sampling: bool = False) -> ConditionalKernel:
    """The conditional SMC step (resampling at every step after the first, conditional
    multinomial), with the reference's ancestor drawn (``ancestor_sampling=True``, PGAS) or kept."""
    proposal = locally_optimal() if proposal is None else proposal
    if not callable(proposal):
        raise InputError(f"proposal must be a function (program, state, target) -> (log q, log w), got {proposal!r}")
    if not isinstance(ancestor_sampling, bool):
        raise InputError(f"ancestor_sampling must be True or False, got {ancestor_sampling!r}")
    return ConditionalKernel(proposal, ancestor_sampling)


def conditional_sweep(kernel: ConditionalKernel, program: Program, reference, length, n: int, key):
    """Conditional SMC from the prompt with ``n`` particles (row 0 follows ``reference`` [L],
    ``length`` tokens) until every particle has finished. Pure and traceable; returns the
    final :class:`CSMCState` and the stacked :class:`SMCInfo`."""
    particles = program.init(n)
    state = CSMCState(particles, jnp.zeros((n,), jnp.float32), jnp.zeros((), jnp.int32),
                      jnp.asarray(reference, jnp.int32), jnp.asarray(length, jnp.int32), jnp.zeros((), jnp.int32))
    return sweep(kernel, program, state, key)


@struct.dataclass
class PGState:
    """One particle-Gibbs chain: the current sequence's generated ids [L] and length."""

    reference: jax.Array
    length: jax.Array


@struct.dataclass
class PGInfo:
    """One PG iteration: ``log_z`` (the CSMC estimate log Z_hat given the old reference),
    ``changed`` (the new sequence differs), ``log_p`` (log p of the new sequence under the
    LM), ``tokens`` (LM transitions spent), ``ess``, ``resampled`` and ``ancestors`` per step
    of the CSMC sweep."""

    log_z: jax.Array
    log_p: jax.Array
    changed: jax.Array
    tokens: jax.Array
    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array


@dataclasses.dataclass(frozen=True)
class ParticleGibbs:
    """``kernel(key, state: PGState, program) -> (state, PGInfo)``: one particle-Gibbs
    iteration with ``num_particles`` CSMC particles; build with :func:`particle_gibbs`."""

    num_particles: int
    conditional: ConditionalKernel

    def __call__(self, key, state: PGState, program: Program):
        k_sweep, k_pick = jax.random.split(key)
        width = program.max_new_tokens
        final, infos = conditional_sweep(self.conditional, program, state.reference, state.length,
                                         self.num_particles, k_sweep)
        k = jax.random.categorical(k_pick, final.logw)
        ids = final.particles.lm.generated_ids(width)[k]
        length = final.particles.lm.num_generated[k]
        new = PGState(ids, length)
        changed = (length != state.length) | jnp.any(ids != state.reference)
        return new, PGInfo(final.log_z, final.particles.log_p[k], changed, final.tokens, infos.ess, infos.resampled, infos.ancestors)

    def init(self, program: Program, token_ids) -> PGState:
        """A chain at the finished continuation ``token_ids`` (host-side; checked: it must be
        finished under the program — EOS, a stop string or the cap — and have target > 0)."""
        ids = [int(t) for t in token_ids]
        width = program.max_new_tokens
        if not ids or len(ids) > width:
            raise InputError(f"a reference needs 1 to max_new_tokens={width} tokens, got {len(ids)}")
        log_gamma, finished = log_target(program, [ids])
        if not bool(finished[0]) or not bool(jnp.isfinite(log_gamma[0])):
            raise InputError(f"the reference {ids} is not a finished continuation with positive target under "
                             "the program (it must end with EOS, a stop string or at max_new_tokens, and satisfy "
                             "the constraints): start from an SMC particle instead")
        return PGState(jnp.asarray(ids + [0] * (width - len(ids)), jnp.int32), jnp.asarray(len(ids), jnp.int32))


def log_target(program: Program, sequences):
    """log gamma(x) = alpha log p(x) + log phi(x) of each sequence (list of generated-id lists)
    under ``program``, by a forced replay; and whether each replay ended finished exactly at
    its last token. Eager helper (not jitted)."""
    width = program.max_new_tokens
    tokens = jnp.asarray([list(s) + [0] * (width - len(s)) for s in sequences], jnp.int32)
    lengths = jnp.asarray([len(s) for s in sequences], jnp.int32)
    return score_jit(program, tokens, lengths)


def score(program: Program, tokens, lengths):
    """Traceable core of :func:`log_target`: ``tokens`` [n, L] generated ids, ``lengths`` [n]."""
    n, width = tokens.shape
    guided = Guided(locally_optimal(), tokens, lengths, jnp.full((n,), width + 1, jnp.int32), False)
    state, total, _ = replay(program, program.init(n), guided, jax.random.key(0))
    finished = state.done & (state.lm.num_generated == lengths)
    return jnp.where(finished, total, -jnp.inf), finished


# the program is traced: new prompts and equal-shaped potentials reuse the compiled replay
score_jit = jax.jit(score)


def particle_gibbs(num_particles: int, proposal: Callable | None = None,
                   ancestor_sampling: bool = False) -> ParticleGibbs:
    """Particle Gibbs (``ancestor_sampling=True``: PGAS) with ``num_particles`` >= 2 CSMC
    particles and ``proposal`` (default locally optimal), as a hashable MCMC kernel over
    finished sequences. Run chains with :func:`inference.smc.run_particle_gibbs`."""
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 2:
        raise InputError(f"particle Gibbs needs num_particles >= 2 (one is the reference), got {num_particles!r}")
    return ParticleGibbs(num_particles, build_kernel(proposal, ancestor_sampling))
