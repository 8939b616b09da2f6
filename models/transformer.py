"""Transformer language models loaded from local Hugging Face checkpoints."""

from __future__ import annotations

import numbers
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from .architectures import ArchConfig, CheckpointError, init_cache, load_checkpoint
from .architectures.checkpoint import read_json
from .chat import eos_ids_of_checkpoint, fold_eos
from .batch import max_over_prompts
from .interface import InputError, LanguageModel, Shared, map_particles
from .tokenizer import Tokenizer


#: cache slots per block of a resampling gather (:meth:`TransformerLM.gather`)
GATHER_BLOCK = 16


def gather_blocks(slots: int) -> tuple[int, int]:
    """(big, small): the block sizes :meth:`TransformerLM.gather` copies a cache of ``slots``
    generated slots in: big blocks while they fit (fewer loop trips; at most half the buffer, since
    a block as large as the buffer is a whole-buffer gather, which XLA copies into the loop), then
    blocks of ``GATHER_BLOCK`` up to the longest row; ``big == small`` means no big blocks."""
    small = min(GATHER_BLOCK, slots)
    return max(min(4 * small, slots // 2 // small * small), small), small


def gathered_slots(slots: int, filled: int) -> int:
    """Slots per row :meth:`TransformerLM.gather` copies when the longest row has ``filled``
    generated tokens (``filled`` rounded up to the blocks of :func:`gather_blocks`)."""
    big, small = gather_blocks(slots)
    filled = min(int(filled), slots)
    done = filled // big * big if big > small else 0
    return done + -(-(filled - done) // small) * small


@jax.tree_util.register_pytree_node_class
class TransformerLM(LanguageModel):
    """A Flax NNX decoder behind the functional :class:`LanguageModel` interface.

    The weights are the pytree's leaves; the module structure, config and tokenizer are
    static. The KV cache lives in :class:`LMState` with room for the whole generation.

    ``kv_sharding`` (static; None on one device): a :class:`jax.sharding.NamedSharding` for
    every ``[batch, slots, kv_heads, head_dim]`` array of the KV cache, applied as a sharding
    constraint wherever the cache is created or updated; tensor parallelism
    (``genppl.distributed.shard_model``) sets it so that each device keeps the keys and values
    of its own heads.
    """

    def __init__(self, graphdef, params, config: ArchConfig, tokenizer=None, dtype=jnp.float32, kv_sharding=None):
        self.graphdef = graphdef
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.kv_sharding = kv_sharding
        self.vocab_size = config.vocab_size
        self.max_length = config.max_position_embeddings
        eos = tokenizer.eos_id if tokenizer is not None and tokenizer.eos_id is not None else config.eos_token_id
        if eos is None:
            raise CheckpointError("the checkpoint names no EOS token: set eos_token_id in config.json "
                                  "(or pass eos_id= to models.load)")
        self.eos_id = int(eos)
        # every id that ends a sequence (generation_config.json may list several), main one first
        self._eos_ids = (self.eos_id,) + tuple(i for i in getattr(tokenizer, "eos_ids", ()) if i != self.eos_id)

    @classmethod
    def from_module(cls, decoder, config: ArchConfig, tokenizer=None, dtype=jnp.float32) -> "TransformerLM":
        graphdef, params = nnx.split(decoder)
        return cls(graphdef, params, config, tokenizer, dtype)

    @classmethod
    def from_pretrained(cls, path, dtype=jnp.float32, eos_id: int | None = None) -> "TransformerLM":
        """Load a local checkpoint directory: config.json, safetensors weights, tokenizer files.

        The EOS id is, in order: ``eos_id`` when given; the tokenizer's EOS token
        (tokenizer_config.json / special_tokens_map.json); ``eos_token_id`` in
        generation_config.json; ``eos_token_id`` in config.json, as the files state them (no
        default is invented). With none of them, a :class:`CheckpointError` names the field to add.
        Every fault (a missing or corrupt file, a tokenizer larger than the model's vocabulary)
        is one :class:`CheckpointError` (an ``InputError``) naming the file and what to do.
        """
        dtype = _dtype(dtype)
        path = Path(path).expanduser()
        decoder, config = load_checkpoint(path, dtype=dtype)
        tokenizer = _load_tokenizer(path, config)
        eos = resolve_eos_id(path, config, tokenizer, eos_id)
        tokenizer.eos_id = eos  # the tokenizer carries the resolved EOS (adapters built on it keep it)
        tokenizer.eos_ids = (eos,) if eos_id is not None else eos_ids_of_checkpoint(path, eos, config.vocab_size)
        return cls.from_module(decoder, config, tokenizer, dtype)

    def tree_flatten(self):
        return (self.params,), (self.graphdef, self.config, self.tokenizer, self.dtype, self.kv_sharding)

    @classmethod
    def tree_unflatten(cls, aux, children):
        graphdef, config, tokenizer, dtype, kv_sharding = aux
        return cls(graphdef, children[0], config, tokenizer, dtype, kv_sharding)

    def constrain_cache(self, cache):
        """``cache`` with every key/value array (per layer ``[batch, slots, kv_heads, head_dim]``,
        the shared prompt part included) under :attr:`kv_sharding`; unchanged without one."""
        if self.kv_sharding is None:
            return cache
        constrain = lambda x: jax.lax.with_sharding_constraint(x, self.kv_sharding)  # noqa: E731
        out = dict(cache)
        for name in ("k", "v", "prompt_k", "prompt_v"):
            if name in out:
                out[name] = tuple(constrain(x) for x in out[name])
        if "prompt" in out:
            out["prompt"] = Shared({name: tuple(constrain(x) for x in part)
                                    for name, part in out["prompt"].value.items()})
        return out

    @property
    def module(self):
        """The NNX module (a fresh view over the current weights)."""
        return nnx.merge(self.graphdef, self.params)

    def _initial(self, prompt, prompt_length, capacity):
        """The prompt's KV cache is computed once and kept as a :class:`Shared` part (stored once
        for all particles of the prompt); each particle owns only a cache of ``capacity - P``
        slots for its generated tokens (P = the padded prompt length), its key at position p
        in slot ``p - prompt_length``. Memory for N particles: P + N * (capacity - P) positions
        instead of N * capacity; resampling moves only the per-particle part."""
        P = prompt.shape[0]
        prompt_cache = init_cache(self.config, 1, P, self.dtype)
        positions = jnp.arange(P, dtype=jnp.int32)[None]
        logits, prompt_cache = self.module(prompt[None], positions, prompt_cache)  # padding: junk past the prompt
        own = init_cache(self.config, 1, max(int(capacity) - P, 1), self.dtype)
        cache = {"k": own["k"], "v": own["v"], "offset": jnp.reshape(prompt_length, (1,)).astype(jnp.int32),
                 "prompt": Shared({"k": prompt_cache["k"], "v": prompt_cache["v"]})}
        return fold_eos(logits[0, prompt_length - 1], self._eos_ids), self.constrain_cache(cache)

    def _forward(self, cache, tokens, positions, mask):
        # masked tokens write junk past a row's length; causal masking never reads it
        logits, cache = (self.module(tokens, positions, self.module_cache(cache)) if "prompt" not in cache
                         else self._forward_shared(cache, tokens, positions))
        return fold_eos(logits, self._eos_ids), self.constrain_cache(cache)

    def gather(self, state, idx):
        """Select particles by index (resampling), moving only the filled part of their caches.

        Particle i's generated keys/values fill slots ``s < length - prompt_length``. The gather
        copies them in blocks (:func:`gather_blocks`) up to the longest filled row
        (:func:`gathered_slots` per row), in place: a loop whose trip count follows the filled
        length (a ``lax.switch`` over static buckets makes XLA copy the whole buffer into the
        branch first; checked on the optimised HLO by tests/models/test_transformer.py). The
        slots past it keep what they held: keys of no position the row has reached, and every
        forward pass writes a slot before any query reads it, so logits, tokens and weights are
        bit for bit those of a gather of the whole buffer. The shared prompt cache is not moved.
        """
        cache = state.cache
        if "prompt" not in cache or jnp.shape(idx)[0] != jax.tree.leaves(cache["k"])[0].shape[0]:
            return super().gather(state, idx)  # a new number of particles (e.g. rollouts): a new buffer
        moved = map_particles(lambda x: x[idx], state.replace(cache={**cache, "k": (), "v": ()}))
        own = (cache["k"], cache["v"])
        S = own[0][0].shape[1]
        need = jnp.minimum(max_over_prompts(jnp.max(state.length - state.prompt_length)), S)

        def copy_blocks(block, first, clamp):
            def body(j, own):
                lo = first + j * block
                start = jnp.minimum(lo, S - block) if clamp else lo  # a last block may overlap the one before:
                earlier = (start + jnp.arange(block) < lo)[None, :, None, None]  # its first slots are moved

                def take(x):  # rows idx of slots [start, start + block), written back at every row
                    rows = jax.vmap(lambda r: jax.lax.dynamic_slice(x, (r, start, 0, 0), (1, block) + x.shape[2:])[0])(idx)
                    if clamp:
                        rows = jnp.where(earlier, jax.lax.dynamic_slice_in_dim(x, start, block, 1), rows)
                    # a scatter, not dynamic_update_slice: under vmap (many prompts) JAX turns the
                    # latter into a clipped scatter that XLA:CPU writes 1.15x slower (whole SMC call)
                    return x.at[:, start + jnp.arange(block)].set(rows, mode="promise_in_bounds",
                                                                  indices_are_sorted=True, unique_indices=True)
                return jax.tree.map(take, own)
            return body

        big, small = gather_blocks(S)
        done = jnp.int32(0)
        if big > small:
            own = jax.lax.fori_loop(0, need // big, copy_blocks(big, 0, False), own)
            done = need // big * big
        k, v = jax.lax.fori_loop(0, (need - done + small - 1) // small, copy_blocks(small, done, True), own)
        return moved.replace(cache=self.constrain_cache({**moved.cache, "k": k, "v": v}))

    @staticmethod
    def module_cache(cache):
        """The decoder's view of a state's cache (the shared prompt part unwrapped)."""
        if "prompt" not in cache:
            return cache
        return {"k": cache["k"], "v": cache["v"], "offset": cache["offset"],
                "prompt_k": cache["prompt"].value["k"], "prompt_v": cache["prompt"].value["v"]}

    def _forward_shared(self, cache, tokens, positions, return_hidden: bool = False):
        out = self.module(tokens, positions, self.module_cache(cache), return_hidden=return_hidden)
        new = {"k": out[1]["k"], "v": out[1]["v"], "offset": cache["offset"], "prompt": cache["prompt"]}
        return (out[0], new) + tuple(out[2:])

    def forward_hidden(self, cache, tokens, positions):
        """(logits, new cache, final hidden states [n, L, hidden]) of one forward pass."""
        out = (self.module(tokens, positions, cache, return_hidden=True) if "prompt" not in cache
               else self._forward_shared(cache, tokens, positions, return_hidden=True))
        return (fold_eos(out[0], self._eos_ids), self.constrain_cache(out[1])) + tuple(out[2:])

    def __repr__(self) -> str:
        c = self.config
        return (f"TransformerLM({c.model_type}, layers={c.num_layers}, hidden={c.hidden_size}, "
                f"vocab={c.vocab_size}, dtype={jnp.dtype(self.dtype).name})")


def _dtype(dtype):
    names = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}
    if isinstance(dtype, str):
        if dtype not in names:
            raise CheckpointError(f"unknown dtype {dtype!r}: use 'float32' or 'bfloat16'")
        return names[dtype]
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise CheckpointError(f"unsupported dtype {dtype}: use float32 or bfloat16")
    return dtype


def _load_tokenizer(path, config: ArchConfig) -> Tokenizer:
    path = Path(path)
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise CheckpointError(
            f"{path} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json): "
            "save the tokenizer with tokenizer.save_pretrained(path)"
        )
    try:
        return Tokenizer.from_pretrained(path, vocab_size=config.vocab_size)
    except CheckpointError as e:
        if str(path) in str(e):
            raise
        raise CheckpointError(f"{path}: {e}") from None


def resolve_eos_id(path, config: ArchConfig, tokenizer, eos_id=None) -> int:
    """The EOS id of a checkpoint directory (see :meth:`TransformerLM.from_pretrained` for the order)."""
    path = Path(path)
    vocab = config.vocab_size
    if eos_id is not None:
        if isinstance(eos_id, bool) or not isinstance(eos_id, numbers.Integral) or not 0 <= eos_id < vocab:
            raise InputError(f"eos_id must be a token id in [0, {vocab}), got {eos_id!r}")
        return int(eos_id)
    candidates = [("the tokenizer's eos_token (tokenizer_config.json)",
                   None if tokenizer is None else tokenizer.hf.eos_token_id)]
    gen_file = path / "generation_config.json"
    if gen_file.exists():
        gen = read_json(gen_file, "re-save it with model.generation_config.save_pretrained(path) or delete it")
        value = gen.get("eos_token_id")
        value = value[0] if isinstance(value, list) and value else value
        candidates.append(("eos_token_id in generation_config.json", value))
    candidates.append(("eos_token_id in config.json", config.eos_token_id))
    for source, value in candidates:
        if value is None or value == []:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < vocab:
            raise CheckpointError(f"{source} of {path} is {value!r}, not a token id in [0, {vocab}): fix it")
        return int(value)
    raise CheckpointError(
        f"{path} names no EOS token: add \"eos_token_id\": <id> to config.json (or generation_config.json), "
        "or set eos_token in tokenizer_config.json, or pass eos_id=<id> to models.load / "
        "TransformerLM.from_pretrained")
