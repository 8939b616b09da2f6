"""Decoder-only transformer architectures in Flax NNX, loaded from local Hugging Face checkpoints.

Supported ``model_type`` values: see :data:`SUPPORTED_ARCHITECTURES` (GPT-2, Llama incl. Llama-3
rope scaling, Mistral, Qwen2, Qwen3, Phi-3).
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import SUPPORTED_ARCHITECTURES, SUPPORTED_ROPE_TYPES, ArchConfig, CheckpointError, rope_inv_freq
from .decoder import Decoder, build_decoder, cache_bytes, cache_storage_dtype, init_cache

__all__ = [
    "ArchConfig",
    "CheckpointError",
    "Decoder",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_ROPE_TYPES",
    "build_decoder",
    "cache_bytes",
    "cache_storage_dtype",
    "init_cache",
    "load_checkpoint",
    "rope_inv_freq",
    "save_checkpoint",
]
