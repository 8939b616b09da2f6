"""Rollout power sampling: token by token from an estimate of the exact next-token law of p^alpha.

The next-token law of pi(x) ∝ p(x)^alpha after a prefix x_<t is

    pi(v | x_<t) = p(v | x_<t)^alpha zeta(v) / sum_u p(u | x_<t)^alpha zeta(u),
    zeta(v) = sum over futures f of p(f | x_<t, v)^alpha

(low temperature 1/alpha drops zeta). zeta is estimated for the top-K tokens v by M
importance-weighted rollouts each, f_1..f_M ~ q (the LM at temperature 1/alpha unless told
otherwise), of at most ``horizon`` tokens (the future beyond it is ignored):

    zeta_hat(v) = (1/M) sum_j p(f_j | v)^alpha / q(f_j | v)     (1 for EOS: the future is empty).

The plain estimate pi_hat = normalise(p^alpha zeta_hat) has an O(1/M) bias; the jackknife
pi_JK = M pi_hat - (M-1)/M sum_j pi_hat^{(-j)} (pi_hat^{(-j)} leaving rollout j out of every
candidate's mean) cuts it to O(1/M^2). Each token is drawn from one of them (renormalised over
the K candidates, negative jackknife entries clipped at 0).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genppl import distributed
from genppl.models import progress as progress_lib
from genppl.models.batch import Batch, any_prompt, is_prompt_batch, map_prompt_states, pad_prompts
from genppl.models.interface import (InputError, LanguageModel, NonFiniteLogitsError, as_key, check_positive_int,
                                     nonfinite_rows)
from genppl.models.sampling import categorical

from ..mcmc.kernel import Tempered, check_alpha, extend, masked_sum, tempered
from ..mcmc.power import PowerSamples

__all__ = ["TokenLaw", "next_token_law", "power_rollout", "sample_tokens", "sample_tokens_prompts"]


class TokenLaw(NamedTuple):
    """The estimated next-token law of p^alpha over each particle's top-K tokens.

    candidates [n, K]; log_weights [n, K] log p^alpha zeta_hat (unnormalised); plain [n, K]
    the plain estimate of the law; jackknife [n, K] the corrected one; cost [n] tokens
    sampled by the rollouts; nonfinite [n] whether the particle's logits or one of its
    rollouts' were non-finite (NaN, +inf, or every entry -inf).
    """

    candidates: jax.Array
    log_weights: jax.Array
    plain: jax.Array
    jackknife: jax.Array
    cost: jax.Array
    nonfinite: jax.Array


def next_token_law(key, lm: LanguageModel, lm_state, done, alpha, top_k: int, rollouts: int,
                   horizon: int, max_new_tokens: int, proposal: Tempered = Tempered()) -> TokenLaw:
    """Estimate the next-token law of p^alpha over the top-K tokens of each particle with M
    rollouts per candidate (traceable; ``top_k``, ``rollouts``, ``horizon``,
    ``max_new_tokens`` and ``proposal`` are static, ``alpha`` may be traced)."""
    n = lm_state.num_particles
    k, m = top_k, rollouts
    own_bad = nonfinite_rows(lm_state.logits) & ~done
    logp = jax.nn.log_softmax(lm_state.logits.astype(jnp.float32), -1)
    logp = jnp.where(own_bad[:, None], -jnp.inf, logp)
    cand_logp, cand = jax.lax.top_k(jnp.where(jnp.isnan(logp), -jnp.inf, logp), k)
    rows = jnp.repeat(jnp.arange(n), k * m)
    expanded = lm.gather(lm_state, rows)
    first = jnp.repeat(cand.reshape(-1), m)
    live = ~done[rows] & ~own_bad[rows] & (first != lm.eos_id)
    expanded = lm.extend(expanded, first, active=live)
    stop_at = jnp.minimum(expanded.num_generated + horizon, max_new_tokens)
    zeros = jnp.zeros((n * k * m, max_new_tokens), jnp.float32)
    start = expanded.num_generated
    ext = extend(key, lm, expanded, zeros, zeros, jnp.zeros_like(live), live, stop_at,
                 lambda logits: proposal(logits, alpha))
    end = ext.lm.num_generated
    log_w = alpha * masked_sum(ext.logp, start, end) - masked_sum(ext.logq, start, end)
    log_w = jnp.where(live, log_w, 0.0).reshape(n, k, m)  # EOS or no room: the future is empty
    head = jnp.where(jnp.isneginf(cand_logp), -jnp.inf, alpha * cand_logp)[:, :, None]
    log_plain = head[..., 0] + jax.nn.logsumexp(log_w, -1) - jnp.log(m)
    plain = jax.nn.softmax(log_plain, -1)
    if m > 1:
        # leave one rollout index out across all candidates; pi_JK = M pi - (M-1) mean_j pi_{-j}
        others = jnp.where(jnp.eye(m, dtype=bool), -jnp.inf, log_w[..., None, :])  # [n, K, M(j), M(i)]
        rest = jax.nn.logsumexp(others, -1)  # log sum_{i != j} w_i
        loo = jax.nn.softmax(head + rest - jnp.log(m - 1), axis=1)  # [n, K, M]
        jack = jnp.maximum(m * plain - (m - 1) * loo.mean(-1), 0.0)
        mass = jack.sum(-1, keepdims=True)
        jack = jnp.where(mass > 0, jack / jnp.where(mass > 0, mass, 1.0), plain)
    else:
        jack = plain
    bad = own_bad | (ext.nonfinite >= 0).reshape(n, k * m).any(-1)
    cost = (ext.count + live.astype(jnp.int32)).reshape(n, k * m).sum(-1)
    return TokenLaw(cand, log_plain, plain, jack, cost, bad)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9))
def sample_tokens(lm: LanguageModel, lm_state, key, alpha, top_k: int, rollouts: int, horizon: int,
                  jackknife: bool, proposal: Tempered, max_new_tokens: int):
    """The rollout sampler's loop (one compiled ``while_loop``): returns (lm_state, eos [n],
    log p [n], cost [n], nonfinite [n] step of the first non-finite logits, -1 if none).
    Static: the integers, ``jackknife`` and the hashable ``proposal``; ``alpha`` is traced."""
    carry = tokens_until(lm, tokens_start(lm_state, key), max_new_tokens, alpha, top_k, rollouts, horizon, jackknife,
                         proposal, max_new_tokens)
    return carry[1], *carry[3:7]


def tokens_start(lm_state, key):
    """The loop's carry: (step, lm_state, done, eos, log p, cost, nonfinite step, key)."""
    n = lm_state.num_particles  # every leaf its own array (a chunked loop donates the carry)
    return (jnp.int32(0), lm_state, jnp.zeros((n,), bool), jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32),
            jnp.zeros((n,), jnp.int32), jnp.full((n,), -1, jnp.int32), key)


