"""The language-model interface every kernel uses.

A language model here is a pytree (its weights are leaves, its structure is static), so that
kernels can pass it into ``jax.jit`` as an argument instead of baking weights into the program
as constants. Its state, :class:`LMState`, is a pytree whose every leaf leads with the particle
axis, except the parts wrapped in :class:`Shared` (a prompt's KV cache, stored once for all the
particles of the prompt); resampling particles is ``LanguageModel.gather(state, idx)``, and any
particle-wise map over a state goes through :func:`map_particles`, which leaves shared parts
alone. :meth:`LanguageModel.plan_memory` estimates a call's bytes before anything is allocated.

Buffers have a fixed size ``T = padded prompt length + max_new_tokens``, chosen at
:meth:`LanguageModel.prefill`; a whole generation therefore compiles once, and prompts whose
lengths fall in one bucket of ``PROMPT_BUCKET`` tokens share that compiled program.

Nothing here jits itself except :meth:`LanguageModel.prefill`, the eager entry point, which
runs ``jax.jit`` of the pure :meth:`LanguageModel.prompt_state` (static: the buffer size) and
of :func:`broadcast_particles` (static: the particle count): plain jitted pure functions,
whose only state is JAX's own compilation cache. The per-token verbs (:meth:`~LanguageModel.advance`,
:meth:`~LanguageModel.extend`, :meth:`~LanguageModel.truncate`, ...) are plain traceable
functions: kernels call them inside their own jitted loops; called eagerly they run op by op.

Public helpers for kernels: :func:`as_key` (an int seed or a key -> a key),
:func:`nonfinite_rows` / :func:`check_finite_logits` (NaN / inf logits), :func:`as_token_ids`
(prompt validation), :func:`available_memory_bytes` (the memory check in ``prefill``).
"""

from __future__ import annotations

import abc
import functools
import numbers
import json
import os
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


#: prompts are padded to a multiple of this many tokens (fewer distinct compiled shapes)
PROMPT_BUCKET = 16


class InputError(ValueError):
    """Bad input at a public boundary; the message says what to change."""


class NonFiniteLogitsError(InputError):
    """The model produced NaN or infinite next-token logits (not a constraint ruling tokens out).

    ``step`` is the generation step (the number of tokens generated before the bad logits;
    ``None`` for the logits after the prompt) and ``particles`` the affected particle indices.
    """

    def __init__(self, message: str, step: int | None = None, particles: tuple = ()):
        super().__init__(message)
        self.step = step
        self.particles = tuple(particles)

    @classmethod
    def check(cls, where: str, steps) -> None:
        """Raise if any entry of ``steps`` [n] (host array: the generation step at which each
        particle met non-finite logits, -1 if never) is set; names the first step and the
        particles that met it there."""
        steps = np.asarray(steps)
        hit = steps >= 0
        if hit.any():
            first = int(steps[hit].min())
            raise cls.at(where, first, np.flatnonzero(steps == first), steps.shape[0])

    @classmethod
    def at(cls, where: str, step: int | None, particles, n: int) -> "NonFiniteLogitsError":
        """The standard message for non-finite logits met at ``step`` by ``particles`` (of ``n``)."""
        particles = tuple(int(p) for p in particles)
        shown = ", ".join(map(str, particles[:8])) + (f" and {len(particles) - 8} more" if len(particles) > 8 else "")
        when = ("after the prompt" if step is None else
                f"at generation step {step} (after {step} generated token{'' if step == 1 else 's'})")
        return cls(f"{where}: the model's next-token logits are NaN or infinite {when} for particle(s) {shown} "
                   f"(of {n}). This is a fault of the model, not a constraint: likely a broken checkpoint "
                   "(NaN/inf weights) or an overflow in low precision (load with dtype='float32').",
                   step, particles)


