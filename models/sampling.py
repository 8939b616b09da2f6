"""Plain ancestral sampling: the baseline every inference kernel is measured against."""

from __future__ import annotations

import dataclasses
import functools
import html
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from . import progress as progress_lib
from .batch import Batch, any_prompt, is_prompt_batch, map_prompt_states, pad_prompts
from .interface import InputError, LanguageModel, NonFiniteLogitsError, as_key, check_positive_int, nonfinite_rows


@dataclasses.dataclass(frozen=True)
class Processing:
    """How logits become the sampling distribution (hashable: a static part of the compiled program).

    temperature: a positive finite number; any positive value works, down to the smallest
    float (the limit T -> 0 is greedy decoding, ties shared uniformly). top_k: a positive
    integer or None. top_p: a number in (0, 1] or None. Values are stored as Python
    ``float`` / ``int`` so that equal settings compare and hash equal.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t <= 0:
            raise InputError(f"temperature must be a positive number, got {t!r} (use e.g. 1.0; "
                             "for greedy decoding use a small temperature such as 1e-4)")
        object.__setattr__(self, "temperature", float(t))
        if self.top_k is not None:
            object.__setattr__(self, "top_k", check_positive_int(self.top_k, "top_k"))
        p = self.top_p
        if p is not None:
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
                raise InputError(f"top_p must lie in (0, 1], got {p!r}")
            object.__setattr__(self, "top_p", float(p))


def process_logits(logits: jax.Array, processing: Processing = Processing()) -> jax.Array:
    """Log-probabilities [n, V] of the processed distribution (temperature, then top-k, top-p).

    Temperature: log q = log_softmax((l - max l) / T). The maximum is subtracted *before*
    dividing, so that a tiny T never overflows: the top logits map to 0 and the others to
    large negative numbers (or -inf), which is greedy decoding in the limit T -> 0. Top-k
    keeps the k largest logits; top-p keeps the smallest set of most likely tokens whose mass
    reaches p (the most likely token is always kept); the rest get -inf.
    """
    logits = logits.astype(jnp.float32)
    top = jnp.max(logits, axis=-1, keepdims=True)
    # entries equal to a finite max map to exactly 0 (no 0/0 when T underflows to 0 in float32);
    # a row with a NaN or +inf, or with every entry -inf, stays non-finite (see nonfinite_rows)
    at_top = (logits == top) & jnp.isfinite(top)
    temperature = min(processing.temperature, float(np.finfo(np.float32).max))  # T -> inf: uniform
    scaled = jnp.where(at_top, 0.0, (logits - top) / jnp.float32(temperature))
    if processing.top_k is not None and processing.top_k < scaled.shape[-1]:
        kth = jax.lax.top_k(scaled, processing.top_k)[0][..., -1:]
        scaled = jnp.where(scaled >= kth, scaled, -jnp.inf)
    if processing.top_p is not None and processing.top_p < 1.0:
        order = jnp.argsort(-scaled, axis=-1)
        sorted_logits = jnp.take_along_axis(scaled, order, -1)
        probs = jax.nn.softmax(sorted_logits, -1)
        mass_before = jnp.cumsum(probs, -1) - probs
        keep_sorted = mass_before < processing.top_p  # the most likely token is always kept
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(scaled.shape[0])[:, None], order].set(keep_sorted)
        scaled = jnp.where(keep, scaled, -jnp.inf)
    return jax.nn.log_softmax(scaled, -1)


def categorical(key, logits: jax.Array) -> jax.Array:
    """One draw per row of ``logits`` [..., V] from ``p(v) ∝ exp(logits[..., v])`` (int32 [...]).

    Inverse CDF with ONE uniform per row: with weights ``w_v = exp(l_v - max l)`` and their
    running sums ``c_v = w_0 + ... + w_v``, draw ``u ~ U[0, 1)`` and return the first ``v``
    with ``c_v > u * c_{V-1}``, so ``P(v) = w_v / c_{V-1} = p(v)`` (the law of
    ``jax.random.categorical``, which instead spends V Gumbel variates per row: on a 2-core
    CPU this is 4-6x cheaper at N = 64..256, V = 1024). A ``-inf`` logit has weight 0 and is
    never drawn (``u * c_{V-1}`` is kept strictly below ``c_{V-1}``, and a zero-weight token
    adds nothing to the running sum). Resolution: ``u`` has 2^-23 steps, so probabilities
    below ~1e-7 are rounded, as with any float32 sampler. A row with no finite logit (every
    entry -inf; callers mask such rows) returns V - 1. Traceable, vmappable; rows are
    independent given the key (``jax.random.uniform(key, logits.shape[:-1])``).

    Every kernel that samples tokens draws them with this function (plain decoding, program
    proposals in SMC, MH suffix proposals, rollout power sampling), so one key gives one law.
    """
    logits = jnp.asarray(logits, jnp.float32)
    top = jnp.max(logits, axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    cdf = jnp.cumsum(jnp.exp(logits - top), axis=-1)
    total = cdf[..., -1:]
    u = jax.random.uniform(key, logits.shape[:-1] + (1,), jnp.float32)
    target = jnp.minimum(u * total, jnp.nextafter(total, jnp.float32(0.0)))
    index = jnp.sum(cdf <= target, axis=-1)
    return jnp.minimum(index, logits.shape[-1] - 1).astype(jnp.int32)


@dataclasses.dataclass
class Samples:
    """N sequences drawn from one prompt.

    token_ids: [n, max_new_tokens] generated ids (EOS included where it was drawn, then 0).
    num_tokens: [n] generated tokens per sequence; finished: [n] whether it ended with EOS.
    log_probs: [n] log p(sequence) under the model's raw distribution.
    nonfinite: [n] whether the model's logits became NaN/inf for this sequence (it was then
    stopped, unfinished, its log_probs covering the tokens before; see ``sample``).
    """

    token_ids: np.ndarray
    num_tokens: np.ndarray
    finished: np.ndarray
    log_probs: np.ndarray
    texts: list[str]
    prompt: str | None = None
    nonfinite: np.ndarray | None = None
    #: what produced the samples (function, key, options, lm), for run records
    provenance: dict | None = dataclasses.field(default=None, repr=False, compare=False)
    #: where the call ran on a device mesh (``genppl.distributed.Layout``; None on one device)
    layout: object | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.nonfinite is None:
            self.nonfinite = np.zeros(len(self.texts), bool)

    def __len__(self) -> int:
        return len(self.texts)

    def sequences(self) -> list[tuple[int, ...]]:
        return [tuple(map(int, t[:k])) for t, k in zip(self.token_ids, self.num_tokens)]

    def __repr__(self) -> str:
        bad = int(np.sum(self.nonfinite))
        lines = [f"Samples(n={len(self)}, finished={int(self.finished.sum())}/{len(self)}, "
                 f"mean tokens={self.num_tokens.mean():.1f}" + (f", non-finite logits={bad}" if bad else "") + ")"]
        for text, lp in list(zip(self.texts, self.log_probs))[:5]:
            lines.append(f"  [{lp:8.2f}] {text!r}")
        if len(self) > 5:
            lines.append(f"  ... {len(self) - 5} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        try:  # genppl.viz is a leaf package (it imports nothing of genppl)
            from genppl import viz

            return viz.samples_html(self)
        except ImportError:
            pass
        rows = "".join(
            f"<tr><td>{i}</td><td>{lp:.2f}</td><td>{k}</td><td>{'✓' if f else ''}</td>"
            f"<td style='text-align:left'><code>{html.escape(t)}</code></td></tr>"
            for i, (t, lp, k, f) in enumerate(zip(self.texts, self.log_probs, self.num_tokens, self.finished))
            if i < 50
        )
        return ("<table><tr><th>#</th><th>log p</th><th>tokens</th><th>EOS</th><th>text</th></tr>"
                f"{rows}</table><p>{len(self)} samples</p>")


def sample(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key=0,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           min_new_tokens: int = 0, check_finite: bool = True, progress: bool = True, mesh=None) -> Samples:
    """Draw ``n`` continuations of one prompt; each stops at EOS or after ``max_new_tokens``.

    Each token is drawn from ``process_logits(logits, Processing(temperature, top_k, top_p))``;
    the reported ``log_probs`` are under the raw model. EOS is forbidden before
    ``min_new_tokens`` tokens (as in transformers' ``generate``). ``key``: an int seed or a
    JAX key (see :func:`models.interface.as_key`). The whole decode loop is one compiled
    program per (shapes, ``max_new_tokens``, processing, ``min_new_tokens``).

    Non-finite logits (NaN, +inf, or a row of -inf: a broken checkpoint or a low-precision
    overflow) stop the affected sequence; with ``check_finite`` (the default) ``sample`` then
    raises :class:`~models.interface.NonFiniteLogitsError` naming the first step and the
    particles, otherwise it returns them flagged in ``Samples.nonfinite``.

    progress: a progress bar (tqdm auto, per token) when stderr is a terminal or a notebook;
    it appears only when the call lasts over two seconds (:mod:`models.progress`: the loop
    runs in chunks of one compiled program, the same samples).

    Many prompts: ``prompt_ids`` may be a batch of prompts (a list of id lists of any
    lengths, or a 2-D array; see :mod:`models.batch`). They run in ONE compiled program,
    ``n`` samples per prompt, and the result is a :class:`models.batch.Batch` of one
    :class:`Samples` per prompt; prompt b uses the key ``jax.random.split(key, B)[b]``, so
    ``out[b]`` equals ``sample(lm, prompts[b], n, ..., key=jax.random.split(key, B)[b])``.

    Many devices: ``mesh`` (None, a number of devices, or a ``(data, model)``
    :class:`jax.sharding.Mesh`; see :mod:`genppl.distributed`) splits the ``n`` samples (for
    a batch: the prompts) over the mesh's data axis and replicates the weights; the draws are
    the one-device draws, token for token (JAX's partitionable threefry makes random bits
    independent of the layout). ``out.layout`` then says where the call lived.

    >>> from genppl import models
    >>> lm = models.load()                                    # the bundled model
    >>> ids = lm.tokenizer.encode("S:")
    >>> out = models.sample(lm, ids, n=4, max_new_tokens=24, key=0)
    >>> len(out.texts)
    4
    """
    processing = Processing(temperature, top_k, top_p)
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, numbers.Integral) or min_new_tokens < 0:
        raise InputError(f"min_new_tokens must be a non-negative integer, got {min_new_tokens!r}")
    key = as_key(key)
    if is_prompt_batch(prompt_ids):
        return sample_prompts(lm, prompt_ids, n, max_new_tokens, key, processing, int(min_new_tokens), check_finite,
                              mesh)
    if not isinstance(prompt_ids, jax.core.Tracer):  # the whole call's memory, before anything is allocated
        length = int(lm.check_prompt(prompt_ids, max_new_tokens).shape[0])
        lm.plan_memory(check_positive_int(n, "n (the number of particles)"), max_new_tokens, length).check(
            where="models.sample")
    state = lm.prefill(prompt_ids, n, max_new_tokens)
    prompt_length = int(jax.device_get(state.prompt_length)[0])  # no eager device op (nothing to compile)
    layout = None
    if mesh is not None:  # imported here: genppl.distributed builds on this package
        from genppl import distributed

        mesh, lm, state, _ = distributed.spread(mesh, lm, n, state)
        layout = distributed.layout_of(mesh, state)
    run = generate_in_chunks if progress and progress_lib.interactive() else generate
    out = run(lm, state, key, int(max_new_tokens), processing, int(min_new_tokens))
    fetch = distributed.to_host if mesh is not None else jax.device_get  # to_host: every process's rows
    tokens, count, finished, logp, bad_step = fetch(out)
    nonfinite = np.asarray(bad_step) >= 0
    if check_finite:
        NonFiniteLogitsError.check("models.sample", bad_step)
    decode = lm.tokenizer.decode if lm.tokenizer is not None else lambda ids: " ".join(map(str, ids))
    texts = [decode(t[:k]) for t, k in zip(tokens, count)]
    prompt = decode(np.asarray(prompt_ids).reshape(-1)[:prompt_length].tolist())
    out = Samples(np.asarray(tokens), np.asarray(count), np.asarray(finished), np.asarray(logp), texts, prompt,
                  nonfinite, layout=layout)
    out.provenance = {"function": "genppl.models.sample", "prompt_ids": np.asarray(prompt_ids).reshape(-1).tolist(),
                      "n": n, "max_new_tokens": int(max_new_tokens), "key": key, "temperature": temperature,
                      "top_k": top_k, "top_p": top_p, "min_new_tokens": int(min_new_tokens), "lm": lm}
    return out


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def generate(lm: LanguageModel, state, key, max_new_tokens: int, processing: Processing, min_new_tokens: int = 0):
    """The decode loop: one compiled ``while_loop`` that stops when every particle is done.

    Static: ``max_new_tokens``, ``processing`` (a hashable :class:`Processing`) and
    ``min_new_tokens``. Returns (tokens [n, max_new_tokens], num_tokens [n], finished [n]
    (ended with EOS), log p [n] under the raw model, nonfinite_step [n] int32: the step at
    which the particle's logits were non-finite (it stopped there), -1 if never).
    """
    carry = decode_start(state, key)
    return decode_finish(decode_until(lm, carry, max_new_tokens, max_new_tokens, processing, min_new_tokens),
                         max_new_tokens)


def decode_start(state, key):
    """The decode loop's carry: (step, LM state, done, eos, log p, nonfinite step, key)."""
    n = state.num_particles  # every leaf its own array (a chunked loop donates the carry)
    return (jnp.int32(0), state, jnp.zeros((n,), bool), jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32),
            jnp.full((n,), -1, jnp.int32), jnp.copy(key))  # a copy: donating it must not delete the caller's key


def decode_until(lm: LanguageModel, carry, stop, max_new_tokens: int, processing: Processing,
                 min_new_tokens: int = 0):
    """The decode loop from ``carry`` until its step reaches ``stop`` (a Python or traced
    int; :func:`generate` runs it to ``max_new_tokens`` at once, a progress bar in chunks)
    or every particle is done. Traceable."""
    n = carry[1].num_particles

    def cond(carry):
        step, _, done, *_ = carry
        # or-ed over a batch's prompts: an unbatched predicate spares vmap a select of the whole
        # carry (the KV caches) at every step; a prompt whose particles are all done idles
        return any_prompt((step < stop) & (step < max_new_tokens) & ~jnp.all(done))

    def body(carry):
        step, state, done, eos, logp, bad_step, key = carry
        key, sub = jax.random.split(key)
        bad = nonfinite_rows(state.logits) & ~done
        bad_step = jnp.where(bad, step, bad_step)
        done = done | bad
        proposal = process_logits(state.logits, processing)
        if min_new_tokens:
            proposal = proposal.at[:, lm.eos_id].set(jnp.where(step < min_new_tokens, -jnp.inf, proposal[:, lm.eos_id]))
        token = categorical(sub, proposal)
        logp = logp + jnp.where(done, 0.0, jax.nn.log_softmax(state.logits, -1)[jnp.arange(n), token])
        state = lm.extend(state, token, active=~done)
        eos = eos | (~done & (token == lm.eos_id))
        return step + 1, state, done | eos, eos, logp, bad_step, key

    return jax.lax.while_loop(cond, body, carry)


def decode_finish(carry, max_new_tokens: int):
    """:func:`generate`'s outputs from the loop's final carry."""
    _, state, _, eos, logp, bad_step, _ = carry
    start = state.prompt_length[0]
    generated = jax.lax.dynamic_slice_in_dim(state.tokens, start, max_new_tokens, axis=1)
    return generated, state.length - start, eos, logp, bad_step


def decode_chunk(lm: LanguageModel, carry, stop, max_new_tokens: int, processing: Processing, min_new_tokens: int):
    """One chunk of the decode loop under a progress bar: (carry, its step as the marker)."""
    carry = decode_until(lm, carry, stop, max_new_tokens, processing, min_new_tokens)
    return carry, carry[0] + 0


# the carry is donated: chunks update the LM state in place
decode_chunk_jit = jax.jit(decode_chunk, static_argnums=(3, 4, 5), donate_argnums=1)
decode_finish_jit = jax.jit(decode_finish, static_argnums=1)


def generate_in_chunks(lm: LanguageModel, state, key, max_new_tokens: int, processing: Processing,
                       min_new_tokens: int = 0):
    """:func:`generate` under a progress bar (:func:`models.progress.run_in_chunks`); the same bits."""
    carry, _ = progress_lib.run_in_chunks(
        lambda carry, stop: decode_chunk_jit(lm, carry, stop, max_new_tokens, processing, min_new_tokens),
        decode_start(state, key), max_new_tokens, "sample", unit="token")
    return decode_finish_jit(carry, max_new_tokens)


def generate_prompts(lm: LanguageModel, tokens, lengths, keys, n: int, capacity: int, max_new_tokens: int,
                     processing: Processing, min_new_tokens: int = 0):
    """:func:`generate` for B prompts in one program: tokens [B, P] (padded), lengths [B],
    keys [B]; ``n`` samples per prompt. The prompt pass and the decode loop of every prompt are
    mapped over the prompt axis (``jax.vmap``, the LM shared). Outputs lead with B."""

    def one(state, key):
        bad_prompt = nonfinite_rows(state.logits[:1])[0]
        return generate(lm, state, key, max_new_tokens, processing, min_new_tokens) + (bad_prompt,)

    return map_prompt_states(one, lm, tokens, lengths, n, capacity, keys)


# static: the particle count, the buffer size, max_new_tokens, the processing, min_new_tokens
generate_prompts_jit = jax.jit(generate_prompts, static_argnums=(4, 5, 6, 7, 8))


def sample_prompts(lm: LanguageModel, prompts, n: int, max_new_tokens: int, key, processing: Processing,
                   min_new_tokens: int, check_finite: bool, mesh=None) -> Batch:
    """The many-prompt branch of :func:`sample` (one compiled program for the batch; on a
    mesh, the prompt axis split over its data axis)."""
    n = check_positive_int(n, "n (the number of samples per prompt)")
    tokens, lengths, padded, capacity = pad_prompts(lm, prompts, max_new_tokens)
    plan = lm.plan_memory(n, max_new_tokens, int(lengths.max()), num_prompts=len(lengths)).check(where="models.sample")
    keys = jax.random.split(key, len(lengths))
    device_tokens, device_lengths, layout = tokens, lengths, None
    if mesh is not None:  # imported here: genppl.distributed builds on this package
        from genppl import distributed

        mesh, lm, _, (device_tokens, device_lengths, keys) = distributed.spread(mesh, lm, n, prompts=(tokens, lengths, keys))
        layout = distributed.layout_of(mesh, plan.state, "prompts")
    out = generate_prompts_jit(lm, device_tokens, device_lengths, keys, n, capacity, int(max_new_tokens), processing,
                               min_new_tokens)
    fetch = distributed.to_host if mesh is not None else jax.device_get  # to_host: every process's rows
    generated, count, finished, logp, bad_step, bad_prompt = (np.asarray(a) for a in fetch(out))
    decode = lm.tokenizer.decode if lm.tokenizer is not None else lambda ids: " ".join(map(str, ids))
    results = Batch()
    for b, length in enumerate(lengths):
        if bad_prompt[b]:
            raise NonFiniteLogitsError.at(f"prefill (prompt {b} of the batch)", None, range(n), n)
        if check_finite:
            NonFiniteLogitsError.check(f"models.sample (prompt {b} of the batch)", bad_step[b])
        texts = [decode(t[:k]) for t, k in zip(generated[b], count[b])]
        results.append(Samples(generated[b], count[b], finished[b], logp[b], texts,
                               decode(tokens[b, :length].tolist()), bad_step[b] >= 0, layout=layout))
    return results


__all__ = ["Processing", "Samples", "categorical", "generate", "generate_prompts", "process_logits", "sample"]