def tokens_until(lm: LanguageModel, carry, stop, alpha, top_k: int, rollouts: int, horizon: int, jackknife: bool,
                 proposal: Tempered, max_new_tokens: int):
    """:func:`sample_tokens`'s loop from ``carry`` until its step (one token per unfinished
    particle) reaches ``stop`` (a Python or traced int; a progress bar runs it in chunks, with
    the same result) or every particle is done. Traceable."""
    n = carry[1].num_particles

    def cond(carry):  # unbatched over a batch's prompts (see models.sampling.decode_until)
        return any_prompt((carry[0] < stop) & jnp.any(~carry[2]))

    def body(carry):
        step, lm_state, done, eos, logp_total, cost, bad_at, key = carry
        key, key_roll, key_pick = jax.random.split(key, 3)
        law = next_token_law(key_roll, lm, lm_state, done, alpha, top_k, rollouts, horizon, max_new_tokens,
                             proposal)
        bad = law.nonfinite & ~done
        bad_at = jnp.where(bad, lm_state.num_generated, bad_at)
        moving = ~done & ~bad
        probs = law.jackknife if jackknife else law.plain
        choice = categorical(key_pick, jnp.where(moving[:, None], jnp.log(probs), 0.0))
        token = jnp.take_along_axis(law.candidates, choice[:, None], 1)[:, 0]
        logp = jax.nn.log_softmax(lm_state.logits.astype(jnp.float32), -1)
        logp_total = logp_total + jnp.where(moving, logp[jnp.arange(n), token], 0.0)
        lm_state = lm.extend(lm_state, token, active=moving)
        ended = moving & (token == lm.eos_id)
        cost = cost + jnp.where(done, 0, law.cost + 1)
        done = done | bad | ended | (lm_state.num_generated >= max_new_tokens)
        return step + 1, lm_state, done, eos | ended, logp_total, cost, bad_at, key

    return jax.lax.while_loop(cond, body, carry)


