"""Metropolis–Hastings over whole continuations: the pure kernel and its building blocks.

Target over finished continuations x (ending in EOS, or cut at the stage's length cap):

    pi(x) ∝ p(x | prompt)^alpha * exp(log_phi(x)),

with ``log_phi`` an optional sequence-level log-potential (e.g. a reward tilt r(x) / beta).
One MH step of a chain at x (n tokens):

1. the ``move`` picks a position m with probability P(m | x) (:mod:`.moves`);
2. the suffix from m is regenerated with the proposal q (default: the LM at temperature
   1/alpha, no truncation) until EOS or the stage cap, giving x' (n' tokens);
3. x' is accepted with probability min(1, r), computed by :func:`log_acceptance`:

    log r = alpha [log p(x'_{m:}) - log p(x_{m:})] + log_phi(x') - log_phi(x)
          + [log q(x_{m:}) + log P(m | x')] - [log q(x'_{m:}) + log P(m | x)]

   with both suffixes summed in full, EOS included; log p on the raw logits and log q on the
   proposal's distribution, in float32. For the uniform ``suffix`` move P(m | x) = 1/n.

The chain state caches the per-token log p and log q of its current sequence (both come from
the logits of the pass that generated it), so the current suffix is never rescored; the
LM's prefix cache is rewound with ``LanguageModel.truncate``. Chains are a batch.

Blackjax style: :func:`build_kernel` takes the move, the proposal and the log-potential
(functions) and returns a hashable :class:`MHKernel` whose call is the pure step
``kernel(key, state, lm, alpha, cap) -> (state, info)``; ``alpha`` and ``cap`` may be traced,
so chains with different powers share one compiled program. Non-finite logits (NaN, +inf, or
a row of -inf: a broken model, not a constraint) stop the affected proposal, which is then
rejected, and are recorded in ``MHState.nonfinite`` for the caller to report.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from genppl.models.batch import any_prompt
from genppl.models.interface import InputError, LanguageModel, LMState, nonfinite_rows
from genppl.models.sampling import categorical
from genppl.ppl.program import where_rows

from . import moves as moves_lib

__all__ = ["MAX_ALPHA", "Extension", "MHInfo", "MHKernel", "MHState", "Tempered", "build_kernel", "chains_at", "check_alpha",
           "empty", "extend", "log_acceptance", "masked_sum", "tempered"]


# ---- the acceptance ratio: one pure formula for the sampler and the exact tests ----------
def log_acceptance(alpha, logp_new, logp_old, logq_new, logq_old, log_pick_new, log_pick_old,
                   logphi_new=0.0, logphi_old=0.0, xp=jnp):
    """log r of the move x -> x' that regenerates the suffix from position m.

    logp_*: log p of the suffix from m under the raw LM (EOS included); logq_*: its log q
    under the proposal; log_pick_new: log-probability of choosing m in x' (the reverse move,
    -log n' for uniform positions), log_pick_old: of choosing m in x (-log n); logphi_*: the
    sequence-level log-potentials. ``xp`` is ``jax.numpy`` (the sampler) or ``numpy`` (exact
    float64 enumeration). Where both targets are -inf the move is free (log r = 0). The power
    multiplies the *difference* alpha (log p(x'_{m:}) - log p(x_{m:})), so a huge alpha does
    not amplify the rounding of each sum separately.

    >>> import numpy as np
    >>> r = log_acceptance(2.0, -1.0, -2.0, -0.5, -1.5, -np.log(3), -np.log(2), xp=np)
    >>> round(float(r), 4)  # 2 * (-1 + 2) + (-1.5 - log 3) - (-0.5 - log 2)
    0.5945
    """
    t_new = alpha * logp_new + logphi_new
    t_old = alpha * logp_old + logphi_old
    both_dead = xp.isneginf(t_new) & xp.isneginf(t_old)
    finite = xp.isfinite(t_new) & xp.isfinite(t_old)

    def safe(x):
        return xp.where(finite, x, 0.0)

    precise = alpha * (safe(logp_new) - safe(logp_old)) + (safe(logphi_new) - safe(logphi_old))
    coarse = t_new - xp.where(both_dead | finite, 0.0, t_old)  # +-inf where exactly one is -inf
    diff = xp.where(finite, precise, xp.where(both_dead, 0.0, coarse))
    return diff + (logq_old + log_pick_new) - (logq_new + log_pick_old)


def masked_sum(per_token, start, stop):
    """sum_j per_token[:, j] over start <= j < stop (per row; ``start``/``stop`` scalars or [n])."""
    j = jnp.arange(per_token.shape[1])[None, :]
    inside = (j >= jnp.asarray(start)[..., None]) & (j < jnp.asarray(stop)[..., None])
    return jnp.sum(jnp.where(inside, per_token, 0.0), axis=1)


#: the largest power accepted: alpha * log p must stay finite in float32 (p^alpha with alpha
#: beyond ~1e6 already concentrates on the mode of p)
MAX_ALPHA = 1e30


def check_alpha(alpha, name: str = "alpha") -> float:
    """Validate a power at the public boundary: a positive finite number at most
    :data:`MAX_ALPHA` (the paper uses 4)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < math.inf:
        hint = " (+inf would be the mode of p, which no sampler here computes)" if alpha == math.inf else ""
        raise InputError(f"{name} must be a positive finite number, got {alpha!r}{hint}; the paper uses 4")
    if alpha > MAX_ALPHA:
        raise InputError(f"{name}={alpha:g} is too large: {name} * log p overflows float32 beyond {MAX_ALPHA:g} "
                         f"(and p^{name} already samples the mode of p for {name} around 1e6): lower it")
    return float(alpha)


# ---- the proposal ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tempered:
    """The proposal q = softmax(logits / T) with T = ``temperature``, or T = 1/alpha when
    ``temperature`` is None (the default of power sampling). Never truncated (top-k/top-p
    would shrink the support and bias the MH ratio).

    Computed stably as log_softmax((logits - max) / T): the maximum is subtracted first and
    maps to exactly 0, so a tiny T (a huge alpha) is greedy decoding in the limit instead of
    an overflow. ``__call__(logits [n, V], alpha) -> log q [n, V]``.
    """

    temperature: float | None = None

    def __post_init__(self):
        t = self.temperature
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < math.inf:
                raise InputError(f"the proposal temperature must be a positive finite number, got {t!r} "
                                 "(None: 1/alpha)")
            object.__setattr__(self, "temperature", float(t))

    def __call__(self, logits, alpha):
        logits = jnp.asarray(logits, jnp.float32)
        inv_t = jnp.asarray(alpha, jnp.float32) if self.temperature is None else jnp.float32(1.0 / self.temperature)
        top = jnp.max(logits, -1, keepdims=True)
        at_top = (logits == top) & jnp.isfinite(top)
        scaled = jnp.where(at_top, 0.0, (logits - top) * inv_t)
        return jax.nn.log_softmax(scaled, -1)


def tempered(temperature: float | None = None) -> Tempered:
    """The LM at ``temperature`` (None: 1/alpha) as the MH proposal."""
    return Tempered(temperature)


# ---- state -------------------------------------------------------------------------------
@struct.dataclass
class MHState:
    """n chains. lm: the LM state of each chain's current sequence; logp / logq: [n, L] per-token
    log p (raw LM) and log q (proposal) of the generated tokens (stale past the end); eos: [n]
    ended with EOS; log_phi: [n] log-potential; generated: [n] tokens sampled so far (the cost);
    nonfinite: [n] int32, the generation step (tokens generated before) at which the chain
    first met non-finite logits, -1 if never."""

    lm: LMState
    logp: jax.Array
    logq: jax.Array
    eos: jax.Array
    log_phi: jax.Array
    generated: jax.Array
    nonfinite: jax.Array

    @property
    def num_tokens(self) -> jax.Array:
        return self.lm.num_generated

    def log_target(self, alpha) -> jax.Array:
        """alpha log p(x) + log_phi(x) of each chain's current sequence."""
        return alpha * masked_sum(self.logp, 0, self.num_tokens) + self.log_phi


@struct.dataclass
class MHInfo:
    """What one MH step did, per chain: accepted, log_ratio (log r), position (m),
    proposed_tokens (tokens sampled for the proposal)."""

    accepted: jax.Array
    log_ratio: jax.Array
    position: jax.Array
    proposed_tokens: jax.Array


class Extension(NamedTuple):
    """What :func:`extend` returns: the new LM state, the per-token log p / log q buffers,
    eos [n], count [n] tokens appended, nonfinite [n] (step of the first non-finite logits met,
    -1 if none)."""

    lm: LMState
    logp: jax.Array
    logq: jax.Array
    eos: jax.Array
    count: jax.Array
    nonfinite: jax.Array


def _merge_nonfinite(old, new):
    return jnp.where(old >= 0, old, new)


def extend(key, lm: LanguageModel, lm_state: LMState, logp, logq, eos, active, stop_at,
           log_q_fn: Callable, forced=None) -> Extension:
    """Append tokens to the ``active`` rows until EOS or ``stop_at`` [n] generated tokens.

    Tokens are drawn from ``log_q_fn(logits) -> log q [n, V]``, or taken from ``forced``
    [n, L] (rescoring a known sequence). The per-token log p (raw logits) and log q of each
    appended token are written at its generated position in ``logp`` / ``logq`` [n, L]. A row
    whose logits are non-finite (:func:`models.interface.nonfinite_rows`) stops there and is
    flagged. One ``while_loop``; traceable.
    """
    n, width = logp.shape
    rows = jnp.arange(n)
    active = active & (lm_state.num_generated < stop_at)

    def cond(carry):  # unbatched over a batch's prompts (see models.sampling.decode_until)
        return any_prompt(jnp.any(carry[4]))

    def body(carry):
        lm_state, logp, logq, eos, active, count, bad_at, key = carry
        key, sub = jax.random.split(key)
        logits = lm_state.logits
        j = lm_state.num_generated
        bad = active & nonfinite_rows(logits)
        bad_at = jnp.where(bad & (bad_at < 0), j, bad_at)
        active = active & ~bad
        lq = log_q_fn(logits)
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        if forced is None:
            token = categorical(sub, jnp.where(active[:, None], lq, 0.0))
        else:
            token = forced[rows, jnp.minimum(j, width - 1)]
        col = jnp.where(active, j, width)  # out of range: dropped
        logp = logp.at[rows, col].set(lp[rows, token], mode="drop")
        logq = logq.at[rows, col].set(lq[rows, token], mode="drop")
        lm_state = lm.extend(lm_state, token, active=active)
        ended = active & (token == lm.eos_id)
        eos = eos | ended
        count = count + active.astype(jnp.int32)
        active = active & ~ended & (lm_state.num_generated < stop_at)
        return lm_state, logp, logq, eos, active, count, bad_at, key

    init = (lm_state, logp, logq, eos, active, jnp.zeros((n,), jnp.int32), jnp.full((n,), -1, jnp.int32), key)
    lm_state, logp, logq, eos, _, count, bad_at, _ = jax.lax.while_loop(cond, body, init)
    return Extension(lm_state, logp, logq, eos, count, bad_at)


def empty(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int) -> MHState:
    """n chains at the prompt, with no generated token yet (the prompt cache shared). Eager."""
    return chains_at(lm.prefill(prompt_ids, n, max_new_tokens), max_new_tokens)


def chains_at(lm_state: LMState, max_new_tokens: int) -> MHState:
    """Chains at the prompt of ``lm_state`` (traceable), with no generated token yet."""
    n = lm_state.num_particles
    zeros = jnp.zeros((n, max_new_tokens), jnp.float32)
    return MHState(lm=lm_state, logp=zeros, logq=zeros, eos=jnp.zeros((n,), bool),
                   log_phi=jnp.zeros((n,), jnp.float32), generated=jnp.zeros((n,), jnp.int32),
                   nonfinite=jnp.full((n,), -1, jnp.int32))


# ---- the kernel --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MHKernel:
    """``kernel(key, state, lm, alpha, cap) -> (state, info)``; build with :func:`build_kernel`.

    move: where the suffix is regenerated from (:mod:`.moves`); proposal:
    ``(logits, alpha) -> log q`` (default :func:`tempered`, temperature 1/alpha);
    log_potential: ``(tokens [n, L], num_tokens [n], eos [n]) -> [n]`` or None.
    Hashable: a static argument of ``jax.jit``.
    """

    move: Callable = moves_lib.Suffix()
    proposal: Callable = Tempered()
    log_potential: Callable | None = None

    def log_phi(self, lm_state: LMState, eos, width: int):
        if self.log_potential is None:
            return jnp.zeros(eos.shape, jnp.float32)
        tokens = lm_state.generated_ids(width)
        return jnp.asarray(self.log_potential(tokens, lm_state.num_generated, eos), jnp.float32)

    def grow(self, key, state: MHState, lm: LanguageModel, alpha, cap) -> MHState:
        """Extend every chain that has not ended with EOS to ``cap`` generated tokens with the
        proposal (the block step of blockwise power sampling; EOS chains are absorbing)."""
        width = state.logp.shape[1]
        cap = jnp.minimum(jnp.asarray(cap, jnp.int32), width)
        ext = extend(key, lm, state.lm, state.logp, state.logq, state.eos, ~state.eos, cap,
                     lambda logits: self.proposal(logits, alpha))
        return MHState(ext.lm, ext.logp, ext.logq, ext.eos, self.log_phi(ext.lm, ext.eos, width),
                       state.generated + ext.count, _merge_nonfinite(state.nonfinite, ext.nonfinite))

    def init(self, key, lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, alpha,
             cap: int | None = None) -> MHState:
        """n chains drawn from the proposal, each up to EOS or ``cap`` (default max_new_tokens)."""
        state = empty(lm, prompt_ids, n, max_new_tokens)
        return self.grow(key, state, lm, alpha, max_new_tokens if cap is None else cap)

    def from_sequences(self, lm: LanguageModel, lm_state: LMState, eos, alpha, width: int) -> MHState:
        """Chains at the sequences held in ``lm_state`` (e.g. SMC particles): their per-token
        log p and log q are recomputed by one teacher-forced pass from the prompt."""
        forced = lm_state.generated_ids(width)
        rewound = lm.truncate(lm_state, lm_state.prompt_length)
        zeros = jnp.zeros(forced.shape, jnp.float32)
        ext = extend(jax.random.key(0), lm, rewound, zeros, zeros, jnp.zeros_like(eos), jnp.ones_like(eos),
                     lm_state.num_generated, lambda logits: self.proposal(logits, alpha), forced)
        return MHState(ext.lm, ext.logp, ext.logq, eos, self.log_phi(ext.lm, eos, width),
                       jnp.zeros(eos.shape, jnp.int32), ext.nonfinite)

    def __call__(self, key, state: MHState, lm: LanguageModel, alpha, cap) -> tuple[MHState, MHInfo]:
        """One MH move of every chain: regenerate a suffix up to ``cap`` tokens, accept or reject.

        Traceable (jit it with the kernel static; ``alpha`` and ``cap`` may be traced). Every
        chain must hold at least one generated token, and the chains that did not end with EOS
        exactly ``cap``: the stage's target is over sequences that end with EOS within ``cap``
        tokens or hold exactly ``cap`` tokens.
        """
        key_pos, key_gen, key_acc = jax.random.split(key, 3)
        width = state.logp.shape[1]
        cap = jnp.minimum(jnp.asarray(cap, jnp.int32), width)
        length = state.num_tokens
        m = jnp.clip(self.move(key_pos, length), 0, jnp.maximum(length - 1, 0))
        cut = lm.truncate(state.lm, state.lm.prompt_length + m)
        ext = extend(key_gen, lm, cut, state.logp, state.logq, jnp.zeros_like(state.eos),
                     jnp.ones_like(state.eos), cap, lambda logits: self.proposal(logits, alpha))
        length_new = ext.lm.num_generated
        log_phi_new = self.log_phi(ext.lm, ext.eos, width)
        log_r = log_acceptance(alpha,
                               masked_sum(ext.logp, m, length_new), masked_sum(state.logp, m, length),
                               masked_sum(ext.logq, m, length_new), masked_sum(state.logq, m, length),
                               self.move.log_prob(m, length_new), self.move.log_prob(m, length),
                               log_phi_new, state.log_phi)
        faulty = ext.nonfinite >= 0
        log_r = jnp.where(faulty | jnp.isnan(log_r), -jnp.inf, log_r)
        accept = jnp.log(jax.random.uniform(key_acc, length.shape)) < log_r
        proposed = MHState(ext.lm, ext.logp, ext.logq, ext.eos, log_phi_new, state.generated, state.nonfinite)
        new = where_rows(accept, proposed, state)
        new = new.replace(generated=state.generated + ext.count,
                          nonfinite=_merge_nonfinite(state.nonfinite, ext.nonfinite))
        return new, MHInfo(accepted=accept, log_ratio=log_r, position=m, proposed_tokens=ext.count)


def build_kernel(move: Callable | None = None, proposal: Callable | None = None,
                 log_potential: Callable | None = None) -> MHKernel:
    """The MH kernel over continuations, from functions.

    move: ``(key, num_tokens) -> m`` with ``.log_prob(m, num_tokens)`` (default
    :func:`moves.suffix`); proposal: ``(logits [n, V], alpha) -> log q [n, V]`` (default
    :func:`tempered`: temperature 1/alpha); log_potential: optional
    ``(tokens [n, L], num_tokens [n], eos [n]) -> [n]`` added to the log target.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import mcmc
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> kernel = mcmc.build_kernel(mcmc.moves.independent())
    >>> state = kernel.init(jax.random.key(1), lm, [1], 8, 3, alpha=2.0)
    >>> state, info = jax.jit(kernel)(jax.random.key(2), state, lm, 2.0, 3)
    >>> info.accepted.shape
    (8,)
    """
    move = moves_lib.suffix() if move is None else move
    moves_lib.check_move(move)
    proposal = tempered() if proposal is None else proposal
    if not callable(proposal):
        raise InputError("proposal must be a function (logits, alpha) -> log q, e.g. "
                         f"inference.mcmc.tempered(0.25); got {proposal!r}")
    if log_potential is not None and not callable(log_potential):
        raise InputError("log_potential must be a function (tokens, num_tokens, eos) -> [n]")
    return MHKernel(move, proposal, log_potential)
