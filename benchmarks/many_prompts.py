"""Many prompts per call: one compiled call over a batch of prompts against a Python loop of
one-prompt calls, same prompts, same keys, same results.

    python benchmarks/many_prompts.py                       # 64 task prompts x 16 particles
    python benchmarks/many_prompts.py --prompts 16 --n 8 --tokens 16 --methods sample

The prompts are the bundled arithmetic task's first ``--prompts`` problems (mixed lengths:
32 to 53 tokens, three prompt buckets), as the ``genppl`` command evaluates them. For each
method, the loop calls it once per prompt with key ``jax.random.split(key, B)[b]`` and the
batch calls it once with the list of prompts and ``key``: the batch returns exactly the
loop's tokens (checked on the first repeat). ``sample`` is ``models.sample`` with EOS
suppressed until ``--tokens`` (both sides generate the same number of tokens); ``smc`` is
``inference.smc.run`` on programs that ban the digit 7 (a token-level DFA, locally optimal
proposal). Compilation is excluded (one warm-up call of each side, which compiles every
prompt bucket of the loop); the two sides are timed interleaved, ``--repeats`` times, and
the medians are reported with their ratio (loop time / batch time = throughput gain).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

from genppl import models, ppl
from genppl.cli.methods import encode_prompt
from genppl.inference import smc
from genppl.tasks import arithmetic


def make_methods(lm, n: int, tokens: int):
    banned = ppl.BannedStrings(["7"], lm)

    def sample(prompts, key):
        return models.sample(lm, prompts, n, tokens, key, min_new_tokens=tokens)

    def run_smc(prompts, key):
        batch = models.batch.is_prompt_batch(prompts)
        programs = [ppl.Program(lm, p, tokens, potential=banned) for p in prompts] if batch else \
            ppl.Program(lm, prompts, tokens, potential=banned)
        return smc.run(programs, n, key)

    return {"sample": (sample, lambda out: [list(map(list, out.token_ids))]),
            "smc": (run_smc, lambda out: out.token_ids)}


def loop(fn, prompts, key):
    keys = jax.random.split(key, len(prompts))
    return [fn(p, keys[b]) for b, p in enumerate(prompts)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=16, help="particles per prompt")
    p.add_argument("--tokens", type=int, default=32, help="max new tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=["sample", "smc"])
    args = p.parse_args(argv)

    lm = models.load(args.model)
    prompts = [encode_prompt(lm, arithmetic.prompt_text(pb)) for pb in arithmetic.eval_problems(args.prompts)]
    lengths = [len(q) for q in prompts]
    print(f"model: {args.model or models.bundled_path()} | {lm!r}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    print(f"{len(prompts)} prompts of {min(lengths)}..{max(lengths)} tokens "
          f"({len({-(-k // 16) for k in lengths})} buckets), {args.n} particles each, {args.tokens} new tokens, "
          f"median of {args.repeats} interleaved repeats\n")
    print("| method | loop of one-prompt calls (s) | one batched call (s) | prompts/s loop | prompts/s batch "
          "| ratio (batch / loop throughput) |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        fn, ids = make_methods(lm, args.n, args.tokens)[name]
        key = jax.random.key(0)
        loop(fn, prompts, key), fn(prompts, key)  # compile (every bucket of the loop) + warm up
        loop_times, batch_times = [], []
        for r in range(args.repeats):
            key = jax.random.key(r + 1)
            t_loop, outs = timed(lambda: loop(fn, prompts, key))
            t_batch, batch = timed(lambda: fn(prompts, key))
            loop_times.append(t_loop)
            batch_times.append(t_batch)
            if r == 0:  # the same work: the batch gives each prompt exactly its loop result
                assert all(ids(a) == ids(b) for a, b in zip(outs, batch)), f"{name}: batch differs from the loop"
        t_loop, t_batch = statistics.median(loop_times), statistics.median(batch_times)
        print(f"| {name} | {t_loop:.2f} | {t_batch:.2f} | {len(prompts) / t_loop:.1f} | {len(prompts) / t_batch:.1f} "
              f"| {t_loop / t_batch:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