def tokens_chunk(lm: LanguageModel, carry, stop, alpha, top_k: int, rollouts: int, horizon: int, jackknife: bool,
                 proposal: Tempered, max_new_tokens: int):
    """One chunk of the loop under a progress bar: (carry, its step as the marker)."""
    carry = tokens_until(lm, carry, stop, alpha, top_k, rollouts, horizon, jackknife, proposal, max_new_tokens)
    return carry, carry[0] + 0


# the carry is donated: chunks update the particles in place
tokens_chunk_jit = jax.jit(tokens_chunk, static_argnums=(4, 5, 6, 7, 8, 9), donate_argnums=1)


def sample_tokens_in_chunks(lm: LanguageModel, lm_state, key, alpha, top_k: int, rollouts: int, horizon: int,
                            jackknife: bool, proposal: Tempered, max_new_tokens: int):
    """:func:`sample_tokens` under a progress bar (:func:`models.progress.run_in_chunks`), per
    token; the same result."""
    static = (top_k, rollouts, horizon, jackknife, proposal, max_new_tokens)
    carry, _ = progress_lib.run_in_chunks(lambda carry, stop: tokens_chunk_jit(lm, carry, stop, alpha, *static),
                                          tokens_start(lm_state, jnp.copy(key)), max_new_tokens, "power_rollout",
                                          unit="token")
    return carry[1], *carry[3:7]


def power_rollout(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0, *,
                  alpha: float = 4.0, top_k: int = 4, rollouts: int = 4, horizon: int | None = None,
                  jackknife: bool = True, proposal_temperature: float | None = None,
                  progress: bool = True, mesh=None) -> PowerSamples:
    """Rollout-based power sampling: each next token is drawn from the estimated law
    p(v)^alpha zeta_hat(v) over the ``top_k`` most likely tokens, zeta_hat from ``rollouts``
    rollouts per candidate of at most ``horizon`` tokens (default: to the end) drawn at
    temperature 1/alpha (or ``proposal_temperature``), jackknife-corrected by default.
    Cost: about top_k * rollouts * horizon tokens per generated token. Non-finite logits raise
    :class:`~models.interface.NonFiniteLogitsError` naming the step and the particles.
    progress: a progress bar (tqdm auto, per token) when stderr is a terminal or a notebook,
    shown after two seconds; the loop then runs in chunks of one compiled program (the same
    result; :mod:`models.progress`). A batch of prompts shows none.

    ``prompt_ids`` may be a batch of prompts (a list of id lists of any lengths): ``n``
    particles per prompt in one compiled program, a :class:`models.batch.Batch` of one
    :class:`PowerSamples` per prompt; prompt b uses the key ``jax.random.split(key, B)[b]``.
    ``mesh`` (see :func:`genppl.distributed.spread`): the particles (for a batch, the prompts)
    split over the mesh's data axis, the weights replicated; the same draws as on one device.

    >>> import jax
    >>> from genppl import models
    >>> from genppl.inference import power
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> out = power.power_rollout(lm, [1], 4, 3, key=0, alpha=2.0, top_k=4, rollouts=2)
    >>> len(out.texts)
    4
    """
    if not isinstance(lm, LanguageModel):
        raise InputError(f"lm must be a models.LanguageModel, got {type(lm).__name__}")
    check_positive_int(n, "n")
    check_positive_int(max_new_tokens, "max_new_tokens")
    check_positive_int(top_k, "top_k")
    check_positive_int(rollouts, "rollouts")
    if top_k > lm.vocab_size:
        raise InputError(f"top_k={top_k} exceeds the vocabulary ({lm.vocab_size} tokens): lower it")
    horizon = max_new_tokens if horizon is None else check_positive_int(horizon, "horizon")
    if not isinstance(jackknife, (bool, np.bool_)):
        raise InputError(f"jackknife must be True or False, got {jackknife!r}")
    alpha = check_alpha(alpha)
    proposal = tempered(proposal_temperature)
    key = as_key(key)
    what = "jackknife" if jackknife else "plain"
    method = (f"rollout power sampling (alpha={alpha:g}, top-{top_k}, {rollouts} rollouts of <= {horizon} "
              f"tokens, {what} estimate)")
    static = (int(top_k), int(rollouts), int(horizon), bool(jackknife), proposal, int(max_new_tokens))
    if is_prompt_batch(prompt_ids):
        tokens, lengths, padded, capacity = pad_prompts(lm, prompt_ids, max_new_tokens)
        lm.check_memory(len(lengths) * n, capacity, padded)
        keys = jax.random.split(key, len(lengths))
        mesh, placed, _, (tokens, lengths, keys) = distributed.spread(mesh, lm, n, prompts=(tokens, lengths, keys))
        with distributed.on(mesh):
            out = sample_tokens_prompts(placed, tokens, lengths, keys, jnp.float32(alpha), n, capacity, *static)
        layout = distributed.layout_of(mesh, out[0], "prompts")
        results = Batch()
        for b, parts in enumerate(zip(*_host_parts(*out, max_new_tokens))):
            results.append(_samples(lm, *parts, method, f"power_rollout (prompt {b} of the batch)"))
            results[-1].layout = layout
        return results
    state = lm.prefill(prompt_ids, n, max_new_tokens)
    mesh, placed, state, _ = distributed.spread(mesh, lm, n, state)
    loop = sample_tokens_in_chunks if progress and progress_lib.interactive() else sample_tokens
    with distributed.on(mesh):
        out = loop(placed, state, key, jnp.float32(alpha), *static)
    layout = distributed.layout_of(mesh, out[0])
    if distributed.spans_processes(mesh):  # other processes hold some particles: gather them
        out = distributed.to_host(out)
    result = _samples(lm, *_host_parts(*out, max_new_tokens, batched=False), method, "power_rollout")
    result.layout = layout
    return result


