"""Transformer language models loaded from local Hugging Face checkpoints."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from .architectures import ArchConfig, CheckpointError, init_cache, load_checkpoint
from .interface import LanguageModel
from .tokenizer import Tokenizer


@jax.tree_util.register_pytree_node_class
class TransformerLM(LanguageModel):
    """A Flax NNX decoder behind the functional :class:`LanguageModel` interface.

    The weights are the pytree's leaves; the module structure, config and tokenizer are
    static. The KV cache lives in :class:`LMState` with room for the whole generation.
    """

    def __init__(self, graphdef, params, config: ArchConfig, tokenizer=None, dtype=jnp.float32):
        self.graphdef = graphdef
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.vocab_size = config.vocab_size
        self.max_length = config.max_position_embeddings
        eos = tokenizer.eos_id if tokenizer is not None and tokenizer.eos_id is not None else config.eos_token_id
        if eos is None:
            raise CheckpointError("the checkpoint names no EOS token: set eos_token_id in config.json")
        self.eos_id = int(eos)

    @classmethod
    def from_module(cls, decoder, config: ArchConfig, tokenizer=None, dtype=jnp.float32) -> "TransformerLM":
        graphdef, params = nnx.split(decoder)
        return cls(graphdef, params, config, tokenizer, dtype)

    @classmethod
    def from_pretrained(cls, path, dtype=jnp.float32) -> "TransformerLM":
        """Load a local checkpoint directory: config.json, safetensors weights, tokenizer files."""
        dtype = _dtype(dtype)
        decoder, config = load_checkpoint(path, dtype=dtype)
        tokenizer = _load_tokenizer(path, config)
        return cls.from_module(decoder, config, tokenizer, dtype)

    def tree_flatten(self):
        return (self.params,), (self.graphdef, self.config, self.tokenizer, self.dtype)

    @classmethod
    def tree_unflatten(cls, aux, children):
        graphdef, config, tokenizer, dtype = aux
        return cls(graphdef, children[0], config, tokenizer, dtype)

    @property
    def module(self):
        """The NNX module (a fresh view over the current weights)."""
        return nnx.merge(self.graphdef, self.params)

    def _initial(self, prompt, prompt_length, capacity):
        cache = init_cache(self.config, 1, capacity, self.dtype)
        positions = jnp.arange(prompt.shape[0], dtype=jnp.int32)[None]
        logits, cache = self.module(prompt[None], positions, cache)  # padding writes junk past the prompt
        return logits[0, prompt_length - 1], cache

    def _forward(self, cache, tokens, positions, mask):
        # masked tokens write junk past a row's length; causal masking never reads it
        return self.module(tokens, positions, cache)

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
    return Tokenizer.from_pretrained(path, vocab_size=config.vocab_size)
