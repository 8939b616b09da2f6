"""The language-model interface every kernel uses.

A language model here is a pytree (its weights are leaves, its structure is static), so that
kernels can pass it into ``jax.jit`` as an argument instead of baking weights into the program
as constants. Its state, :class:`LMState`, is a pytree whose every leaf leads with the particle
axis, so resampling particles is ``LanguageModel.gather(state, idx)``.

Buffers have a fixed size ``T = prompt length + max_new_tokens``, chosen at :meth:`prefill`;
a whole generation therefore compiles once.
"""

from __future__ import annotations

import abc
import numbers

import jax
import jax.numpy as jnp
from flax import struct


#: prompts are padded to a multiple of this many tokens (fewer distinct compiled shapes)
PROMPT_BUCKET = 16


class InputError(ValueError):
    """Bad input at a public boundary; the message says what to change."""


@struct.dataclass
class LMState:
    """The batched state of ``n`` partial generations.

    tokens:        [n, T] int32, the prompt followed by the generated tokens (0 past ``length``).
    length:        [n] int32, number of valid tokens in ``tokens`` (prompt included).
    prompt_length: [n] int32, length of the shared prompt.
    logits:        [n, V] float32, next-token logits after the last valid token.
    cache:         model-specific pytree (a KV cache, a table index), leaves lead with n.
    """

    tokens: jax.Array
    length: jax.Array
    prompt_length: jax.Array
    logits: jax.Array
    cache: object

    @property
    def num_particles(self) -> int:
        return self.tokens.shape[0]

    @property
    def capacity(self) -> int:
        """Total buffer size T (prompt plus room for new tokens)."""
        return self.tokens.shape[1]

    @property
    def num_generated(self) -> jax.Array:
        return self.length - self.prompt_length

    def generated_ids(self, width: int, pad: int = 0) -> jax.Array:
        """[n, width] generated ids of each particle (traceable), ``pad`` past its end."""
        idx = self.prompt_length[:, None] + jnp.arange(width, dtype=jnp.int32)[None]
        tokens = jnp.take_along_axis(self.tokens, jnp.minimum(idx, self.capacity - 1), 1)
        return jnp.where(idx < self.length[:, None], tokens, pad).astype(jnp.int32)

    def generated(self):
        """Host-side list of the generated token ids of each particle."""
        tokens, length, start = jax.device_get((self.tokens, self.length, self.prompt_length))
        return [list(map(int, t[s:l])) for t, s, l in zip(tokens, start, length)]


