"""Sequential Monte Carlo over a :class:`ppl.Program`, one compiled program per sweep.

The kernel is blackjax-style: :func:`init` builds the particles, :func:`step` advances them by
one transition (a token, or a step up to the program's delimiter) and returns the new state;
:func:`smc` jits the whole loop (``lax.while_loop``) and returns an :class:`SMCResult`.

Weights follow ALGORITHMS.md. Each step first resamples when ESS < ``ess_threshold * n``
(every weight then becomes the log-mean-exp of the old ones, so the sum is kept), then moves
every unfinished particle and adds its incremental log-weight. The normalising-constant
estimate is

    log Z_hat = log( (1/n) sum_i exp(logw_i) )   after the last step,

which equals the product over steps of the weighted means of the increments: unbiased for
Z = sum_x p(x)^alpha phi(x). Finished particles are absorbing (no move, no weight); a particle
whose constraint rules out every token gets weight -inf and is never resampled; when every
particle dies the result says so and log Z_hat = -inf.

``selection="without_replacement"`` is the SMC-steer scheme (Lew et al. 2023): every
particle is expanded by *every* next token (child weight w_i * p(v)^alpha phi(v)), and n
children are kept by Fearnhead–Clifford selection: the heaviest children are kept with their
own weights, the rest are drawn systematically with weight (their total) / (slots left), so no
child is chosen twice and the total weight is preserved exactly. Token-level programs only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genppl.models.interface import InputError, check_positive_int
from genppl.models.sampling import TRACE_COUNTS
from genppl.ppl.program import Program, ProgramState

from .resampling import RESAMPLERS, ess, log_mean_exp
from .results import SMCResult

SELECTIONS = ("resample", "without_replacement")


@struct.dataclass
class SMCState:
    """Particles and their log-weights, with per-step history buffers of fixed length.

    ess[t]: effective sample size after step t's reweighting; resampled[t]: whether step t
    began by resampling.
    """

    particles: ProgramState
    logw: jax.Array
    ess: jax.Array
    resampled: jax.Array
    step: jax.Array

    @property
    def log_z(self) -> jax.Array:
        return log_mean_exp(self.logw)


def init(program: Program, n: int) -> SMCState:
    """n particles at the prompt with equal weights (the prompt cache computed once)."""
    particles = program.init(n)
    steps = program.max_new_tokens
    return SMCState(
        particles=particles,
        logw=jnp.zeros((n,), jnp.float32),
        ess=jnp.full((steps,), jnp.nan, jnp.float32),
        resampled=jnp.zeros((steps,), bool),
        step=jnp.zeros((), jnp.int32),
    )


def step(key, state: SMCState, program: Program, resampler: str = "systematic",
         ess_threshold: float = 0.5, selection: str = "resample", move=None) -> SMCState:
    """One SMC step: resample if the ESS is low, then move and reweight every live particle.

    move: optional rejuvenation ``move(key, program, particles) -> particles`` (e.g. an
    ``inference.MHMove``) applied right after each resampling (resample-move SMC); it must
    leave the current intermediate target invariant, which keeps log Z_hat unbiased."""
    n = state.logw.shape[0]
    key_resample, key_move = jax.random.split(key)
    if selection == "without_replacement":
        particles, logw = _select_children(key_move, program, state.particles, state.logw)
        resampled = jnp.ones((), bool)
    else:
        resampled = (ess(state.logw) < ess_threshold * n) & jnp.isfinite(jax.nn.logsumexp(state.logw))

        def resample(args):
            particles, logw = args
            idx = RESAMPLERS[resampler](key_resample, logw, n)
            particles = jax.tree.map(lambda x: x[idx], particles)
            return particles, jnp.full_like(logw, log_mean_exp(logw))

        particles, logw = jax.lax.cond(resampled, resample, lambda args: args, (state.particles, state.logw))
        if move is not None:
            key_mh = jax.random.fold_in(key_resample, 1)
            particles = jax.lax.cond(resampled, lambda p: move(key_mh, program, p), lambda p: p, particles)
        particles, inc = program.step(key_move, particles)
        logw = logw + inc
    logw = jnp.where(jnp.isnan(logw), -jnp.inf, logw)  # defensive: NaN never propagates
    t = jnp.minimum(state.step, state.ess.shape[0] - 1)
    return SMCState(
        particles=particles,
        logw=logw,
        ess=state.ess.at[t].set(ess(logw)),
        resampled=state.resampled.at[t].set(resampled),
        step=state.step + 1,
    )


def _select_children(key, program: Program, particles: ProgramState, logw):
    """SMC-steer: expand every particle by every token, keep n children (Fearnhead–Clifford)."""
    n = logw.shape[0]
    logp, target = program.next_token_weights(particles)
    vocab = target.shape[1]
    done = particles.done
    # a finished particle has exactly one child: itself, in column 0
    own = jnp.where(jnp.arange(vocab) == 0, 0.0, -jnp.inf)
    child = logw[:, None] + jnp.where(done[:, None], own[None, :], target)
    child = jnp.where(jnp.isnan(child), -jnp.inf, child).reshape(-1)
    chosen, new_logw = select_without_replacement(key, child, n)

    parent, token = (chosen // vocab).astype(jnp.int32), (chosen % vocab).astype(jnp.int32)
    particles = jax.tree.map(lambda x: x[parent], particles)
    moving = ~particles.done
    token = jnp.where(moving, token, program.lm.eos_id)
    log_p_token = logp[parent, token]
    start = particles.done
    new, inc, _ = program.append(particles, token, jnp.where(moving, new_logw, 0.0), log_p_token, moving)
    new, inc = program._boundary(new, inc, new.done & ~start)
    # `append` returns the move's weight for moving rows (with cap/boundary increments); the
    # finished rows keep their selected weight
    return new, jnp.where(moving, inc, new_logw)


def select_without_replacement(key, logw, n: int):
    """Fearnhead–Clifford selection of n of the candidates with log-weights ``logw`` [M].

    Returns (chosen [n] indices, their new log-weights [n]). The heaviest candidates (those
    with c * w >= 1, c solving sum_j min(1, c w_j) = n) are kept with their own weights; the
    rest are drawn systematically (in a random order) with weight (their total) / (slots
    left), so each is drawn at most once and E[new weight of j] = w_j. The total weight is
    preserved exactly. With fewer than n candidates of positive weight, each is split evenly
    over several slots.
    """
    if logw.shape[0] < n:  # fewer candidates than slots: pad with impossible ones
        logw = jnp.concatenate([logw, jnp.full((n - logw.shape[0],), -jnp.inf, logw.dtype)])
    total = jax.nn.logsumexp(logw)
    alive = jnp.isfinite(total)
    weights = jnp.exp(jnp.where(alive, logw - total, -jnp.inf))  # normalised
    size = weights.shape[0]

    top_w, top_idx = jax.lax.top_k(weights, n)
    num_positive = jnp.sum(weights > 0)
    # k kept deterministically: the first k with (n - k) W_(k+1) < tail mass beyond the top k
    tail = 1.0 - jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(top_w)[:-1]])
    below = (n - jnp.arange(n)) * top_w < tail
    keep = jnp.where(jnp.any(below), jnp.argmax(below), n)
    keep = jnp.minimum(keep, num_positive)
    slots = jnp.arange(n)

    # the top `keep` stay; n - keep are drawn systematically from the rest
    rest = weights.at[top_idx].set(jnp.where(slots < keep, 0.0, top_w))
    rest_mass = rest.sum()
    spacing = rest_mass / jnp.maximum(n - keep, 1)
    key_order, key_u = jax.random.split(key)
    points = (slots - keep + jax.random.uniform(key_u, ())) * spacing
    # a random order decorrelates the picks: identical parents would otherwise all give the
    # child at the same offset
    order = jax.random.permutation(key_order, size)
    cdf = jnp.cumsum(rest[order])
    points = jnp.minimum(points, cdf[-1] * (1 - 1e-6))
    drawn = order[jnp.minimum(jnp.searchsorted(cdf, points, side="right"), size - 1)]
    kept_slot = slots < keep
    chosen = jnp.where(kept_slot, top_idx, drawn)
    new_logw = jnp.where(kept_slot, logw[chosen], total + jnp.log(jnp.maximum(spacing, 1e-38)))

    # fewer live candidates than slots: split each one's weight over its copies
    few = num_positive < n
    m = jnp.maximum(num_positive, 1)
    owner = top_idx[slots % m]
    copies = n // m + ((slots % m) < (n % m))
    chosen = jnp.where(few, owner, chosen)
    new_logw = jnp.where(few, logw[owner] - jnp.log(copies.astype(jnp.float32)), new_logw)
    return chosen, jnp.where(alive, new_logw, -jnp.inf)


def _sweep_impl(program: Program, state: SMCState, key, resampler, ess_threshold, selection, move=None):
    TRACE_COUNTS["smc"] += 1
    max_steps = state.ess.shape[0]

    def cond(carry):
        state, _ = carry
        live = jnp.isfinite(jax.nn.logsumexp(state.logw))
        return (state.step < max_steps) & jnp.any(~state.particles.done) & live

    def body(carry):
        state, key = carry
        key, sub = jax.random.split(key)
        return step(sub, state, program, resampler, ess_threshold, selection, move), key

    state, _ = jax.lax.while_loop(cond, body, (state, key))
    return state


_sweep = jax.jit(_sweep_impl, static_argnums=(3, 4, 5, 6))


def smc(program: Program, n: int, key=0, *, resampler: str = "systematic",
        ess_threshold: float = 0.5, selection: str = "resample", move=None) -> SMCResult:
    """Run SMC on ``program`` with ``n`` particles until every particle has finished.

    resampler: ``"multinomial"``, ``"stratified"``, ``"systematic"`` or ``"residual"``.
    ess_threshold: resample when ESS < ess_threshold * n (0: never; 1: at every step with
    unequal weights). selection: ``"resample"`` (standard SMC) or ``"without_replacement"``
    (SMC-steer; token-level programs only). The proposal (bootstrap, locally optimal, custom)
    and any twist are part of ``program``. key: a PRNG key or an int seed. move: optional
    rejuvenation move after each resampling (resample-move), e.g. ``inference.MHMove()``.

    Compiled once per program configuration, n and options; prompts of the same padded
    length share the compiled sweep.

    >>> import jax
    >>> from genppl import models, ppl, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
    >>> result = inference.smc(program, 16, jax.random.key(1))
    >>> bool(result.log_z <= 0.0)
    True
    """
    if not isinstance(program, Program):
        raise InputError(f"smc needs a ppl.Program, got {type(program).__name__}")
    check_positive_int(n, "n")
    if resampler not in RESAMPLERS:
        raise InputError(f"unknown resampler {resampler!r}; choose one of {sorted(RESAMPLERS)}")
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) \
            or not 0.0 <= ess_threshold <= 1.0:
        raise InputError(f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}")
    if selection not in SELECTIONS:
        raise InputError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if selection == "without_replacement" and program.step_delimiter is not None:
        raise InputError("selection='without_replacement' expands every next token, so it needs a "
                         "token-level program: remove step_delimiter or use selection='resample'")
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    state = init(program, n)
    # the prompt lives in the state; keep it out of the compiled program's static config
    if move is not None:
        if selection != "resample":
            raise InputError("a rejuvenation move runs after resampling: use selection='resample'")
        if not callable(move):
            raise InputError("move must be a function (key, program, particles) -> particles, e.g. inference.MHMove()")
        if hasattr(move, "check"):
            move.check(program)
    state = _sweep(program.replace(prompt_ids=(0,)), state, key, resampler, float(ess_threshold), selection, move)
    return SMCResult.from_state(program, state, method=_describe(resampler, ess_threshold, selection))


def _describe(resampler, ess_threshold, selection) -> str:
    if selection == "without_replacement":
        return "SMC-steer (without-replacement selection)"
    return f"SMC ({resampler} resampling at ESS < {ess_threshold:g} N)"
