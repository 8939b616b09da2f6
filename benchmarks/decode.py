"""Batched sampling throughput: ours against transformers' PyTorch ``generate``, same checkpoint.

    python benchmarks/decode.py                      # bundled model, N in 1 16 64 256 1024
    python benchmarks/decode.py --model DIR --n 1 64 --tokens 128
    python benchmarks/decode.py --part capacity      # step time against the buffer capacity
    python benchmarks/decode.py --part memory        # bytes per particle, shared prompt cache
    python benchmarks/decode.py --part peak          # fraction of the measured matmul peak
    python benchmarks/decode.py --dtype bfloat16     # both sides in bfloat16
    python benchmarks/decode.py --part dtype         # ours in bfloat16 against ours in float32

Both sides sample exactly ``--tokens`` new tokens per sequence (EOS suppressed until then,
plain temperature-1 sampling, no top-k/top-p) from the same prompt, on the same machine, in
the same run. Compilation (ours) and a warm-up call (both) are excluded. Repeats are
interleaved (ours, then torch at each thread count, again and again) and the median of
``--repeats`` timed calls is reported; torch gets its best thread count among
1..``os.cpu_count()`` (chosen per N, from the same interleaved medians).

``--dtype bfloat16`` loads both sides in bfloat16 (ours keeps float32 KV caches on a CPU:
``models.architectures.cache_storage_dtype``). ``--part dtype``: our sampler with bfloat16
weights against itself with float32 weights, interleaved, at each ``--n``.
The last column is the median over rounds of the two sides' ratio in the same round (less
disturbed by a slow moment of a shared machine than the ratio of the two medians).
``--part capacity``: the same ``--tokens`` steps decoded (``models.sampling.generate``) from
a state whose buffer holds exactly the prompt and the new tokens, and from one whose buffer
holds 4x the new tokens; the ratio of their times (goal <= 1.2: attention follows the filled
length). ``--part memory``: for a prompt of P tokens, N particles and G new tokens, the bytes
JAX holds after ``prefill`` (``jax.live_arrays``), the planner's estimate
(``lm.plan_memory``) and the bytes a state with one whole cache per particle holds
(N * (P + G) positions: the layout before the prompt cache was shared).
``--part peak``: float32 matmul GFLOP/s measured here (the best of square and decode-shaped
products), and the fraction of it one decode step reaches at N = 256 (FLOPs counted from the
config: 2 * N * (weights touched per token) plus attention over the filled length).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from genppl import models
from genppl.models import sampling
from genppl.models.architectures import cache_storage_dtype

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402


def ours_runner(lm, prompt, n, tokens):
    def run(seed):
        out = models.sample(lm, prompt, n, tokens, jax.random.key(seed), min_new_tokens=tokens, progress=False)
        assert int(out.num_tokens.sum()) == n * tokens
    return run


def torch_runner(model, prompt, n, tokens, threads):
    import torch

    ids = torch.tensor([prompt] * n)
    kwargs = dict(do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens, top_k=0, top_p=1.0,
                  temperature=1.0, pad_token_id=model.config.eos_token_id, attention_mask=torch.ones_like(ids))

    def run(seed):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(ids, **kwargs)
        assert out.shape == (n, len(prompt) + tokens)
    return run


def part_speed(args, lm, path, prompt):
    torch_model = None
    if not args.skip_torch:
        import torch
        from transformers import AutoModelForCausalLM

        torch_model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    threads = sorted({1, os.cpu_count() or 1})
    print(f"prompt {len(prompt)} tokens, {args.tokens} new tokens per sequence, median of {args.repeats} "
          f"interleaved; torch threads tried: {threads}\n")
    print("| N | ours tokens/s | transformers tokens/s (best threads) | ratio (ours / transformers) "
          "| median of per-round ratios |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.n:
        runners = {"ours": ours_runner(lm, prompt, n, args.tokens)}
        if torch_model is not None:
            runners.update({t: torch_runner(torch_model, prompt, n, args.tokens, t) for t in threads})
        rounds = testbed.interleaved(runners, args.repeats)
        med = testbed.medians(rounds)
        ours = n * args.tokens / med.pop("ours")
        if not med:
            print(f"| {n} | {ours:,.0f} | - | - | - |", flush=True)
            continue
        best = min(med, key=med.get)
        theirs = n * args.tokens / med[best]
        print(f"| {n} | {ours:,.0f} | {theirs:,.0f} ({best}) | {ours / theirs:.2f}x | "
              f"{testbed.round_ratio(rounds, best, 'ours'):.2f}x |", flush=True)


def part_dtype(args, path, prompt):
    lms = {dtype: models.load(path, dtype=dtype) for dtype in ("float32", "bfloat16")}
    print(f"prompt {len(prompt)} tokens, {args.tokens} new tokens per sequence, median of {args.repeats} interleaved\n")
    print("| N | float32 tokens/s | bfloat16 tokens/s | ratio (bfloat16 / float32) | median of per-round ratios |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.n:
        rounds = testbed.interleaved({d: ours_runner(lm, prompt, n, args.tokens) for d, lm in lms.items()}, args.repeats)
        med = testbed.medians(rounds)
        f32, bf16 = (n * args.tokens / med[d] for d in ("float32", "bfloat16"))
        print(f"| {n} | {f32:,.0f} | {bf16:,.0f} | {bf16 / f32:.2f}x | "
              f"{testbed.round_ratio(rounds, 'float32', 'bfloat16'):.2f}x |", flush=True)


def part_capacity(args, lm, prompt):
    tokens = args.tokens
    padded, tight = lm.buffer_sizes(len(prompt), tokens)
    wide = padded + 4 * tokens
    if lm.max_length is not None and wide > lm.max_length:
        raise SystemExit(f"4 x {tokens} new tokens exceed the model's context {lm.max_length}: lower --tokens")
    print(f"prompt {len(prompt)} tokens (padded {padded}), {tokens} decode steps, median of {args.repeats} interleaved\n")
    print("| N | tight buffer (ms/step) | buffer 4x the new tokens (ms/step) | ratio (4x / tight) |")
    print("|---:|---:|---:|---:|")
    for n in args.n:
        runners = {}
        for name, room in (("tight", tokens), ("wide", 4 * tokens)):
            state = lm.prefill(prompt, n, room)

            def run(seed, state=state):
                out = sampling.generate(lm, state, jax.random.key(seed), tokens, models.Processing(), tokens)
                jax.block_until_ready(out)
            runners[name] = run
        med = testbed.medians(testbed.interleaved(runners, args.repeats))
        print(f"| {n} | {med['tight'] / tokens * 1e3:.2f} | {med['wide'] / tokens * 1e3:.2f} | "
              f"{med['wide'] / med['tight']:.2f}x |", flush=True)


def part_memory(args, lm):
    P, G = args.prompt_length, args.tokens
    prompt = list(range(1, P + 1))
    print(f"prompt P = {P} tokens, G = {G} new tokens\n")
    print("| N | live bytes after prefill | planner estimate | live / planner | one cache per particle "
          "(N (P+G) positions) | live / that | (P + N G) / (N (P + G)) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    c = lm.config
    per_position = 2 * c.num_layers * c.num_kv_heads * c.head_dim * cache_storage_dtype(lm.dtype).itemsize
    for n in args.n:
        before = jax.live_arrays()  # held: a new array cannot reuse a freed one's id
        seen = {id(x) for x in before}
        state = jax.block_until_ready(lm.prefill(prompt, n, G))
        live = sum(x.nbytes for x in jax.live_arrays() if id(x) not in seen)
        del before
        plan = lm.plan_memory(n, G, P).state
        T = state.capacity
        unshared = n * (T * per_position + T * 4 + 2 * 4 + lm.vocab_size * 4)
        ideal = (P + n * G) / (n * (P + G))
        print(f"| {n} | {live:,} | {plan:,} | {live / plan:.3f} | {unshared:,} | {live / unshared:.3f} | {ideal:.3f} |")
        del state
    state = lm.prefill(prompt, 64, G)
    moved = models.interface.particle_bytes(state)
    print(f"\nbytes moved by one resampling step (lm.gather) at N = 64: {moved:,} "
          f"(the per-particle part; the shared prompt cache, "
          f"{sum(x.nbytes for x in jax.tree.leaves(state.cache['prompt'])):,} bytes, is not moved)")


def part_peak(args, lm, prompt):
    c = lm.config
    best = 0.0
    for (m, k, n) in ((1024, 1024, 1024), (2048, 2048, 2048), (256, c.hidden_size, c.intermediate_size),
                      (256, c.hidden_size, c.vocab_size)):
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32)
        f = jax.jit(jnp.dot)
        f(a, b).block_until_ready()
        times = []
        for _ in range(max(args.repeats, 5)):
            start = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - start)
        gflops = 2 * m * k * n / statistics.median(times) / 1e9
        print(f"matmul [{m}x{k}] @ [{k}x{n}]: {gflops:.1f} GFLOP/s")
        best = max(best, gflops)
    n, tokens = 256, args.tokens
    med = testbed.medians(testbed.interleaved({"ours": ours_runner(lm, prompt, n, tokens)}, args.repeats))["ours"]
    D, I, V, L = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_layers
    qkvo = D * (c.num_heads * c.head_dim) * 2 + D * (c.num_kv_heads * c.head_dim) * 2
    mlp = D * I * (3 if c.gated_mlp else 2)
    per_token = 2 * (L * (qkvo + mlp) + D * V)
    mean_ctx = len(prompt) + tokens / 2
    attention = 2 * 2 * L * c.num_heads * c.head_dim * mean_ctx
    flops = n * tokens * (per_token + attention)
    achieved = flops / med / 1e9
    print(f"\npeak (best above): {best:.1f} GFLOP/s; decode at N = {n}: {n * tokens / med:,.0f} tokens/s, "
          f"{achieved:.1f} GFLOP/s = {achieved / best:.0%} of the measured peak")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--part", default="speed", choices=["speed", "capacity", "memory", "peak", "dtype"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights of both sides")
    p.add_argument("--n", type=int, nargs="+", default=None)
    p.add_argument("--tokens", type=int, default=None, help="new tokens (default 64; 48 for capacity, 32 for memory)")
    p.add_argument("--prompt-length", type=int, default=128, help="prompt tokens for --part memory")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args(argv)
    args.tokens = args.tokens or {"capacity": 48, "memory": 32}.get(args.part, 64)
    args.n = args.n or {"speed": [1, 16, 64, 256, 1024], "dtype": [1, 16, 64, 256], "capacity": [16, 64, 256], "memory": [16, 64, 256]}.get(
        args.part, [256])

    path = args.model or str(models.bundled_path())
    lm = models.load(path, dtype=args.dtype)
    prompt = [lm.eos_id] + lm.tokenizer.encode("Q: Sam has 12 apples. He buys 7 more.")
    print(f"model: {path} | {lm!r}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.default_backend()}, load average {os.getloadavg()[0]:.1f}")
    if args.part == "speed":
        part_speed(args, lm, path, prompt)
    elif args.part == "capacity":
        part_capacity(args, lm, prompt)
    elif args.part == "memory":
        part_memory(args, lm)
    elif args.part == "dtype":
        part_dtype(args, path, prompt)
    else:
        part_peak(args, lm, prompt)


if __name__ == "__main__":
    main()