class LanguageModel(abc.ABC):
    """Next-token distributions and sequence likelihoods over a batch of particles.

    Subclasses implement :meth:`_initial` and :meth:`_forward`; everything else is shared.
    Every method is a pure function of its arguments, traceable inside ``jax.jit``.
    """

    vocab_size: int
    eos_id: int
    tokenizer: object  # models.tokenizer.Tokenizer-like: encode, decode, token_bytes
    max_length: int | None = None  # the model's context limit, None if unbounded

    # ---- to implement -------------------------------------------------------------------
    @abc.abstractmethod
    def _initial(self, prompt: jax.Array, prompt_length, capacity: int) -> tuple[jax.Array, object]:
        """Run the prompt once: ``prompt`` [P'] holds ``prompt_length`` real tokens followed by
        padding. Return (next-token logits [V] after the last real token, cache for ONE
        particle with room for ``capacity`` positions; leaves lead with a batch axis of 1)."""

    @abc.abstractmethod
    def _forward(self, cache, tokens, positions, mask) -> tuple[jax.Array, object]:
        """Append tokens [n, L] at positions [n, L] (mask [n, L] marks the real ones, a
        prefix of each row). Return (logits [n, L, V] after each token, new cache)."""

    # ---- shared verbs -------------------------------------------------------------------
    def prefill(self, prompt_ids, n: int, max_new_tokens: int) -> LMState:
        """Encode the prompt once and share its cache among ``n`` particles.

        The prompt is padded to a multiple of ``PROMPT_BUCKET`` tokens so that prompts of
        similar length share one compiled program; padding is never attended to.
        """
        prompt = self._check_prompt(prompt_ids, max_new_tokens)
        check_positive_int(n, "n (the number of particles)")
        length = int(prompt.shape[0])
        padded = -(-length // PROMPT_BUCKET) * PROMPT_BUCKET
        capacity = padded + int(max_new_tokens)
        if self.max_length is not None:
            capacity = min(capacity, self.max_length)
            padded = min(padded, capacity)
        tokens = jnp.zeros((padded,), jnp.int32).at[:length].set(prompt)
        logits, cache = _initial_jit(self, tokens, jnp.int32(length), capacity)
        one = LMState(
            tokens=jnp.zeros((1, capacity), jnp.int32).at[0, :length].set(prompt),
            length=jnp.array([length], jnp.int32),
            prompt_length=jnp.array([length], jnp.int32),
            logits=logits.astype(jnp.float32)[None],
            cache=cache,
        )
        return self.gather(one, jnp.zeros((n,), jnp.int32))

    def logits(self, state: LMState) -> jax.Array:
        """Next-token logits [n, V] (float32)."""
        return state.logits

    def log_probs(self, state: LMState) -> jax.Array:
        """Next-token log-probabilities [n, V] (float32)."""
        return jax.nn.log_softmax(state.logits, axis=-1)

    def extend(self, state: LMState, tokens: jax.Array, active: jax.Array | None = None) -> LMState:
        """Append one token per particle; particles with ``active == False`` stay unchanged."""
        tokens = jnp.asarray(tokens, jnp.int32)[:, None]
        mask = jnp.ones_like(tokens, bool) if active is None else jnp.asarray(active, bool)[:, None]
        return self.advance(state, tokens, mask)[0]

    def advance(self, state: LMState, tokens: jax.Array, mask: jax.Array | None = None):
        """Append up to L tokens per particle in one forward pass.

        tokens [n, L]; mask [n, L] marks real tokens and must be a prefix of each row.
        Returns (new state, log-probs [n, L] of the tokens under the model, 0 where masked).
        Tokens beyond the buffer capacity are dropped (their log-prob is still reported).
        """
        tokens = jnp.asarray(tokens, jnp.int32)
        mask = jnp.ones(tokens.shape, bool) if mask is None else jnp.asarray(mask, bool)
        return _advance_jit(self, state, tokens, mask)

    def _advance(self, state: LMState, tokens: jax.Array, mask: jax.Array):
        n, L = tokens.shape
        positions = state.length[:, None] + jnp.arange(L, dtype=jnp.int32)[None]
        step_logits, cache = self._forward(state.cache, tokens, positions, mask)
        step_logits = step_logits.astype(jnp.float32)
        # logits predicting token t: the state's for t = 0, the forward pass's t-1 after that
        before = jnp.concatenate([state.logits[:, None], step_logits[:, :-1]], axis=1)
        logp = jnp.take_along_axis(jax.nn.log_softmax(before, -1), tokens[..., None], -1)[..., 0]
        logp = jnp.where(mask, logp, 0.0)
        count = mask.sum(-1).astype(jnp.int32)
        last = jnp.take_along_axis(step_logits, jnp.maximum(count - 1, 0)[:, None, None], 1)[:, 0]
        rows = jnp.arange(n)[:, None]
        write_pos = jnp.where(mask, positions, state.capacity)  # out of range: dropped
        new = state.replace(
            tokens=state.tokens.at[rows, write_pos].set(tokens, mode="drop"),
            length=jnp.minimum(state.length + count, state.capacity),
            logits=jnp.where((count > 0)[:, None], last, state.logits),
            cache=cache,
        )
        return new, logp

    def score(self, state: LMState, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Per-token log-probs [n, L] of continuations given the state (one forward pass)."""
        return self.advance(state, tokens, mask)[1]

    def truncate(self, state: LMState, length: jax.Array) -> LMState:
        """Cut each particle back to ``length`` tokens (``prompt_length <= length``).

        Recomputes the next-token logits with a one-token pass over the token at
        ``length - 1``; entries of the cache past it are overwritten as generation resumes.
        """
        length = jnp.broadcast_to(jnp.asarray(length, jnp.int32), state.length.shape)
        last = jnp.take_along_axis(state.tokens, (length - 1)[:, None], 1)
        rewound = state.replace(length=length - 1)
        return self.advance(rewound, last)[0]

    @staticmethod
    def gather(state: LMState, idx: jax.Array) -> LMState:
        """Select particles by index (resampling): every leaf leads with the particle axis."""
        return jax.tree.map(lambda x: x[idx], state)

    # ---- validation ---------------------------------------------------------------------
    def _check_prompt(self, prompt_ids, max_new_tokens) -> jax.Array:
        if isinstance(prompt_ids, str):
            raise InputError("prompt_ids must be token ids; encode text with lm.tokenizer.encode(text)")
        prompt = jnp.asarray(prompt_ids, jnp.int32)
        if prompt.ndim != 1:
            raise InputError(f"the prompt must be a 1-D sequence of token ids, got shape {prompt.shape}")
        if prompt.shape[0] == 0:
            raise InputError("the prompt is empty: give at least one token (e.g. the BOS or EOS id)")
        check_positive_int(max_new_tokens, "max_new_tokens")
        if isinstance(prompt_ids, jax.core.Tracer):
            return prompt
        lo, hi = int(prompt.min()), int(prompt.max())
        if lo < 0 or hi >= self.vocab_size:
            raise InputError(f"prompt token ids must lie in [0, {self.vocab_size}), got {lo}..{hi}")
        if self.max_length is not None and prompt.shape[0] + max_new_tokens > self.max_length:
            raise InputError(
                f"prompt length {prompt.shape[0]} + max_new_tokens {max_new_tokens} exceeds the "
                f"model's context of {self.max_length} tokens: shorten the prompt or lower max_new_tokens"
            )
        return prompt


# Subclasses are pytrees, so the model itself is a jit argument (weights are not constants).
_initial_jit = jax.jit(lambda lm, prompt, length, capacity: lm._initial(prompt, length, capacity),
                       static_argnums=3)
_advance_jit = jax.jit(lambda lm, state, tokens, mask: lm._advance(state, tokens, mask))


def check_positive_int(value, name: str) -> int:
    """Validate a count at the public boundary."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
