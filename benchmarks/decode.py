"""Batched sampling throughput: ours against transformers' PyTorch ``generate``, same checkpoint.

    python benchmarks/decode.py                      # bundled model, N in 1 16 64 256
    python benchmarks/decode.py --model DIR --n 1 64 --tokens 128

Both sides sample exactly ``--tokens`` new tokens per sequence (EOS suppressed until then,
plain temperature-1 sampling, no top-k/top-p) from the same prompt, on the same machine, in
the same run. Compilation (ours) and a warm-up call (both) are excluded; the median of
``--repeats`` timed calls is reported. Prints a markdown table of tokens/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

from genppl import models


def time_ours(lm, prompt, n, tokens, repeats):
    run = lambda seed: models.sample(lm, prompt, n, tokens, jax.random.key(seed), min_new_tokens=tokens)
    run(0)  # compile + warm up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        out = run(r + 1)
        times.append(time.perf_counter() - start)
        assert int(out.num_tokens.sum()) == n * tokens
    return statistics.median(times)


def time_torch(model, prompt, n, tokens, repeats):
    import torch

    ids = torch.tensor([prompt] * n)
    kwargs = dict(do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens, top_k=0, top_p=1.0,
                  temperature=1.0, pad_token_id=model.config.eos_token_id,
                  attention_mask=torch.ones_like(ids))
    with torch.inference_mode():
        model.generate(ids, **kwargs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = model.generate(ids, **kwargs)
            times.append(time.perf_counter() - start)
            assert out.shape == (n, len(prompt) + tokens)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 16, 64, 256])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args(argv)

    path = args.model or str(models.bundled_path())
    lm = models.load(path)
    prompt = [lm.eos_id] + lm.tokenizer.encode("Q: Sam has 12 apples. He buys 7 more.")
    torch_model = None
    if not args.skip_torch:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        torch_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    print(f"model: {path} | {lm!r}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    print(f"prompt {len(prompt)} tokens, {args.tokens} new tokens per sequence, median of {args.repeats}\n")
    print("| N | ours tokens/s | transformers tokens/s | ratio (ours / transformers) |")
    print("|---:|---:|---:|---:|")
    for n in args.n:
        ours = n * args.tokens / time_ours(lm, prompt, n, args.tokens, args.repeats)
        if torch_model is None:
            print(f"| {n} | {ours:,.0f} | - | - |", flush=True)
            continue
        theirs = n * args.tokens / time_torch(torch_model, prompt, n, args.tokens, args.repeats)
        print(f"| {n} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