def _host_parts(lm_state, eos, logp, cost, bad_at, max_new_tokens: int, batched: bool = True):
    """The host arrays a :class:`PowerSamples` needs (per prompt along a leading axis when
    ``batched``): generated ids, counts, eos, log p, cost, first non-finite step, prompt ids."""
    generated = jax.vmap(lambda s: s.generated_ids(max_new_tokens))(lm_state) if batched else \
        lm_state.generated_ids(max_new_tokens)
    lead = (slice(None), 0) if batched else 0
    return tuple(np.asarray(a) for a in jax.device_get(
        (generated, lm_state.num_generated, eos, logp, cost, bad_at, lm_state.prompt_length[lead],
         lm_state.tokens[lead])))


def _samples(lm, tokens, count, eos, logp, cost, bad_at, start, prompt, method: str, who: str) -> PowerSamples:
    NonFiniteLogitsError.check(who, bad_at)
    decode = lm.tokenizer.decode if lm.tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
    texts = [decode(list(t[:k])) for t, k in zip(tokens, count)]
    return PowerSamples(tokens, count, eos, logp.astype(np.float64), texts, decode(list(prompt[: int(start)])),
                        method=method, acceptance=np.zeros((0,)), tokens_generated=cost)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9, 10, 11, 12))
def sample_tokens_prompts(lm: LanguageModel, tokens, lengths, keys, alpha, n: int, capacity: int, top_k: int,
                          rollouts: int, horizon: int, jackknife: bool, proposal: Tempered, max_new_tokens: int):
    """:func:`sample_tokens` for B prompts in one program: tokens [B, P] padded, lengths [B],
    keys [B]; ``n`` particles per prompt. Outputs lead with B."""
    def one(lm_state, key):
        return sample_tokens(lm, lm_state, key, alpha, top_k, rollouts, horizon, jackknife, proposal, max_new_tokens)

    return map_prompt_states(one, lm, tokens, lengths, n, capacity, keys)
