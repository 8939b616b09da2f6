"""Plain ancestral sampling: the baseline every inference kernel is measured against."""

from __future__ import annotations

import collections
import dataclasses
import html
import math

import jax
import jax.numpy as jnp
import numpy as np

from .interface import InputError, LanguageModel, check_positive_int

# Counts traces of the decode loop body, keyed by function name: a test asserts one per
# configuration, i.e. the loop compiles once and not once per token.
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class Processing:
    """How logits become the sampling distribution (static: part of the compiled program)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise InputError(f"temperature must be a positive number, got {t!r} (use e.g. 1.0; "
                             "for greedy decoding use a small temperature such as 1e-4)")
        if self.top_k is not None:
            check_positive_int(self.top_k, "top_k")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1):
            raise InputError(f"top_p must lie in (0, 1], got {p!r}")


def process_logits(logits: jax.Array, processing: Processing = Processing()) -> jax.Array:
    """Log-probabilities [n, V] of the processed distribution (temperature, then top-k, top-p)."""
    scaled = logits.astype(jnp.float32) / processing.temperature
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


@dataclasses.dataclass
class Samples:
    """N sequences drawn from one prompt.

    token_ids: [n, max_new_tokens] generated ids (EOS included where it was drawn, then 0).
    num_tokens: [n] generated tokens per sequence; finished: [n] whether it ended with EOS.
    log_probs: [n] log p(sequence) under the model's raw distribution.
    """

    token_ids: np.ndarray
    num_tokens: np.ndarray
    finished: np.ndarray
    log_probs: np.ndarray
    texts: list[str]
    prompt: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def sequences(self) -> list[tuple[int, ...]]:
        return [tuple(map(int, t[:k])) for t, k in zip(self.token_ids, self.num_tokens)]

    def __repr__(self) -> str:
        lines = [f"Samples(n={len(self)}, finished={int(self.finished.sum())}/{len(self)}, "
                 f"mean tokens={self.num_tokens.mean():.1f})"]
        for text, lp in list(zip(self.texts, self.log_probs))[:5]:
            lines.append(f"  [{lp:8.2f}] {text!r}")
        if len(self) > 5:
            lines.append(f"  ... {len(self) - 5} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{i}</td><td>{lp:.2f}</td><td>{k}</td><td>{'✓' if f else ''}</td>"
            f"<td style='text-align:left'><code>{html.escape(t)}</code></td></tr>"
            for i, (t, lp, k, f) in enumerate(zip(self.texts, self.log_probs, self.num_tokens, self.finished))
            if i < 50
        )
        return ("<table><tr><th>#</th><th>log p</th><th>tokens</th><th>EOS</th><th>text</th></tr>"
                f"{rows}</table><p>{len(self)} samples</p>")


def sample(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key: jax.Array,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           min_new_tokens: int = 0) -> Samples:
    """Draw ``n`` continuations of one prompt; each stops at EOS or after ``max_new_tokens``.

    EOS is forbidden before ``min_new_tokens`` tokens (as in transformers' ``generate``).

    >>> import jax
    >>> from genppl import models
    >>> lm = models.load()                                    # the bundled model
    >>> ids = lm.tokenizer.encode("S:")
    >>> out = models.sample(lm, ids, n=4, max_new_tokens=24, key=jax.random.key(0))
    >>> len(out.texts)
    4
    """
    processing = Processing(temperature, top_k, top_p)
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, int) or min_new_tokens < 0:
        raise InputError(f"min_new_tokens must be a non-negative integer, got {min_new_tokens!r}")
    state = lm.prefill(prompt_ids, n, max_new_tokens)
    prompt_length = int(state.prompt_length[0])
    tokens, count, finished, logp = generate(lm, state, key, max_new_tokens, processing, min_new_tokens)
    tokens, count, finished, logp = jax.device_get((tokens, count, finished, logp))
    decode = lm.tokenizer.decode if lm.tokenizer is not None else lambda ids: " ".join(map(str, ids))
    texts = [decode(t[:k]) for t, k in zip(tokens, count)]
    prompt = decode(list(prompt_ids)[:prompt_length])
    return Samples(np.asarray(tokens), np.asarray(count), np.asarray(finished), np.asarray(logp), texts, prompt)


def _generate(lm, state, key, max_new_tokens, processing, min_new_tokens=0):
    """The decode loop: one compiled ``while_loop`` that stops when every particle is done."""
    n = state.num_particles
    start = state.prompt_length[0]

    def cond(carry):
        step, _, done, *_ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        TRACE_COUNTS["generate"] += 1
        step, state, done, logp, key = carry
        key, sub = jax.random.split(key)
        proposal = process_logits(state.logits, processing)
        if min_new_tokens:
            proposal = proposal.at[:, lm.eos_id].set(jnp.where(step < min_new_tokens, -jnp.inf, proposal[:, lm.eos_id]))
        token = jax.random.categorical(sub, proposal, axis=-1).astype(jnp.int32)
        logp = logp + jnp.where(done, 0.0, jax.nn.log_softmax(state.logits, -1)[jnp.arange(n), token])
        state = lm.extend(state, token, active=~done)
        done = done | (token == lm.eos_id)
        return step + 1, state, done, logp, key

    init = (jnp.int32(0), state, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32), key)
    _, state, done, logp, _ = jax.lax.while_loop(cond, body, init)
    generated = jax.lax.dynamic_slice_in_dim(state.tokens, start, max_new_tokens, axis=1)
    return generated, state.length - start, done, logp


generate = jax.jit(_generate, static_argnums=(3, 4, 5))
