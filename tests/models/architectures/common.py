"""Shared helpers for the architecture tests: tiny random transformers checkpoints of every
supported architecture, made on the spot, and a jitted forward of our decoder."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from flax import nnx  # noqa: E402

V, B, L = 128, 3, 20
TOL = 1e-4
COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)

# name -> (transformers config class name, kwargs)
ARCHS = {
    "gpt2": ("GPT2Config", dict(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                bos_token_id=1, eos_token_id=2)),
    # Llama-3.1 style rope scaling; original context 16 so every frequency band (kept, smoothed, divided) occurs
    "llama3": ("LlamaConfig", dict(COMMON, rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16))),
    # tied embeddings, biases everywhere, linear rope scaling, eos given as a list
    "llama_tied_linear": ("LlamaConfig", dict(COMMON, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                              eos_token_id=[2, 3],
                                              rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.0))),
    # qkv bias, tied embeddings, sliding window on the second layer only
    "qwen2": ("Qwen2Config", dict(COMMON, tie_word_embeddings=True, use_sliding_window=True, sliding_window=5,
                                  max_window_layers=1)),
    # explicit head_dim != hidden / heads, per-head q/k RMSNorm
    "qwen3": ("Qwen3Config", dict(COMMON, head_dim=32)),
    # sliding window shorter than the sequence
    "mistral": ("MistralConfig", dict(COMMON, sliding_window=6)),
    # fused qkv_proj / gate_up_proj, partial rotary
    "phi3": ("Phi3Config", dict(COMMON, partial_rotary_factor=0.5, pad_token_id=0, original_max_position_embeddings=64)),
}


def archs(*default):
    """Every architecture for an ``indirect`` parametrisation of the ``arch`` fixture, the ones
    not named in ``default`` under the ``slow`` mark: a test whose code path is shared by
    every architecture runs a few in the default suite and the whole matrix with -m slow."""
    return [a if a in default else pytest.param(a, marks=pytest.mark.slow(reason="the same path as the default "
            f"architectures {default}; the full matrix runs with -m slow")) for a in ARCHS]


def make_torch_model(name, seed=0, **overrides):
    cls_name, kwargs = ARCHS[name]
    config = getattr(transformers, cls_name)(**json.loads(json.dumps(dict(kwargs, **overrides))))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: perturb them so their mapping is tested
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


def torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.array(tokens), dtype=torch.long)).logits.float().numpy()


def arange_positions(b, n, start=0):
    return jnp.broadcast_to(jnp.arange(start, start + n, dtype=jnp.int32), (b, n))


def random_tokens(seed, shape):
    return np.random.RandomState(seed).randint(0, V, shape).astype(np.int32)


def jitted(decoder):
    """Forward with the module split and merged inside jit, as the library's callers do."""
    graphdef, state = nnx.split(decoder)

    @jax.jit
    def forward(state, tokens, positions, cache):
        return nnx.merge(graphdef, state)(tokens, positions, cache)

    return lambda tokens, positions, cache=None: forward(state, tokens, positions, cache)
