"""Metropolis–Hastings over whole continuations, and blockwise power sampling of p(x)^alpha.

The target over finished continuations x (ending in EOS, or cut at the stage's length cap) is

    pi(x) ∝ p(x | prompt)^alpha * exp(log_phi(x)),

with ``log_phi`` an optional sequence-level log-potential (e.g. :class:`RewardTilt`, the
reward-tilted target exp(r(x) / beta)). A move picks a position m (uniformly in the current
sequence, or m = 0 for independent proposals), regenerates the suffix from m with the
proposal (the LM at temperature 1/alpha by default) up to the cap, and accepts with the ratio
of ALGORITHMS.md, computed by the pure function :func:`log_acceptance`:

    log r = alpha [log p(x'_{m:}) - log p(x_{m:})] + log_phi(x') - log_phi(x)
          + [log q(x_{m:}) - log n'] - [log q(x'_{m:}) - log n]

Both suffixes are summed in full (EOS included). The chain state caches the per-token log p
and log q of its current sequence (both come from the logits of the pass that generated it),
so the current suffix never needs rescoring; the LM's prefix cache is rewound with
``LanguageModel.truncate`` and shared by every chain. Chains are a batch; the kernel is
blackjax-style: :func:`init` and :func:`step`. :func:`power_mcmc` is the blockwise sampler of
Karan & Du (2025): extend by B tokens, then N_MCMC moves, with EOS states absorbing through
the final block; the whole run is one compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genppl.models.interface import InputError, LanguageModel, LMState, check_positive_int
from genppl.models.sampling import TRACE_COUNTS, Processing, Samples, process_logits
from genppl.ppl.program import where_rows

MOVES = ("suffix", "independent")


# ---- the acceptance ratio: one pure formula for the sampler and the exact tests ----------
def log_acceptance(alpha, logp_new, logp_old, logq_new, logq_old, log_pick_new, log_pick_old,
                   logphi_new=0.0, logphi_old=0.0, xp=jnp):
    """log r of the move x -> x' that regenerates the suffix from position m.

    logp_*: log p of the suffix from m under the raw LM (EOS included); logq_*: its log q
    under the proposal; log_pick_new: log-probability of choosing m in x' (the reverse move,
    -log n' for uniform positions), log_pick_old: of choosing m in x (-log n); logphi_*: the
    sequence-level log-potentials. ``xp`` is ``jax.numpy`` (the sampler) or ``numpy`` (exact
    float64 enumeration). Where both targets are -inf the move is free (log r = 0).

    >>> r = log_acceptance(2.0, -1.0, -2.0, -0.5, -1.5, -np.log(3), -np.log(2), xp=np)
    >>> round(float(r), 4)  # 2 * (-1 + 2) + (-1.5 - log 3) - (-0.5 - log 2)
    0.5945
    """
    t_new = alpha * logp_new + logphi_new
    t_old = alpha * logp_old + logphi_old
    both_dead = xp.isneginf(t_new) & xp.isneginf(t_old)
    diff = xp.where(both_dead, 0.0, t_new - xp.where(both_dead, 0.0, t_old))
    return diff + (logq_old + log_pick_new) - (logq_new + log_pick_old)


# ---- configuration -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RewardTilt:
    """The reward-tilted log-potential r(x) / beta, for reward-guided MH.

    reward: a traceable function (tokens [n, L] int32 generated ids, 0 past the end;
    num_tokens [n]; eos [n]) -> [n] rewards.
    """

    reward: Callable
    beta: float = 1.0

    def __post_init__(self):
        if not callable(self.reward):
            raise InputError("RewardTilt needs a reward function (tokens, num_tokens, eos) -> [n]")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not self.beta > 0:
            raise InputError(f"beta must be a positive number, got {self.beta!r}")

    def __call__(self, tokens, num_tokens, eos):
        return jnp.asarray(self.reward(tokens, num_tokens, eos), jnp.float32) / self.beta


@dataclasses.dataclass(frozen=True)
class MHConfig:
    """Static configuration of the MH kernel (hashable: part of the compiled program).

    alpha: power of the LM in the target; proposal: how logits become q (default: temperature
    1/alpha, no truncation, as ALGORITHMS.md requires); move: ``"suffix"`` (uniform position)
    or ``"independent"`` (regenerate everything from the prompt); log_potential: optional
    ``(tokens [n, L], num_tokens [n], eos [n]) -> [n]`` added to the log target.
    """

    alpha: float = 4.0
    proposal: Processing | None = None
    move: str = "suffix"
    log_potential: Callable | None = None

    def __post_init__(self):
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not (a > 0 and math.isfinite(a)):
            raise InputError(f"alpha must be a positive number, got {a!r}")
        if self.proposal is not None and not isinstance(self.proposal, Processing):
            raise InputError("proposal must be a models.Processing (e.g. Processing(temperature=0.25)) or None")
        if self.move not in MOVES:
            raise InputError(f"move must be one of {MOVES}, got {self.move!r}")
        if self.log_potential is not None and not callable(self.log_potential):
            raise InputError("log_potential must be a function (tokens, num_tokens, eos) -> [n]")

    @property
    def processing(self) -> Processing:
        return self.proposal if self.proposal is not None else Processing(temperature=1.0 / self.alpha)


@struct.dataclass
class MHState:
    """n chains. lm: the LM state of each chain's current sequence; logp / logq: [n, L] per-token
    log p (raw LM) and log q (proposal) of the generated tokens (stale past the end); eos: [n]
    ended with EOS; log_phi: [n] log-potential; generated: [n] tokens sampled so far (cost)."""

    lm: LMState
    logp: jax.Array
    logq: jax.Array
    eos: jax.Array
    log_phi: jax.Array
    generated: jax.Array

    @property
    def num_tokens(self) -> jax.Array:
        return self.lm.num_generated

    def log_target(self, alpha: float) -> jax.Array:
        return alpha * _masked_sum(self.logp, 0, self.num_tokens) + self.log_phi


@struct.dataclass
class MHInfo:
    """What one MH step did, per chain."""

    accepted: jax.Array
    log_ratio: jax.Array
    position: jax.Array
    proposed_tokens: jax.Array


# ---- helpers -----------------------------------------------------------------------------
def _masked_sum(per_token, start, stop):
    j = jnp.arange(per_token.shape[1])[None, :]
    inside = (j >= jnp.asarray(start)[..., None]) & (j < jnp.asarray(stop)[..., None])
    return jnp.sum(jnp.where(inside, per_token, 0.0), axis=1)


def _log_phi(config: MHConfig, lm_state: LMState, eos, width):
    if config.log_potential is None:
        return jnp.zeros(eos.shape, jnp.float32)
    tokens = lm_state.generated_ids(width)
    return jnp.asarray(config.log_potential(tokens, lm_state.num_generated, eos), jnp.float32)


def _extend(lm: LanguageModel, lm_state: LMState, logp, logq, eos, active, stop_at, key,
            processing: Processing, forced=None):
    """Append tokens to the active chains until EOS or ``stop_at`` [n] generated tokens.

    Tokens are drawn from the processed logits, or taken from ``forced`` [n, L] (rescoring).
    Per-token log p and log q are written at each token's generated position. Returns
    (lm_state, logp, logq, eos, count [n] of tokens appended). One ``while_loop``.
    """
    n, width = logp.shape
    rows = jnp.arange(n)
    active = active & (lm_state.num_generated < stop_at)

    def cond(carry):
        return jnp.any(carry[4])

    def body(carry):
        lm_state, logp, logq, eos, active, count, key = carry
        key, sub = jax.random.split(key)
        lq = process_logits(lm_state.logits, processing)
        lp = jax.nn.log_softmax(lm_state.logits.astype(jnp.float32), -1)
        j = lm_state.num_generated
        if forced is None:
            token = jax.random.categorical(sub, lq, axis=-1).astype(jnp.int32)
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
        return lm_state, logp, logq, eos, active, count, key

    init = (lm_state, logp, logq, eos, active, jnp.zeros((n,), jnp.int32), key)
    lm_state, logp, logq, eos, _, count, _ = jax.lax.while_loop(cond, body, init)
    return lm_state, logp, logq, eos, count


# ---- the kernel --------------------------------------------------------------------------
def empty(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int) -> MHState:
    """n chains at the prompt, with no generated token yet (the prompt cache shared)."""
    lm_state = lm.prefill(prompt_ids, n, max_new_tokens)
    zeros = jnp.zeros((n, max_new_tokens), jnp.float32)
    return MHState(lm=lm_state, logp=zeros, logq=zeros, eos=jnp.zeros((n,), bool),
                   log_phi=jnp.zeros((n,), jnp.float32), generated=jnp.zeros((n,), jnp.int32))


def extend(key, state: MHState, lm: LanguageModel, config: MHConfig, cap) -> MHState:
    """Extend every chain that has not ended with EOS to ``cap`` generated tokens with the
    proposal (the block step of blockwise power sampling; EOS chains are absorbing)."""
    cap = jnp.minimum(jnp.asarray(cap, jnp.int32), state.logp.shape[1])
    lm_state, logp, logq, eos, count = _extend(lm, state.lm, state.logp, state.logq, state.eos,
                                               ~state.eos, cap, key, config.processing)
    log_phi = _log_phi(config, lm_state, eos, state.logp.shape[1])
    return MHState(lm_state, logp, logq, eos, log_phi, state.generated + count)


def init(key, lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, config: MHConfig,
         cap: int | None = None) -> MHState:
    """n chains drawn from the proposal, each up to EOS or ``cap`` (default max_new_tokens)."""
    state = empty(lm, prompt_ids, n, max_new_tokens)
    return extend(key, state, lm, config, max_new_tokens if cap is None else cap)


def from_sequences(lm: LanguageModel, lm_state: LMState, eos, config: MHConfig, width: int) -> MHState:
    """Chains at the sequences held in ``lm_state`` (e.g. SMC particles): their per-token
    log p and log q are recomputed by one teacher-forced pass from the prompt."""
    start = lm_state.prompt_length
    target_len = lm_state.num_generated
    forced = lm_state.generated_ids(width)
    rewound = lm.truncate(lm_state, start)
    zeros = jnp.zeros(forced.shape, jnp.float32)
    new_lm, logp, logq, _, _ = _extend(lm, rewound, zeros, zeros, jnp.zeros_like(eos), jnp.ones_like(eos),
                                       target_len, jax.random.key(0), config.processing, forced)
    return MHState(new_lm, logp, logq, eos, _log_phi(config, new_lm, eos, width),
                   jnp.zeros(eos.shape, jnp.int32))


def step(key, state: MHState, lm: LanguageModel, config: MHConfig, cap) -> tuple[MHState, MHInfo]:
    """One MH move of every chain: regenerate a suffix up to ``cap`` tokens, accept or reject.

    Traceable (jit it with ``config`` static; ``cap`` may be traced). Every chain must hold at
    least one generated token, and the chains that did not end with EOS exactly ``cap``.
    """
    key_pos, key_gen, key_acc = jax.random.split(key, 3)
    width = state.logp.shape[1]
    cap = jnp.minimum(jnp.asarray(cap, jnp.int32), width)
    length = jnp.maximum(state.num_tokens, 1)
    if config.move == "independent":
        m = jnp.zeros_like(length)
    else:
        u = jax.random.uniform(key_pos, length.shape)
        m = jnp.minimum((u * length).astype(jnp.int32), length - 1)
    start = state.lm.prompt_length
    cut = lm.truncate(state.lm, start + m)
    lm_new, logp_new, logq_new, eos_new, count = _extend(
        lm, cut, state.logp, state.logq, jnp.zeros_like(state.eos), jnp.ones_like(state.eos), cap,
        key_gen, config.processing)
    length_new = lm_new.num_generated
    log_phi_new = _log_phi(config, lm_new, eos_new, width)
    if config.move == "independent":
        pick_new = pick_old = jnp.zeros(length.shape, jnp.float32)
    else:
        pick_new = -jnp.log(jnp.maximum(length_new, 1).astype(jnp.float32))
        pick_old = -jnp.log(length.astype(jnp.float32))
    log_r = log_acceptance(config.alpha,
                           _masked_sum(logp_new, m, length_new), _masked_sum(state.logp, m, length),
                           _masked_sum(logq_new, m, length_new), _masked_sum(state.logq, m, length),
                           pick_new, pick_old, log_phi_new, state.log_phi)
    accept = jnp.log(jax.random.uniform(key_acc, length.shape)) < log_r
    proposed = MHState(lm_new, logp_new, logq_new, eos_new, log_phi_new, state.generated)
    new = where_rows(accept, proposed, state)
    new = new.replace(generated=state.generated + count)
    return new, MHInfo(accepted=accept, log_ratio=log_r, position=m, proposed_tokens=count)


# ---- blockwise power sampling ------------------------------------------------------------
@dataclasses.dataclass
class PowerSamples(Samples):
    """Samples of a power sampler, with its diagnostics (a :class:`models.Samples`).

    acceptance: [num_blocks] MH acceptance rate per block; tokens_generated: [n] tokens
    sampled per chain (every proposal and extension: the cost); trace_log_target: [blocks,
    N_MCMC, n] log target after each move; trace_accepted: [blocks, N_MCMC, n].
    """

    method: str = "power sampling"
    acceptance: np.ndarray | None = None
    tokens_generated: np.ndarray | None = None
    trace_log_target: np.ndarray | None = None
    trace_accepted: np.ndarray | None = None
    log_targets: np.ndarray | None = None

    @property
    def tokens_per_sample(self) -> float:
        return float(np.mean(self.tokens_generated))

    def __repr__(self) -> str:
        head = super().__repr__().split("\n")
        acc = "" if self.acceptance is None or not len(self.acceptance) else \
            f", acceptance {np.mean(self.acceptance):.2f}"
        head[0] = (f"{self.method}: {head[0]}, tokens generated per sample "
                   f"{self.tokens_per_sample:.1f}{acc}")
        return "\n".join(head)


def _blockwise_impl(lm, state: MHState, key, config: MHConfig, block_size: int, num_mcmc: int):
    TRACE_COUNTS["power_mcmc"] += 1
    width = state.logp.shape[1]
    blocks = -(-width // block_size)
    n = state.eos.shape[0]

    def block(k, carry):
        state, key, traces = carry
        key, key_ext, key_mcmc = jax.random.split(key, 3)
        cap = jnp.minimum((k + 1) * block_size, width)
        state = extend(key_ext, state, lm, config, cap)

        def move(i, carry):
            state, traces = carry
            state, info = step(jax.random.fold_in(key_mcmc, i), state, lm, config, cap)
            acc, tgt = traces
            acc = acc.at[k, i].set(info.accepted)
            tgt = tgt.at[k, i].set(state.log_target(config.alpha))
            return state, (acc, tgt)

        state, traces = jax.lax.fori_loop(0, num_mcmc, move, (state, traces))
        return state, key, traces

    traces = (jnp.zeros((blocks, num_mcmc, n), bool), jnp.zeros((blocks, num_mcmc, n), jnp.float32))
    state, _, traces = jax.lax.fori_loop(0, blocks, block, (state, key, traces))
    return state, traces


_blockwise = jax.jit(_blockwise_impl, static_argnums=(3, 4, 5))


def check_config(alpha, block_size, num_mcmc, proposal_temperature, move, log_potential) -> MHConfig:
    """Validate the public options of the MH power samplers; returns the kernel config."""
    check_positive_int(block_size, "block_size")
    if isinstance(num_mcmc, bool) or not isinstance(num_mcmc, int) or num_mcmc < 0:
        raise InputError(f"num_mcmc must be a non-negative integer, got {num_mcmc!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (alpha > 0 and math.isfinite(alpha)):
        raise InputError(f"alpha must be a positive number, got {alpha!r} (the paper uses 4)")
    proposal = None if proposal_temperature is None else Processing(temperature=proposal_temperature)
    return MHConfig(alpha=float(alpha), proposal=proposal, move=move, log_potential=log_potential)


def power_mcmc(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *,
               alpha: float = 4.0, block_size: int = 16, num_mcmc: int = 4,
               proposal_temperature: float | None = None, move: str = "suffix",
               log_potential: Callable | None = None) -> PowerSamples:
    """Blockwise MH power sampling (Karan & Du 2025, Algorithm 1) of ``n`` independent chains.

    Targets p(x)^alpha * exp(log_potential(x)) over continuations of at most max_new_tokens
    tokens: each block extends the chains that have not ended by ``block_size`` tokens with the
    proposal (temperature 1/alpha unless ``proposal_temperature``), then runs ``num_mcmc``
    MH moves that regenerate up to the block's cap. The paper uses alpha=4, B=192, N_MCMC=10.

    >>> import jax
    >>> from genppl import models, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=4)
    >>> out = inference.power_mcmc(lm, [1], n=8, max_new_tokens=4, key=0, alpha=2.0, block_size=2)
    >>> out.acceptance.shape, len(out.texts)
    ((2,), 8)
    """
    if not isinstance(lm, LanguageModel):
        raise InputError(f"lm must be a models.LanguageModel, got {type(lm).__name__}")
    check_positive_int(n, "n (the number of chains)")
    check_positive_int(max_new_tokens, "max_new_tokens")
    config = check_config(alpha, block_size, num_mcmc, proposal_temperature, move, log_potential)
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    state = empty(lm, prompt_ids, n, max_new_tokens)
    state, (accepted, log_target) = _blockwise(lm, state, key, config, int(block_size), int(num_mcmc))
    what = "independent MH" if move == "independent" else "MH"
    return _power_samples(lm, prompt_ids, state, config, accepted, log_target,
                          f"blockwise {what} power sampling (alpha={config.alpha:g}, B={block_size}, "
                          f"N_MCMC={num_mcmc})")


def _power_samples(lm, prompt_ids, state: MHState, config, accepted, log_target, method) -> PowerSamples:
    width = state.logp.shape[1]
    tokens = state.lm.generated_ids(width)
    count, eos, logp, gen, log_t = jax.device_get((
        state.num_tokens, state.eos, _masked_sum(state.logp, 0, state.num_tokens), state.generated,
        state.log_target(config.alpha)))
    tokens = np.asarray(tokens)
    decode = lm.tokenizer.decode if lm.tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
    texts = [decode(list(t[:k])) for t, k in zip(tokens, count)]
    accepted = np.asarray(accepted)
    acceptance = accepted.mean(axis=(1, 2)) if accepted.size else np.zeros((accepted.shape[0],))
    prompt = decode(list(np.asarray(prompt_ids).reshape(-1)[: int(state.lm.prompt_length[0])]))
    return PowerSamples(tokens, np.asarray(count), np.asarray(eos), np.asarray(logp, np.float64), texts,
                        prompt, method=method, acceptance=acceptance, tokens_generated=np.asarray(gen),
                        trace_log_target=np.asarray(log_target), trace_accepted=accepted,
                        log_targets=np.asarray(log_t, np.float64))
