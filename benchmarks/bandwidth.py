"""Decoding throughput of a ~0.5B Qwen2-shaped model as a fraction of the memory-bandwidth limit.

    python benchmarks/bandwidth.py                      # Qwen2-0.5B shape, bfloat16, N=64 (for a GPU)
    python benchmarks/bandwidth.py --layers 2 --vocab 4096 --tokens 16   # a quick check on a CPU

The model is random-initialised (nothing is downloaded). Each decode step must read every
weight once plus the KV cache, so step time >= bytes / peak bandwidth. We report the achieved
fraction of that bound for the bytes a step must touch (weights + the valid part of the cache)
and for what our fixed-size buffers do touch (weights + the whole cache buffer).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genppl import models
from genppl.models.architectures import ArchConfig, build_decoder
from genppl.models.transformer import TransformerLM

PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}  # bytes/s (SXM parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--intermediate", type=int, default=4864)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--peak-gbs", type=float, default=None, help="peak memory bandwidth in GB/s")
    args = p.parse_args(argv)

    from transformers import Qwen2Config

    hf = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads,
                     num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                     tie_word_embeddings=True, eos_token_id=0)
    config = ArchConfig.from_hf(hf)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    decoder = build_decoder(config, rngs=nnx.Rngs(0), dtype=dtype)
    lm = TransformerLM.from_module(decoder, config, None, dtype)  # no tokenizer: ids only
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(lm.params))

    prompt = list(np.random.default_rng(0).integers(1, args.vocab, args.prompt))
    run = lambda seed: models.sample(lm, prompt, args.n, args.tokens, jax.random.key(seed),
                                     min_new_tokens=args.tokens)
    run(0)
    start = time.perf_counter()
    run(1)
    seconds = time.perf_counter() - start
    step = seconds / args.tokens

    itemsize = jnp.dtype(dtype).itemsize
    kv_per_position = 2 * args.layers * args.kv_heads * (args.hidden // args.heads) * itemsize * args.n
    capacity = args.prompt + args.tokens
    mean_valid = args.prompt + args.tokens / 2
    needed = param_bytes + kv_per_position * mean_valid
    touched = param_bytes + kv_per_position * capacity

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", str(device))
    peak = args.peak_gbs * 1e9 if args.peak_gbs else next(
        (bw for name, bw in PEAK_BANDWIDTH.items() if name in kind), None)
    print(f"device: {kind} ({jax.default_backend()}), params {param_bytes / 1e9:.3f} GB {args.dtype}, "
          f"N={args.n}, {args.tokens} tokens after a {args.prompt}-token prompt")
    print(f"step time {step * 1e3:.2f} ms, {args.n * args.tokens / seconds:,.0f} tokens/s")
    print(f"bytes per step: needed {needed / 1e9:.3f} GB, touched by fixed buffers {touched / 1e9:.3f} GB")
    if peak is None:
        print("peak bandwidth unknown for this device: pass --peak-gbs to get the fraction")
        return
    print(f"peak {peak / 1e9:,.0f} GB/s -> fraction of the bandwidth bound: "
          f"{needed / step / peak:.1%} (needed bytes), {touched / step / peak:.1%} (touched bytes)")


if __name__ == "__main__":
    main()
