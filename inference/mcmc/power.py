"""Blockwise MH power sampling of p(x)^alpha (Karan & Du 2025, Algorithm 1).

The chains target pi(x) ∝ p(x | prompt)^alpha * exp(log_phi(x)) over continuations of at
most ``max_new_tokens`` tokens. Block k (k = 1..K, K = ceil(max_new_tokens / B)) has the
stage cap c_k = min(k B, max_new_tokens):

1. every chain that has not ended with EOS is extended to c_k tokens with the proposal q
   (the LM at temperature 1/alpha unless told otherwise);
2. ``num_mcmc`` MH steps (:mod:`.kernel`) follow, each targeting the stage's law
   pi_k(x) ∝ p(x)^alpha exp(log_phi(x)) over sequences that end with EOS within c_k tokens or
   hold exactly c_k tokens.

EOS states are absorbing through the final block (the chain never stops early). With
``num_mcmc = 0`` the sampler is plain blockwise sampling from q, i.e. ancestral sampling at
temperature 1/alpha — which is *not* p^alpha (low temperature drops the future's mass). The
paper uses alpha = 4, B = 192, N_MCMC = 10. The whole run is one compiled program per kernel,
block size, N_MCMC, chain count and shapes; alpha and the prompt are data.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genppl import distributed
from genppl.models import progress as progress_lib
from genppl.models.batch import Batch, is_prompt_batch, map_prompt_states, pad_prompts
from genppl.models.interface import InputError, LanguageModel, NonFiniteLogitsError, as_key, check_positive_int
from genppl.models.sampling import Samples

from . import diagnostics
from . import moves as moves_lib
from .kernel import MHKernel, MHState, build_kernel, chains_at, check_alpha, empty, masked_sum, tempered

__all__ = ["PowerSamples", "RewardTilt", "blockwise", "blockwise_prompts", "power_mcmc", "to_samples"]


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
        if isinstance(self.beta, bool) or not isinstance(self.beta, numbers.Real) or not self.beta > 0:
            raise InputError(f"beta must be a positive number, got {self.beta!r}")

    def __call__(self, tokens, num_tokens, eos):
        return jnp.asarray(self.reward(tokens, num_tokens, eos), jnp.float32) / self.beta


@dataclasses.dataclass
class PowerSamples(Samples):
    """Samples of a power sampler, with its diagnostics (a :class:`models.Samples`).

    acceptance: [num_blocks] MH acceptance rate per block (0 without MH steps);
    tokens_generated: [n] tokens sampled per chain (every proposal and extension: the cost);
    trace_log_target: [blocks, N_MCMC, n] log target after each move; trace_accepted:
    [blocks, N_MCMC, n]; log_targets: [n] final alpha log p(x) + log_phi(x).
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

    def _repr_html_(self) -> str:
        from genppl import viz

        return viz.samples_html(self, viz.figures.mh_traces if self.trace_accepted is not None else None)

    def figure(self, path=None):
        """MH acceptance per block and log-target traces (a matplotlib Figure)."""
        from genppl import viz

        return viz.figures.mh_traces(self, path)

    def save(self, path, config: dict | None = None) -> None:
        """Write a run record (:func:`inference.records.save`)."""
        from .. import records

        records.save(self, path, config)

    def __repr__(self) -> str:
        head = super().__repr__().split("\n")
        acc = "" if self.acceptance is None or not len(self.acceptance) else \
            f", acceptance {np.mean(self.acceptance):.2f}"
        head[0] = (f"{self.method}: {head[0]}, tokens generated per sample "
                   f"{self.tokens_per_sample:.1f}{acc}")
        return "\n".join(head)


def blockwise(kernel: MHKernel, lm: LanguageModel, state: MHState, key, alpha, block_size: int, num_mcmc: int):
    """The blockwise sampler's loop (pure, traceable): extend to each block's cap, then
    ``num_mcmc`` kernel steps. Returns (state, (accepted, log_target) traces [blocks,
    num_mcmc, n]); ``block_size`` and ``num_mcmc`` are Python ints."""
    carry = blockwise_start(state, key, block_size, num_mcmc)
    state, _, traces = blockwise_blocks(kernel, lm, carry, 0, num_blocks(state, block_size), alpha, block_size, num_mcmc)
    return state, traces


