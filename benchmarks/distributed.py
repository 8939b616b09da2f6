"""SMC on a mesh of 1, 2, 4, 8 devices: particles per second and bytes moved per resampling,
global against island resampling.

    python benchmarks/distributed.py                          # forced CPU devices 1, 2, 4, 8
    python benchmarks/distributed.py --devices 1 2 --n 32 --tokens 16 --repeats 3
    python benchmarks/distributed.py --platform gpu --devices 1 2 4 8   # a multi-GPU host

The number of devices a process sees is fixed when JAX starts, so each device count runs in
its own Python process (on the CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``;
on a GPU host with ``CUDA_VISIBLE_DEVICES`` limited to D GPUs). Each process runs
``inference.smc.run(program, n, key, mesh=D, resampling=...)`` on the bundled model for the
letter-free target p(x | "S:") * 1[no "e"] (a token-level constraint, locally optimal proposal,
resampling at ESS < n/2): one warm-up call per scheme (compilation excluded), then the two
schemes interleaved ``--repeats`` times; the medians are reported. particles/s is
n / (seconds per call); bytes/resampling is ``result.layout.bytes_moved`` over the resampling
steps (particles whose ancestor lives on another device x bytes of one particle: tokens,
logits, KV cache rows; island resampling moves none), and beside it what XLA's all-gather
sends for that step ((D - 1) * n * bytes of a particle: see ``distributed.Layout``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure(args) -> dict:
    """One process: the timings for ``args.devices[0]`` devices (already set in XLA_FLAGS)."""
    import jax
    import numpy as np

    from genppl import models, ppl
    from genppl.inference import smc

    lm = models.load()
    prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
    program = ppl.Program(lm, prompt, args.tokens, potential=ppl.BannedStrings(["e", "E"], lm))
    d = len(jax.devices())
    schemes = ["global", "island"] if d > 1 else ["global"]
    calls = {s: (lambda key, s=s: smc.run(program, args.n, key, mesh=d, resampling=s, progress=False))
             for s in schemes}
    for s in schemes:
        calls[s](0)  # compile
    times = {s: [] for s in schemes}
    moved = {s: [] for s in schemes}
    sent = {s: [] for s in schemes}
    for r in range(args.repeats):
        for s in schemes:
            start = time.perf_counter()
            result = calls[s](r + 1)
            times[s].append(time.perf_counter() - start)
            steps = max(result.num_resampling, 1)
            moved[s].append(result.layout.bytes_moved / steps)
            sent[s].append(result.layout.collective_bytes / steps)
    layout = result.layout
    return {"devices": d, "platform": jax.devices()[0].platform, "n": args.n, "tokens": args.tokens,
            "state_bytes_per_device": layout.state_bytes_per_device,
            **{f"{s}_seconds": statistics.median(times[s]) for s in schemes},
            **{f"{s}_particles_per_s": args.n / statistics.median(times[s]) for s in schemes},
            **{f"{s}_bytes_per_resampling": float(np.median(moved[s])) for s in schemes},
            **{f"{s}_collective_bytes_per_resampling": float(np.median(sent[s])) for s in schemes}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--platform", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return None
    rows = []
    for d in args.devices:
        env = dict(os.environ)
        if args.platform == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={d}".strip()
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(d)))
        out = subprocess.run([sys.executable, __file__, "--child", "--devices", str(d), "--n", str(args.n),
                              "--tokens", str(args.tokens), "--repeats", str(args.repeats)],
                             env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| devices | particles/s global | particles/s island | bytes/resampling global: crossing particles | "
          "global: sent by XLA all-gather | island | state bytes/device |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        island = row.get("island_particles_per_s")
        island_rate = "-" if island is None else f"{island:.0f}"
        island_bytes = "-" if island is None else f"{row['island_bytes_per_resampling']:,.0f}"
        print(f"| {row['devices']} | {row['global_particles_per_s']:.0f} | {island_rate} | "
              f"{row['global_bytes_per_resampling']:,.0f} | {row['global_collective_bytes_per_resampling']:,.0f} | "
              f"{island_bytes} | {row['state_bytes_per_device']:,} |")
    return rows


if __name__ == "__main__":
    main()