@struct.dataclass
class LMState:
    """The batched state of ``n`` partial generations.

    tokens:        [n, T] int32, the prompt followed by the generated tokens (0 past ``length``).
    length:        [n] int32, number of valid tokens in ``tokens`` (prompt included).
    prompt_length: [n] int32, length of the shared prompt.
    logits:        [n, V] float32, next-token logits after the last valid token.
    cache:         model-specific pytree (a KV cache, a table index), leaves lead with n, except
                   :class:`Shared` parts (leading axis 1: a prompt's cache shared by the n).
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


@jax.tree_util.register_pytree_node_class
class Shared:
    """A part of a batched state stored once for all particles (a prompt's KV cache).

    Its arrays lead with an axis of size 1, not the particle axis: particle-wise operations
    (:func:`map_particles`: resampling, row selection, broadcasting) pass it through unchanged,
    so N particles hold the prompt once and resampling moves only what is theirs.
    """

    def __init__(self, value):
        self.value = value

    def tree_flatten(self):
        return (self.value,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0])

    def __repr__(self) -> str:
        return f"Shared({jax.tree.map(lambda x: getattr(x, 'shape', x), self.value)})"


def _is_shared(x) -> bool:
    return isinstance(x, Shared)


def map_particles(f, tree, *rest):
    """``jax.tree.map(f, tree, *rest)`` over the per-particle leaves only: every :class:`Shared`
    part of ``tree`` is returned as it is (the shared prompt cache is the same for every particle).

    Use it for anything indexed by particle: ``map_particles(lambda x: x[idx], state)``
    (resampling), ``map_particles(lambda a, b: jnp.where(m, a, b), new, old)`` (row selection).
    """
    return jax.tree.map(lambda x, *r: x if _is_shared(x) else f(x, *r), tree, *rest, is_leaf=_is_shared)


def particle_bytes(tree) -> int:
    """Bytes of the per-particle leaves of ``tree`` (what resampling moves; :class:`Shared` excluded)."""
    leaves = jax.tree.leaves(map_particles(lambda x: x, tree), is_leaf=_is_shared)
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in leaves if not _is_shared(x)))


class LanguageModel(abc.ABC):
    """Next-token distributions and sequence likelihoods over a batch of particles.

    Subclasses implement :meth:`_initial` and :meth:`_forward`; everything else is shared.
    Every method except :meth:`prefill` is a pure function of its arguments, traceable
    inside ``jax.jit``; none of them jits itself.
    """

    vocab_size: int
    eos_id: int
    tokenizer: object  # models.tokenizer.Tokenizer-like: encode, decode, token_bytes
    max_length: int | None = None  # the model's context limit, None if unbounded

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every token id that ends a sequence, ``eos_id`` first (a checkpoint whose
        generation_config.json lists several sets ``_eos_ids``; see :mod:`models.chat`)."""
        return getattr(self, "_eos_ids", None) or (self.eos_id,)

    def chat(self, messages, add_generation_prompt: bool = True, **template_kwargs) -> list[int]:
        """Prompt ids of a conversation from the checkpoint's chat template
        (:func:`models.chat.chat_ids`, as ``transformers``' ``apply_chat_template`` renders it)."""
        from .chat import chat_ids

        return chat_ids(self.tokenizer, messages, add_generation_prompt, **template_kwargs)

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
    def buffer_sizes(self, prompt_length: int, max_new_tokens: int) -> tuple[int, int]:
        """(padded prompt length, buffer capacity T) for a prompt of ``prompt_length`` tokens.

        The prompt is padded up to a multiple of ``PROMPT_BUCKET``; T adds ``max_new_tokens``
        and is cut to the model's context ``max_length`` when it has one.
        """
        padded = -(-int(prompt_length) // PROMPT_BUCKET) * PROMPT_BUCKET
        capacity = padded + int(max_new_tokens)
        if self.max_length is not None:
            capacity = min(capacity, self.max_length)
            padded = min(padded, capacity)
        return padded, capacity

    def initial_state(self, tokens: jax.Array, length, n: int, capacity: int) -> LMState:
        """The state of ``n`` particles after a prompt (pure and traceable; ``prefill`` jits it).

        tokens [P] int32 holds the prompt in its first ``length`` entries (``length`` may be
        traced; entries past it are ignored), P <= capacity; ``n`` and ``capacity`` are static.
        The prompt runs once and its state is broadcast to the ``n`` particles.
        """
        return broadcast_particles(self.prompt_state(tokens, length, capacity), n)

    def prompt_state(self, tokens: jax.Array, length, capacity: int) -> LMState:
        """The state of ONE particle after a prompt (see :meth:`initial_state`)."""
        tokens = jnp.asarray(tokens, jnp.int32)
        length = jnp.asarray(length, jnp.int32)
        tokens = jnp.where(jnp.arange(tokens.shape[0]) < length, tokens, 0)
        logits, cache = self._initial(tokens, length, capacity)
        return LMState(
            tokens=jnp.zeros((1, capacity), jnp.int32).at[0, : tokens.shape[0]].set(tokens),
            length=length[None],
            prompt_length=length[None],
            logits=logits.astype(jnp.float32)[None],
            cache=cache,
        )

    def prefill(self, prompt_ids, n: int, max_new_tokens: int) -> LMState:
        """Encode the prompt once and share its cache among ``n`` particles.

        The prompt is padded to a multiple of ``PROMPT_BUCKET`` tokens so that prompts of
        similar length share one compiled program; padding is never attended to. Checks at
        this boundary: the prompt ids (integers in ``[0, vocab_size)``), ``n`` and
        ``max_new_tokens``, the context length, the memory the state needs
        (:meth:`state_bytes` against :func:`available_memory_bytes`) and, eagerly, that the
        logits after the prompt are finite (:class:`NonFiniteLogitsError` otherwise).
        """
        prompt = self.check_prompt(prompt_ids, max_new_tokens)
        n = check_positive_int(n, "n (the number of particles)")
        length = int(prompt.shape[0])
        padded, capacity = self.buffer_sizes(length, max_new_tokens)
        self.check_memory(n, capacity, padded)
        if isinstance(prompt, jax.core.Tracer):
            tokens = jnp.zeros((padded,), jnp.int32).at[:length].set(prompt)
        else:  # padded on the host: prompts in one bucket reuse every compiled program
            tokens = np.zeros((padded,), np.int32)
            tokens[:length] = prompt
        one, bad = _prompt_state(self, tokens, np.int32(length), capacity)
        if not isinstance(bad, jax.core.Tracer) and bool(bad):
            raise NonFiniteLogitsError.at("prefill", None, range(n), n)
        return _broadcast(one, n)

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
        Returns (new state, log-probs [n, L] of the tokens under the model, 0 where masked):
        entry t is ``log softmax(logits before token t)[token t]``, the logits before token 0
        being the state's. Tokens beyond the buffer capacity are dropped (their log-prob is
        still reported). Not jitted: call it inside a jitted function (eagerly it runs op by op).
        """
        tokens = jnp.asarray(tokens, jnp.int32)
        mask = jnp.ones(tokens.shape, bool) if mask is None else jnp.asarray(mask, bool)
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
        """Select particles by index (resampling): every per-particle leaf leads with the
        particle axis; the :class:`Shared` prompt cache is not moved (:func:`map_particles`)."""
        return map_particles(lambda x: x[idx], state)

    # ---- memory -------------------------------------------------------------------------
    def state_bytes(self, n: int, capacity: int) -> int:
        """Bytes of the :class:`LMState` of ``n`` particles with a buffer of ``capacity`` tokens.

        Tokens n*T*4, lengths n*8, logits n*V*4 and the model's cache (for a transformer the KV
        cache, layers * 2 * n * T * kv_heads * head_dim * dtype bytes). Computed from the
        shapes of :meth:`initial_state` (``jax.eval_shape``: nothing is allocated or run).
        """
        padded = min(PROMPT_BUCKET, int(capacity))
        return self._state_bytes(int(n), int(capacity), padded)

    def _state_bytes(self, n: int, capacity: int, padded: int) -> int:
        # the abstract trace is prefill's own (jit's trace cache): the check costs no extra trace
        one = _prompt_state.eval_shape(self, jax.ShapeDtypeStruct((padded,), jnp.int32),
                                       jax.ShapeDtypeStruct((), jnp.int32), capacity)[0]
        every = int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(one)))
        own = particle_bytes(one)
        return n * own + (every - own)  # the Shared part (a prompt's cache) is stored once

    def weight_bytes(self) -> int:
        """Bytes of the model's weights (the array leaves of the model's pytree)."""
        return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                       for x in jax.tree.leaves(self) if hasattr(x, "shape") and hasattr(x, "dtype")))

    def plan_memory(self, n: int, max_new_tokens: int, prompt_length: int = 1, num_prompts: int = 1,
                    score_length: int = 1) -> "MemoryPlan":
        """Estimate, before anything is allocated, the bytes a decoding call will need.

        ``n`` particles per prompt, ``num_prompts`` prompts of at most ``prompt_length`` tokens,
        ``max_new_tokens`` new tokens; ``score_length``: the longest block of tokens one forward
        pass appends (1 for token-by-token decoding; the suffix length for an MH scoring pass).
        Nothing is run: the state's size comes from shapes alone (``jax.eval_shape``). See
        :class:`MemoryPlan` for what each part counts.
        """
        n = check_positive_int(n, "n (the number of particles)")
        prompts = check_positive_int(num_prompts, "the number of prompts")
        padded, capacity = self.buffer_sizes(check_positive_int(prompt_length, "prompt_length"),
                                             check_positive_int(max_new_tokens, "max_new_tokens"))
        state = prompts * self._state_bytes(n, capacity, padded)
        logits = prompts * n * int(score_length) * self.vocab_size * 4
        return MemoryPlan(n=n, num_prompts=prompts, capacity=capacity, weights=self.weight_bytes(), state=state,
                          working=state + 4 * logits)

    def check_memory(self, n: int, capacity: int, padded: int | None = None) -> None:
        """Raise :class:`InputError` up front when the state of ``n`` particles cannot fit.

        Compares :meth:`state_bytes` with :func:`available_memory_bytes` of the default
        device (skipped when that is unknown).
        """
        needed = self._state_bytes(int(n), int(capacity), min(PROMPT_BUCKET, capacity) if padded is None else padded)
        free = available_memory_bytes()
        if free is not None and needed > free:
            raise InputError(
                f"{n} particles with a buffer of {capacity} tokens need about {_gib(needed)} for the model "
                f"state (KV cache, logits, tokens) but only {_gib(free)} of memory is available: lower n "
                "(the number of particles) or max_new_tokens, or run in several batches")

    # ---- validation ---------------------------------------------------------------------
    def check_prompt(self, prompt_ids, max_new_tokens):
        """Validate a prompt at the public boundary; returns int32 ids (numpy, or the tracer).

        Token ids must be integers in ``[0, vocab_size)`` (floats are refused, not truncated);
        the prompt must be non-empty and, with ``max_new_tokens``, fit the model's context.
        """
        check_positive_int(max_new_tokens, "max_new_tokens")
        if isinstance(prompt_ids, jax.core.Tracer):
            if prompt_ids.ndim != 1 or prompt_ids.shape[0] == 0:
                raise InputError(f"the prompt must be a non-empty 1-D sequence of token ids, got shape {prompt_ids.shape}")
            if not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
                raise InputError(f"token ids must be integers, got dtype {prompt_ids.dtype}")
            prompt = prompt_ids.astype(jnp.int32)
        else:
            prompt = as_token_ids(prompt_ids, self.vocab_size, "prompt")
            if prompt.shape[0] == 0:
                raise InputError("the prompt is empty: give at least one token (e.g. the BOS or EOS id)")
        if self.max_length is not None and prompt.shape[0] + max_new_tokens > self.max_length:
            raise InputError(
                f"prompt length {prompt.shape[0]} + max_new_tokens {max_new_tokens} exceeds the "
                f"model's context of {self.max_length} tokens: shorten the prompt or lower max_new_tokens"
            )
        return prompt


#: environment variable: a memory budget in bytes (suffixes K, M, G, KiB, MiB, GiB allowed) that
#: :meth:`MemoryPlan.check` enforces in addition to the device's free memory
MEMORY_BUDGET_ENV = "GENPPL_MEMORY_BUDGET"


def parse_bytes(text) -> int:
    """``"8GiB"``, ``"512 MB"``, ``"1e9"`` or an int -> bytes (InputError if unreadable)."""
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        return int(text)
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
             "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    raw = str(text).strip().lower().replace(" ", "")
    number = raw.rstrip("kmgtib")
    try:
        value = float(number) * units[raw[len(number):]]
    except (ValueError, KeyError):
        raise InputError(f"cannot read {text!r} as a number of bytes: write e.g. 8GiB, 512MB or 1e9") from None
    if not value > 0:
        raise InputError(f"a memory budget must be positive, got {text!r}")
    return int(value)


@struct.dataclass
class MemoryPlan:
    """What a decoding call will hold in memory, estimated from shapes before allocating.

    weights: the model's parameters (already resident). state: the :class:`LMState` of
    ``num_prompts`` x ``n`` particles (KV cache, tokens, logits), what lives between calls and
    what JAX's live buffers show after ``prefill``. working: the peak extra bytes of a compiled
    sweep over that state: the loop's own copy of its carried state (a jitted loop does not
    write into its caller's arrays) plus four [n, L, V] float32 arrays of logits per forward
    pass (the model's logits, their log-softmax, the processed proposal and its running sums).
    ``total = weights + state + working``.
    """

    n: int = struct.field(pytree_node=False)
    num_prompts: int = struct.field(pytree_node=False)
    capacity: int = struct.field(pytree_node=False)
    weights: int = struct.field(pytree_node=False)
    state: int = struct.field(pytree_node=False)
    working: int = struct.field(pytree_node=False)

    @property
    def total(self) -> int:
        return self.weights + self.state + self.working

    def check(self, budget=None, available=None, where: str = "this call") -> "MemoryPlan":
        """Raise :class:`InputError` when the plan exceeds the memory left on the device
        (``available``, default :func:`available_memory_bytes`; the weights are already in it)
        or a budget (``budget`` bytes or a string such as ``"8GiB"``; default the
        ``GENPPL_MEMORY_BUDGET`` environment variable; it covers the total, weights included).
        The message names every part and what to lower. Returns the plan."""
        if budget is None and os.environ.get(MEMORY_BUDGET_ENV):
            budget = os.environ[MEMORY_BUDGET_ENV]
        free = available_memory_bytes() if available is None else int(available)
        limits = []
        if free is not None and self.state + self.working > free:
            limits.append((self.state + self.working, free, "of memory is available on the device"))
        if budget is not None and self.total > parse_bytes(budget):
            limits.append((self.total, parse_bytes(budget), f"is the memory budget ({MEMORY_BUDGET_ENV} or budget=)"))
        if limits:
            needed, limit, what = limits[0]
            prompts = f"{self.num_prompts} prompt(s) x " if self.num_prompts > 1 else ""
            raise InputError(
                f"{where}: {prompts}{self.n} particles with a buffer of {self.capacity} tokens need about "
                f"{_size(needed)} (weights {_size(self.weights)}, model state {_size(self.state)}, working memory "
                f"{_size(self.working)}) but {_size(limit)} {what}: lower n (the number of particles), "
                "max_new_tokens or the number of prompts, load the model with dtype='bfloat16' (half the weights; "
                "on an accelerator also half the caches), "
                "or run in several batches")
        return self


def broadcast_particles(state: LMState, n: int) -> LMState:
    """Broadcast a state whose leaves lead with 1 particle to ``n`` particles (traceable);
    :class:`Shared` parts stay stored once."""
    return map_particles(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), state)


# prefill's compiled parts: the prompt pass (per prompt bucket and capacity; the particle count
# does not recompile it) and the broadcast to n particles (cheap to compile)
@functools.partial(jax.jit, static_argnames=("capacity",))
def _prompt_state(lm: LanguageModel, tokens, length, capacity: int):
    one = lm.prompt_state(tokens, length, capacity)
    return one, nonfinite_rows(one.logits)[0]


_broadcast = jax.jit(broadcast_particles, static_argnames=("n",))


# ---- public helpers ----------------------------------------------------------------------
def check_positive_int(value, name: str) -> int:
    """Validate a count at the public boundary."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_token_ids(ids, vocab_size: int, what: str = "prompt") -> np.ndarray:
    """Host-side validation of token ids: a 1-D int32 numpy array with every id in [0, vocab_size).

    Refuses text (encode it first), floats (never truncated), booleans, nested or ragged
    sequences and ids that overflow, each with an :class:`InputError` saying what to change.
    ``what`` names the sequence in messages ("prompt", "continuation", ...).
    """
    if isinstance(ids, (str, bytes)):
        raise InputError(f"the {what} must be token ids; encode text with lm.tokenizer.encode(text)")
    if isinstance(ids, (list, tuple)) and ids and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids):
        ids = [int(i) for i in ids]  # Python ints: range-checked before any fixed-width conversion
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise InputError(f"{what} token ids must lie in [0, {vocab_size}), got {min(ids)}..{max(ids)}")
    try:
        arr = np.asarray(jax.device_get(ids) if isinstance(ids, jax.Array) else ids)
    except (ValueError, TypeError) as e:
        raise InputError(f"the {what} must be a 1-D sequence of integer token ids ({e})") from None
    if arr.ndim != 1:
        raise InputError(f"the {what} must be a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        example = next((i for i in arr if isinstance(i, bool) or not isinstance(i, numbers.Integral)), arr[0])
        example = example.item() if isinstance(example, np.generic) else example
        raise InputError(f"the {what} must be integer token ids, got {arr.dtype} values such as {example!r} "
                         "(floats are not truncated: convert with np.asarray(ids, int) if they are whole numbers)")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            raise InputError(f"{what} token ids must lie in [0, {vocab_size}), got {lo}..{hi}")
    return arr.astype(np.int32)


_KEY_FORMS = ("an int seed (e.g. 0), a key from jax.random.key(seed), "
              "or a raw key from jax.random.PRNGKey(seed)")


def as_key(key) -> jax.Array:
    """A PRNG key from ``key``: an int seed becomes ``jax.random.key(seed)``; a typed key
    (``jax.random.key``) or a raw uint32 key (``jax.random.PRNGKey``) passes unchanged.

    Anything else (None, a float, a batch of keys, a seed outside the 64-bit signed range)
    raises :class:`InputError` naming the accepted forms. Traceable for keys and int tracers.
    """
    if isinstance(key, bool) or key is None:
        raise InputError(f"key must be {_KEY_FORMS}; got {key!r}")
    if isinstance(key, numbers.Integral):
        if not -(2**63) <= int(key) < 2**63:
            raise InputError(f"key {key} is outside the 64-bit seed range [-2**63, 2**63): use a smaller int "
                             f"seed; key must be {_KEY_FORMS}")
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None:
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            if shape == ():
                return key
            raise InputError(f"key must be one key, got a batch of keys with shape {shape}; pass keys[0] "
                             "or split inside your loop")
        if dtype == jnp.uint32 and len(shape) == 1:
            return key
        if shape == () and jnp.issubdtype(dtype, jnp.integer):
            return jax.random.key(key if isinstance(key, jax.core.Tracer) else int(key))
    raise InputError(f"key must be {_KEY_FORMS}; got {type(key).__name__}"
                     + (f" with dtype {dtype} and shape {shape}" if dtype is not None else f" {key!r}"))


def nonfinite_rows(logits: jax.Array) -> jax.Array:
    """[n] bool (traceable): rows of next-token logits [n, V] that are not a distribution.

    A row is non-finite when it holds a NaN or a +inf, or when every entry is -inf (no token
    possible). A -inf on some tokens is legitimate (a masked or impossible token).
    """
    logits = jnp.asarray(logits)
    bad = jnp.isnan(logits) | (logits == jnp.inf)
    return jnp.any(bad, -1) | jnp.all(logits == -jnp.inf, -1)


def check_finite_logits(logits, where: str = "the model", step: int | None = None) -> None:
    """Host-side check: raise :class:`NonFiniteLogitsError` naming the rows of ``logits`` [n, V]
    that :func:`nonfinite_rows` flags (eager only; inside jit use ``nonfinite_rows``)."""
    bad = np.asarray(jax.device_get(nonfinite_rows(logits)))
    if bad.any():
        raise NonFiniteLogitsError.at(where, step, np.flatnonzero(bad), bad.shape[0])


def available_memory_bytes(device=None) -> int | None:
    """Free memory (bytes) for arrays on ``device`` (default: JAX's default device).

    On an accelerator: ``bytes_limit - bytes_in_use`` from ``device.memory_stats()``. On the
    CPU: the host's available memory (``MemAvailable`` in /proc/meminfo, else
    ``SC_AVPHYS_PAGES * SC_PAGE_SIZE``), capped by a cgroup memory limit when there is one.
    None when unknown (the memory check is then skipped).
    """
    device = jax.devices()[0] if device is None else device
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a backend without memory stats
            stats = {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                free = min(free, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return max(int(free), 0)


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.1f} GiB ({num_bytes:,} bytes)"


def _size(num_bytes: int) -> str:
    return _gib(num_bytes) if num_bytes >= 2**30 else f"{num_bytes / 2**20:.1f} MiB ({num_bytes:,} bytes)"


def read_npz(path, what: str, fix: str, meta: bool = False) -> dict:
    """Every array of the ``.npz`` file at ``path``, or one :class:`InputError` that names the
    file, says it is not a readable ``what``, and how to ``fix`` it (a missing, truncated or
    foreign file raises OSError, EOFError, BadZipFile, ValueError or KeyError deep inside
    numpy). With ``meta``, the JSON record stored as bytes under ``"meta"`` is decoded into
    ``arrays["meta"]``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no {what} at {path}: {fix}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if meta:
            arrays["meta"] = json.loads(bytes(arrays["meta"]).decode())
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(f"{path} is not a readable {what} ({type(err).__name__}: {err}): {fix}") from None
    return arrays


__all__ = [
    "MEMORY_BUDGET_ENV", "MemoryPlan", "PROMPT_BUCKET", "InputError", "LMState", "LanguageModel", "NonFiniteLogitsError",
    "Shared", "as_key", "map_particles", "parse_bytes", "particle_bytes",
    "as_token_ids", "broadcast_particles", "available_memory_bytes", "check_finite_logits", "check_positive_int", "nonfinite_rows",
    "read_npz",
]