def num_blocks(state: MHState, block_size: int) -> int:
    return -(-state.logp.shape[1] // block_size)


def blockwise_start(state: MHState, key, block_size: int, num_mcmc: int):
    """The loop's carry: (state, key, (accepted, log_target) traces [blocks, num_mcmc, n])."""
    blocks, n = num_blocks(state, block_size), state.eos.shape[0]
    return state, key, (jnp.zeros((blocks, num_mcmc, n), bool), jnp.zeros((blocks, num_mcmc, n), jnp.float32))


def blockwise_blocks(kernel: MHKernel, lm: LanguageModel, carry, start, stop, alpha, block_size: int, num_mcmc: int):
    """Blocks ``start`` to ``stop - 1`` of :func:`blockwise` from ``carry`` (Python or traced
    ints: a progress bar runs the blocks in chunks, with the same result). Traceable."""
    width = carry[0].logp.shape[1]

    def block(k, carry):
        state, key, traces = carry
        key, key_ext, key_mcmc = jax.random.split(key, 3)
        cap = jnp.minimum((k + 1) * block_size, width)
        state = kernel.grow(key_ext, state, lm, alpha, cap)

        def move(i, carry):
            state, (acc, tgt) = carry
            state, info = kernel(jax.random.fold_in(key_mcmc, i), state, lm, alpha, cap)
            return state, (acc.at[k, i].set(info.accepted), tgt.at[k, i].set(state.log_target(alpha)))

        if num_mcmc > 0:  # with none, the traces are empty and there is nothing to index
            state, traces = jax.lax.fori_loop(0, num_mcmc, move, (state, traces))
        return state, key, traces

    return jax.lax.fori_loop(start, stop, block, carry)


# static: the kernel (a hashable configuration), the block size and N_MCMC; the LM, the
# chains (prompt included) and alpha are traced
_blockwise = jax.jit(blockwise, static_argnums=(0, 5, 6))


def blockwise_chunk(kernel: MHKernel, lm: LanguageModel, carry, start, stop, alpha, block_size: int, num_mcmc: int):
    """One chunk of blocks under a progress bar: (carry, a marker computed by the chunk)."""
    carry = blockwise_blocks(kernel, lm, carry, start, stop, alpha, block_size, num_mcmc)
    return carry, carry[0].num_tokens + 0


# the carry is donated: chunks update the chains in place
_blockwise_chunk = jax.jit(blockwise_chunk, static_argnums=(0, 6, 7), donate_argnums=2)


def blockwise_in_chunks(kernel: MHKernel, lm: LanguageModel, state: MHState, key, alpha, block_size: int,
                        num_mcmc: int):
    """:func:`blockwise` under a progress bar, a chunk of blocks per dispatch
    (:func:`models.progress.run_in_chunks`); the same result."""
    done = [0]

    def advance(carry, stop):
        start, done[0] = done[0], int(stop)
        return _blockwise_chunk(kernel, lm, carry, np.int32(start), stop, alpha, block_size, num_mcmc)

    carry = blockwise_start(state, jnp.copy(key), block_size, num_mcmc)  # a copy: the caller keeps its key
    (state, _, traces), _ = progress_lib.run_in_chunks(advance, carry, num_blocks(state, block_size), "power_mcmc",
                                                       unit="block")
    return state, traces


def power_mcmc(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *,
               alpha: float = 4.0, block_size: int = 16, num_mcmc: int = 4,
               proposal_temperature: float | None = None, move: Callable | None = None,
               log_potential: Callable | None = None, kernel: MHKernel | None = None,
               progress: bool = True, mesh=None) -> PowerSamples:
    """Blockwise MH power sampling of ``n`` independent chains.

    Targets p(x)^alpha * exp(log_potential(x)) over continuations of at most max_new_tokens
    tokens: each block extends the chains that have not ended by ``block_size`` tokens with the
    proposal (temperature 1/alpha unless ``proposal_temperature``), then runs ``num_mcmc``
    MH steps that regenerate up to the block's cap, from the position chosen by ``move``
    (default :func:`moves.suffix`, uniform; :func:`moves.independent` regenerates everything).
    ``kernel``: a kernel from :func:`build_kernel` (any move, proposal ``(logits, alpha) -> log q``
    and log-potential) instead of ``move`` / ``proposal_temperature`` / ``log_potential``.
    ``num_mcmc=0`` is plain blockwise sampling from the proposal (no MH step). The paper uses
    alpha=4, B=192, N_MCMC=10. Non-finite logits raise
    :class:`~models.interface.NonFiniteLogitsError` naming the step and the chains.
    progress: a progress bar (tqdm auto, per block) when stderr is a terminal or a notebook,
    shown after two seconds; the blocks then run in chunks of one compiled program (the same
    result; :mod:`models.progress`). A batch of prompts shows none.

    ``prompt_ids`` may be a batch of prompts (a list of id lists of any lengths): ``n`` chains
    per prompt in one compiled program, a :class:`models.batch.Batch` of one
    :class:`PowerSamples` per prompt; prompt b uses the key ``jax.random.split(key, B)[b]``
    and gets exactly its one-prompt result with that key. ``mesh`` (see
    :func:`genppl.distributed.spread`): the chains (for a batch, the prompts) split over the
    mesh's data axis, the weights replicated; the same chains as on one device.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import mcmc
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=4)
    >>> out = mcmc.power_mcmc(lm, [1], n=8, max_new_tokens=4, key=0, alpha=2.0, block_size=2)
    >>> out.acceptance.shape, len(out.texts)
    ((2,), 8)
    """
    if not isinstance(lm, LanguageModel):
        raise InputError(f"lm must be a models.LanguageModel, got {type(lm).__name__}")
    check_positive_int(n, "n (the number of chains)")
    check_positive_int(max_new_tokens, "max_new_tokens")
    block_size = check_positive_int(block_size, "block_size")
    if isinstance(num_mcmc, bool) or not isinstance(num_mcmc, numbers.Integral) or num_mcmc < 0:
        raise InputError(f"num_mcmc must be a non-negative integer, got {num_mcmc!r} (0: no MH step)")
    alpha = check_alpha(alpha)
    if kernel is None:
        kernel = build_kernel(move, tempered(proposal_temperature), log_potential)
    elif not isinstance(kernel, MHKernel):
        raise InputError(f"kernel must be an MHKernel from inference.mcmc.build_kernel(...), got {kernel!r}")
    elif move is not None or proposal_temperature is not None or log_potential is not None:
        raise InputError("give either kernel= or move / proposal_temperature / log_potential, not both")
    key = as_key(key)
    what = "independent MH" if isinstance(kernel.move, moves_lib.Independent) else "MH"
    method = f"blockwise {what} power sampling (alpha={alpha:g}, B={block_size}, N_MCMC={num_mcmc})"
    if is_prompt_batch(prompt_ids):
        tokens, lengths, padded, capacity = pad_prompts(lm, prompt_ids, max_new_tokens)
        lm.check_memory(len(lengths) * n, capacity, padded)
        keys = jax.random.split(key, len(lengths))
        mesh, placed, _, (dtokens, dlengths, dkeys) = distributed.spread(mesh, lm, n, prompts=(tokens, lengths, keys))
        with distributed.on(mesh):
            out = _blockwise_prompts(kernel, placed, dtokens, dlengths, dkeys, jnp.float32(alpha),
                                     n, capacity, int(max_new_tokens), block_size, int(num_mcmc))
        layout = distributed.layout_of(mesh, out[0], "prompts")
        state, (accepted, log_target) = jax.device_get(_without_cache(out[0])), jax.device_get(out[1])
        results = Batch()
        for b in range(len(lengths)):
            state_b = jax.tree.map(lambda x: np.asarray(x)[b], state)
            NonFiniteLogitsError.check(f"power_mcmc (prompt {b} of the batch)", state_b.nonfinite)
            out = to_samples(lm, state_b, alpha, accepted[b], log_target[b], method)
            out.provenance = provenance(kernel, keys[b], n, max_new_tokens, alpha, block_size, num_mcmc, lm)
            out.layout = layout
            results.append(out)
        return results
    state = empty(lm, prompt_ids, n, max_new_tokens)
    mesh, placed, state, _ = distributed.spread(mesh, lm, n, state)
    loop = blockwise_in_chunks if progress and progress_lib.interactive() else _blockwise
    with distributed.on(mesh):
        state, (accepted, log_target) = loop(kernel, placed, state, key, jnp.float32(alpha), block_size, int(num_mcmc))
    layout = distributed.layout_of(mesh, state)
    if distributed.spans_processes(mesh):  # other processes hold some chains: gather them
        state, accepted, log_target = distributed.to_host((state, accepted, log_target))
    NonFiniteLogitsError.check("power_mcmc", jax.device_get(state.nonfinite))
    out = to_samples(lm, state, alpha, accepted, log_target, method)
    out.provenance = provenance(kernel, key, n, max_new_tokens, alpha, block_size, num_mcmc, lm)
    out.layout = layout
    return out


def provenance(kernel, key, n, max_new_tokens, alpha, block_size, num_mcmc, lm) -> dict:
    """How a power_mcmc result was made (what a run record keeps)."""
    return {"function": "genppl.inference.mcmc.power_mcmc", "key": key, "n": n,
            "max_new_tokens": max_new_tokens, "alpha": alpha, "block_size": block_size,
            "num_mcmc": int(num_mcmc), "kernel": repr(kernel), "lm": lm}


def blockwise_prompts(kernel: MHKernel, lm: LanguageModel, tokens, lengths, keys, alpha, n: int, capacity: int,
                      max_new_tokens: int, block_size: int, num_mcmc: int):
    """:func:`blockwise` for B prompts in one program (traceable): tokens [B, P] padded,
    lengths [B], keys [B]; ``n`` chains per prompt. Outputs lead with B."""
    def one(lm_state, key):
        return blockwise(kernel, lm, chains_at(lm_state, max_new_tokens), key, alpha, block_size, num_mcmc)

    return map_prompt_states(one, lm, tokens, lengths, n, capacity, keys)


# static: the kernel, n, the buffer size, max_new_tokens, the block size and N_MCMC
_blockwise_prompts = jax.jit(blockwise_prompts, static_argnums=(0, 6, 7, 8, 9, 10))


def _without_cache(state: MHState) -> MHState:
    return state.replace(lm=state.lm.replace(cache=None))


def to_samples(lm: LanguageModel, state: MHState, alpha: float, accepted, log_target, method: str) -> PowerSamples:
    """Host-side :class:`PowerSamples` of the chains' current sequences."""
    width = state.logp.shape[1]
    tokens, count, eos, logp, gen, log_t, start, prompt = jax.device_get((
        state.lm.generated_ids(width), state.num_tokens, state.eos, masked_sum(state.logp, 0, state.num_tokens),
        state.generated, state.log_target(alpha), state.lm.prompt_length[0], state.lm.tokens[0]))
    tokens = np.asarray(tokens)
    decode = lm.tokenizer.decode if lm.tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
    texts = [decode(list(t[:k])) for t, k in zip(tokens, count)]
    accepted = np.asarray(accepted)
    return PowerSamples(tokens, np.asarray(count), np.asarray(eos), np.asarray(logp, np.float64), texts,
                        decode(list(np.asarray(prompt)[: int(start)])), method=method,
                        acceptance=diagnostics.acceptance_per_block(accepted), tokens_generated=np.asarray(gen),
                        trace_log_target=np.asarray(log_target), trace_accepted=accepted,
                        log_targets=np.asarray(log_t, np.float64))
