"""Where constrained SMC spends its time beyond plain decoding (issue 12: SMC <= 1.1x decoding).

    python benchmarks/smc_profile.py                 # bundled model, N=64, 64 tokens, 7 repeats
    python benchmarks/smc_profile.py --n 64 256 --repeats 5

Task: ``<BOS>S:`` continued by exactly ``--tokens`` tokens (``benchmarks/smc.py``'s task).
Five compiled programs, each timed from a fresh state to ``block_until_ready``, interleaved in
rotating order after one warm-up call each:

* decode: ``models.sampling.generate`` (plain sampling, EOS forbidden until the end);
* SMC, no constraint: the jitted sweep (``smc.run``'s, locally optimal proposal, systematic
  resampling at ESS < N/2) of ``MinLength(T)``;
* SMC, no "e": the same with ``* BannedStrings(["e", "E"])``;
* the two SMC programs with ``ess_threshold=0`` (never resample): every other part of the
  step (the constraint's masks, the proposal, the weights) without the resampling.

Reported per variant: CPU time per call (this process, every thread: less disturbed than
wall time on a shared machine) and the median over rounds of its ratio to decode in the same
round, and the resampling count (first seed). Then the resampling itself: the per-particle
bytes a resampling step moves (``particle_bytes``: tokens, logits, the generated part of
the KV cache; the shared prompt cache stays) and the CPU milliseconds of that gather, from a
compiled loop of 20 gathers with sorted random ancestors.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from genppl import models, ppl
from genppl.inference import smc
from genppl.models import sampling
from genppl.models.interface import map_particles, particle_bytes

run_lib = importlib.import_module("genppl.inference.smc.run")  # the module (smc.run is the function)


def gather_ms(particles, n: int, repeats: int, reps: int = 20) -> float:
    """CPU ms of one resampling gather of ``particles`` (median over ``repeats`` loops of ``reps``)."""
    def body(p, key):
        ancestors = jnp.sort(jax.random.randint(key, (n,), 0, n)).astype(jnp.int32)
        return map_particles(lambda x: x[ancestors], p), None

    loop = jax.jit(lambda p, key: jax.lax.scan(body, p, jax.random.split(key, reps))[0])
    jax.block_until_ready(loop(particles, jax.random.key(0)))
    times = []
    for r in range(repeats):
        c0 = time.process_time()
        jax.block_until_ready(loop(particles, jax.random.key(r + 1)))
        times.append(time.process_time() - c0)
    return 1e3 * statistics.median(times) / reps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, nargs="+", default=[64])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
    T = args.tokens
    rows = {}
    for n in args.n:
        length = ppl.MinLength(T, lm.eos_id)
        plain = ppl.Program(lm, prompt, T, potential=length)
        no_e = ppl.Program(lm, prompt, T, potential=length * ppl.BannedStrings(["e", "E"], lm))

        def decode(seed):
            return sampling.generate(lm, lm.prefill(prompt, n, T), jax.random.key(seed), T, models.Processing(), T)

        def sweep(program, kernel):
            return lambda seed: run_lib.sweep_jit(kernel, program, smc.init(program, n), jax.random.key(seed))

        always, never = smc.build_kernel(), smc.build_kernel(ess_threshold=0.0)
        variants = {"decode": decode, "SMC, no constraint": sweep(plain, always), "SMC, no e": sweep(no_e, always),
                    "SMC, no constraint, never resample": sweep(plain, never),
                    "SMC, no e, never resample": sweep(no_e, never)}
        resamplings = {}
        for name, f in variants.items():  # warm-up: compile each
            out = jax.block_until_ready(f(0))
            if name != "decode":
                resamplings[name] = int(np.asarray(out[1].resampled).sum())
        cpu = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                c0 = time.process_time()
                jax.block_until_ready(variants[name](r + 1))
                cpu[name].append(time.process_time() - c0)
        print(f"N={n}, {T} tokens, {args.repeats} interleaved rounds (CPU seconds per call)")
        print("| variant | CPU s (median) | ratio to decode (median over rounds) | resamplings |")
        print("|---|---:|---:|---:|")
        for name in names:
            ratio = statistics.median(c / d for c, d in zip(cpu[name], cpu["decode"]))
            rows[(n, name)] = {"cpu": statistics.median(cpu[name]), "ratio": ratio}
            print(f"| {name} | {statistics.median(cpu[name]):.3f} | {ratio:.3f}x | {resamplings.get(name, '-')} |")
        particles = smc.init(plain, n).particles
        moved, ms = particle_bytes(particles), gather_ms(particles, n, args.repeats)
        rows[(n, "gather")] = {"bytes": moved, "ms": ms}
        print(f"one resampling moves {moved / 1e6:.1f} MB of per-particle state in {ms:.2f} ms CPU "
              f"({2 * moved / ms / 1e6:.1f} GB/s read + write)\n", flush=True)
    return rows


if __name__ == "__main__":
    main()
