"""Tensor parallelism: per-device memory, collectives per decode step, and exactness.

For a random-initialised Llama-shaped checkpoint (made here with transformers; 8 query and 8
key/value heads so that model axes of 1, 2, 4 and 8 all divide them) and model axes of 1, 2, 4
and 8 (forced CPU devices):

- the bytes of weights and of the KV cache held by the busiest device;
- the collectives in the compiled decode step (XLA's optimised HLO): all-reduces (Megatron's
  two per layer, plus one for a vocabulary-split tied embedding lookup) and all-gathers;
- the largest |logit difference| from the one-device model over a prefill and 16 decode steps;
- the time of 16 decode steps (median of 5), a ratio to the one-device time. On forced CPU
  devices sharing the same cores this shows the partitioning overhead, not a speed-up.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/tensor_parallel.py

On a multi-GPU host drop XLA_FLAGS (and pass --sizes 1 2 4 8 up to the GPU count).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from genppl import distributed  # noqa: E402
from genppl.distributed.placement import shard_bytes  # noqa: E402
from genppl.models.architectures import load_checkpoint  # noqa: E402
from genppl.models.transformer import TransformerLM  # noqa: E402

STEPS, N, NEW = 16, 16, 112


def checkpoint(tie: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
                         tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    path = tempfile.mkdtemp()
    LlamaForCausalLM(config).save_pretrained(path)
    decoder, cfg = load_checkpoint(path)
    return TransformerLM.from_module(decoder, cfg)


def decode(lm, state, tokens):
    def step(state, token):
        state = lm.extend(state, token)
        return state, lm.logits(state)

    return jax.lax.scan(step, state, tokens.T)


decode_jit = jax.jit(decode)


def collectives(lm, state, tokens) -> collections.Counter:
    text = decode_jit.lower(lm, state, tokens[:, :1]).compile().as_text()
    return collections.Counter(re.findall(r"= \S+ (all-reduce|all-gather|all-to-all|collective-permute)\(", text))


def measure(lm, sizes):
    prompt = list(range(3, 19))
    tokens = jnp.asarray(np.random.RandomState(0).randint(3, lm.vocab_size, (N, STEPS)), jnp.int32)
    rows, reference, base_time = [], None, None
    for m in sizes:
        model = lm if m == 1 else distributed.shard_model(lm, distributed.make_mesh(m, model_parallel=m))
        state = model.prefill(prompt, N, NEW)
        _, logits = jax.block_until_ready(decode_jit(model, state, tokens))
        logits = np.concatenate([np.asarray(state.logits)[:, None], np.asarray(logits)], 1)
        reference = logits if reference is None else reference
        times = []
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(decode_jit(model, state, tokens))
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        base_time = base_time or t
        ops = collectives(model, state, tokens)
        rows.append((m, shard_bytes(model.params), shard_bytes(state.cache), ops["all-reduce"], ops["all-gather"],
                     float(np.abs(logits - reference).max()), t / base_time))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    print(f"{len(jax.devices())} {jax.devices()[0].platform} devices, load average {os.getloadavg()[0]:.1f}")
    for tie in (False, True):
        lm = checkpoint(tie)
        print(f"\nLlama-shaped, 4 layers, hidden 512, 8 heads, vocab 8192, {'tied' if tie else 'untied'} embeddings; "
              f"N={N}, cache {16 + NEW} slots, {STEPS} decode steps")
        print("| model axis | weights / device (MiB) | KV cache / device (MiB) | all-reduces / step | "
              "all-gathers / step | max abs logit diff | decode time / one device |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for m, w, kv, ar, ag, diff, ratio in measure(lm, args.sizes):
            print(f"| {m} | {w / 2**20:.2f} | {kv / 2**20:.2f} | {ar} | {ag} | {diff:.1e} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
