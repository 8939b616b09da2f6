"""Adaptive tempering for Power-SMC: the exponent of each token chosen by bisection on the
conditional ESS, with exact weights.

A tempered power program (:class:`ScheduledPowerProgram`) uses the exponent ``alphas[t]`` for the
token at generated position t. Its intermediate target after t tokens is p(x_<=t)^alphas[t-1]
for an unfinished prefix and p(x)^alpha for a finished sequence, so each step adds

    (alphas[t] - alphas[t-1]) log p(x_<t) + log sum_v p(v | x_<t)^alphas[t]
    + (alpha - alphas[t]) log p(x)   if the step finishes the sequence

(:class:`PowerProgram`'s reweighting with a table instead of a linear ramp). Whatever the
table, the final target is p^alpha and Z_hat is an unbiased estimate of Z = sum_x p(x)^alpha.

Adaptive choice (in the spirit of Jasra et al. 2011; Zhou, Johansen & Aston 2016): the first
token uses ``alpha_start`` (all particles share the prompt, so any exponent keeps CESS = 1 and
the criterion cannot choose); at step t >= 1,
with normalised weights W_i and the prefix part of the increment
g_i(a) = exp[(a - alphas[t-1]) log p(x^i_<t) + log sum_v p(v | x^i_<t)^a], the conditional ESS

    CESS(a) = (sum_i W_i g_i(a))^2 / sum_i W_i g_i(a)^2        (in (0, 1]; times N particles)

is computed, and alphas[t] is alpha if CESS(alpha) >= ``target``, else the a in
[alphas[t-1], alpha] with CESS(a) = target, found by bisection. A schedule chosen from the very
particles it weights makes Z_hat slightly biased (O(1/N)); :func:`adaptive_power_smc`
therefore runs a *pilot* SMC to choose the schedule and an independent SMC with the schedule
fixed, whose weights, law (exactly p^alpha) and unbiased Z_hat are those of a fixed schedule.
Cost: the pilot's tokens on top (``pilot_particles`` x its length).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genppl.models.interface import InputError, LanguageModel, as_key, check_positive_int
from genppl.ppl.proposals import locally_optimal

from .. import smc
from ..mcmc.kernel import check_alpha
from .smc import PowerProgram

__all__ = ["AdaptiveKernel", "ScheduledPowerProgram", "adaptive_power_smc", "adaptive_schedule",
           "conditional_ess", "next_exponent"]


class ScheduledPowerProgram(PowerProgram):
    """A :class:`PowerProgram` whose exponent at generated position t is ``alphas[t]`` (a data
    leaf of length ``max_new_tokens``); finished sequences are weighted by p^alpha."""

    data_fields = PowerProgram.data_fields + ("alphas",)

    def __init__(self, lm: LanguageModel, prompt_ids, max_new_tokens: int, alpha: float = 4.0, alphas=None,
                 **kwargs):
        super().__init__(lm, prompt_ids, max_new_tokens, alpha=alpha, **kwargs)
        table = np.full(max_new_tokens, float(alpha)) if alphas is None else np.asarray(alphas, np.float64)
        if table.shape != (max_new_tokens,) or not np.all(np.isfinite(table)) or np.any(table <= 0):
            raise InputError(f"alphas must hold max_new_tokens={max_new_tokens} positive finite exponents, "
                             f"got shape {table.shape}")
        self.alphas = jnp.asarray(table, jnp.float32)

    def alpha_at(self, position) -> jax.Array:
        position = jnp.asarray(position)
        return self.alphas[jnp.clip(position, 0, self.alphas.shape[0] - 1)]


def conditional_ess(logw, log_g):
    """CESS = (sum_i W_i g_i)^2 / sum_i W_i g_i^2 in (0, 1] (W normalised from ``logw``), in logs."""
    log_w = logw - jax.nn.logsumexp(logw)
    log_g = jnp.where(jnp.isfinite(logw), log_g, 0.0)
    return jnp.exp(2 * jax.nn.logsumexp(log_w + log_g) - jax.nn.logsumexp(log_w + 2 * log_g))


def next_exponent(logw, log_p_prefix, logp_next, a_prev, alpha, target, iterations: int = 40):
    """The exponent of the next token: alpha if CESS(alpha) >= target, else the bisection root
    of CESS(a) = target in [a_prev, alpha]. ``log_p_prefix`` [n], ``logp_next`` [n, V]; rows
    with -inf weight (dead or finished particles, passed as -inf) do not count."""

    def cess(a):
        log_g = (a - a_prev) * log_p_prefix + jax.nn.logsumexp(a * logp_next, -1)
        return conditional_ess(logw, log_g)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = cess(mid) >= target
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, iterations, body, (a_prev, jnp.asarray(alpha, jnp.float32)))
    live = jnp.any(jnp.isfinite(logw))
    return jnp.where(~live | (cess(alpha) >= target), alpha, lo)


@struct.dataclass
class AdaptiveState:
    """SMC state plus the exponents chosen so far (``alphas`` [max_new_tokens])."""

    particles: object
    logw: jax.Array
    step: jax.Array
    alphas: jax.Array

    @property
    def log_z(self):
        return smc.log_mean_exp(self.logw)


@dataclasses.dataclass(frozen=True)
class AdaptiveKernel:
    """An SMC step on a :class:`ScheduledPowerProgram` that first sets ``alphas[t]`` by
    :func:`next_exponent` (the pilot of :func:`adaptive_power_smc`)."""

    base: smc.SMCKernel
    target: float = 0.5

    def __call__(self, key, state: AdaptiveState, program: ScheduledPowerProgram):
        t = state.step
        particles = state.particles
        logp = jax.nn.log_softmax(particles.lm.logits.astype(jnp.float32), -1)
        counted = jnp.where(particles.done, -jnp.inf, state.logw)
        a_prev = state.alphas[jnp.maximum(t - 1, 0)]
        # the first token: every particle is at the prompt (CESS = 1 for any exponent), so the
        # ramp starts from alpha_start; later exponents move only as far as the CESS allows
        a = jnp.where(t == 0, jnp.minimum(program.alpha_start, program.alpha),
                      next_exponent(counted, particles.log_p, logp, a_prev, program.alpha, self.target))
        alphas = state.alphas.at[jnp.minimum(t, state.alphas.shape[0] - 1)].set(a)
        new, info = self.base(key, smc.SMCState(particles, state.logw, state.step), program.replace(alphas=alphas))
        return AdaptiveState(new.particles, new.logw, new.step, alphas), info


def adaptive_schedule(program: ScheduledPowerProgram, n: int, key, target: float = 0.5, **kernel_options):
    """Run the pilot SMC (``n`` particles) choosing every exponent adaptively; returns the
    schedule [max_new_tokens] (positions the pilot never reached get alpha) and the pilot's
    :class:`smc.SMCResult`."""
    base = smc.build_kernel(proposal=locally_optimal(), **kernel_options)
    kernel = AdaptiveKernel(base, float(target))
    start = smc.init(program, n)
    state = AdaptiveState(start.particles, start.logw, start.step, jnp.full_like(program.alphas, program.alpha))
    state, infos = pilot_jit(kernel, program, state, key)
    steps = int(state.step)
    table = np.asarray(state.alphas, np.float64)
    table[steps:] = float(program.alpha)
    pilot = smc.SMCResult.from_run(program, smc.SMCState(state.particles, state.logw, state.step), infos,
                                   method="adaptive-tempering pilot")
    return table, pilot


pilot_jit = jax.jit(smc.sweep, static_argnums=0)


def adaptive_power_smc(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *, alpha: float = 4.0,
                       alpha_start: float = 1.0, target_ess: float = 0.5, pilot_particles: int | None = None,
                       resampling_fn=smc.systematic, ess_threshold: float = 0.5, mesh=None,
                       resampling: str = "global") -> smc.SMCResult:
    """Power-SMC for p^alpha with an adaptively tempered exponent (see the module docstring):
    a pilot SMC with ``pilot_particles`` (default n) chooses alphas[t] so that the conditional
    ESS of each reweighting is ``target_ess``; an independent SMC with that schedule fixed
    gives the particles and an unbiased log Z_hat. The result's ``schedule`` is the table and
    ``pilot_tokens`` the pilot's generated tokens. ``mesh`` and ``resampling``: the second
    (estimating) run on many devices, as in :func:`inference.smc.run`; the pilot, which only
    chooses the schedule, runs on one device.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import power
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> result = power.adaptive_power_smc(lm, [1], 16, 3, key=0, alpha=4.0)
    >>> bool(result.log_z <= 0.0) and len(result.schedule) == 3
    True
    """
    check_alpha(alpha)
    check_positive_int(n, "n")
    if not (isinstance(target_ess, (int, float)) and 0.0 < target_ess < 1.0):
        raise InputError(f"target_ess must lie in (0, 1), got {target_ess!r}")
    pilot_particles = n if pilot_particles is None else check_positive_int(pilot_particles, "pilot_particles")
    k_pilot, k_run = jax.random.split(as_key(key))
    program = ScheduledPowerProgram(lm, prompt_ids, max_new_tokens, alpha=alpha, alpha_start=alpha_start)
    table, pilot = adaptive_schedule(program, pilot_particles, k_pilot, target_ess,
                                     resampling_fn=resampling_fn, ess_threshold=ess_threshold)
    fixed = program.replace(alphas=jnp.asarray(table, jnp.float32))
    result = smc.run(fixed, n, k_run, resampling_fn=resampling_fn, proposal=locally_optimal(),
                     ess_threshold=ess_threshold, mesh=mesh, resampling=resampling)
    result.method = f"Power-SMC (alpha={alpha:g}, adaptive tempering at CESS {target_ess:g}; {result.method})"
    result.schedule = table
    result.pilot_tokens = int(sum(len(t) for t in pilot.token_ids))
    return result
