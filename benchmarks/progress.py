"""Cost of a progress bar on one compiled SMC sweep (``smc.run`` when someone watches).

    python benchmarks/progress.py                  # bundled model, N=64, 64 tokens, 15 repeats
    python benchmarks/progress.py --n 16 --tokens 32 --repeats 5

One program (``<BOS>S:`` continued by exactly ``--tokens`` tokens without the letter "e":
``MinLength(T) * BannedStrings(["e", "E"])``, locally optimal proposal, systematic resampling
at ESS < N/2) is swept four ways, interleaved in rotating order, after one warm-up call each
(which compiles):

* plain: the one jitted sweep (``smc.run(..., progress=False)``, or nobody watching);
* chunks: what ``smc.run`` does under a bar: the sweep as ``progress.CHUNKS`` dispatches of
  one compiled slice of steps, the state donated, all queued up front, the bar (a real tqdm
  writing to a string) moved as each slice finishes (``smc.run.sweep_in_chunks``);
* chunks, state not donated: the same without donation (every slice copies the state, KV
  cache included) — why the donation matters;
* 8 host callbacks: the previous design, kept here as the reference: the plain sweep's
  kernel followed by a ``jax.debug.callback`` moving the bar every T/8 steps.

Each call is timed to ``block_until_ready`` plus ``jax.effects_barrier``, in wall time and in
this process's CPU time (every thread; less disturbed than wall time when other processes
share the cores); also the time until the call RETURNS (dispatch): a program with a host
callback runs synchronously on the CPU backend. Reported: median and minimum per variant and
their overhead relative to plain (ratio - 1). The chunked sweep's tokens, weights and ESS
are checked to be the plain sweep's bits.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import io
import statistics
import time

import jax
import numpy as np

from genppl import models, ppl
from genppl.inference import smc
from genppl.models import progress

run_lib = importlib.import_module("genppl.inference.smc.run")  # the module (smc.run is the function)


@dataclasses.dataclass(frozen=True)
class Callbacks:
    """The previous design: ``kernel``, then a host callback with the step every ``every`` steps."""

    kernel: object
    every: int

    @property
    def move(self):
        return None

    def __call__(self, key, state, program):
        state, info = self.kernel(key, state, program)
        jax.lax.cond(state.step % self.every == 0, lambda s: jax.debug.callback(emit, s), lambda s: None, state.step)
        return state, info


def emit(step) -> None:
    """Host side of a callback: move the open bar to ``step``."""
    b = progress.open_bars[-1]
    b.update(int(step) - b.n)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
    T = args.tokens
    program = ppl.Program(lm, prompt, T, potential=ppl.MinLength(T, lm.eos_id) * ppl.BannedStrings(["e", "E"], lm))
    kernel = smc.build_kernel()
    copying = jax.jit(run_lib.sweep_chunk, static_argnums=(0, 5))  # no donation

    def chunks(state, key, fn=None):
        if fn is not None:
            saved, run_lib.sweep_chunk_jit = run_lib.sweep_chunk_jit, fn
        try:
            return run_lib.sweep_in_chunks(kernel, program, state, key)
        finally:
            if fn is not None:
                run_lib.sweep_chunk_jit = saved

    variants = {"plain": lambda s, k: run_lib.sweep_jit(kernel, program, s, k),
                "chunks (smc.run's bar)": chunks,
                "chunks, state not donated": lambda s, k: chunks(s, k, copying),
                "8 host callbacks (before)": lambda s, k: run_lib.sweep_jit(Callbacks(kernel, max(1, T // 8)), program,
                                                                            s, k)}

    def call(f, key):
        import tqdm.auto as tqdm_auto
        from tqdm import tqdm

        state = smc.init(program, args.n)
        jax.block_until_ready(state)
        bar = tqdm(total=T, file=io.StringIO(), mininterval=0)  # the bar's host work is real, its output goes nowhere
        progress.open_bars.append(bar)
        real = progress.interactive, tqdm_auto.tqdm
        progress.interactive = lambda: True  # the bar opened by run_in_chunks is a real one, writing nowhere
        tqdm_auto.tqdm = functools.partial(tqdm, file=io.StringIO(), mininterval=0)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            out = f(state, key)
            returned = time.perf_counter() - t0
            jax.block_until_ready(out)
            jax.effects_barrier()
            return time.perf_counter() - t0, time.process_time() - c0, returned, out
        finally:
            progress.interactive, tqdm_auto.tqdm = real
            progress.open_bars.remove(bar)
            bar.close()

    outs = {name: call(f, jax.random.key(0))[3] for name, f in variants.items()}  # warm-up: compile each
    ref = jax.device_get(outs["plain"])
    for name, out in outs.items():  # every variant gives the plain sweep's bits
        got = jax.device_get(out)
        for a, b in zip(jax.tree.leaves((ref[0].logw, ref[0].particles.lm.tokens, ref[1].ess, ref[1].ancestors)),
                        jax.tree.leaves((got[0].logw, got[0].particles.lm.tokens, got[1].ess, got[1].ancestors))):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{name} differs from the plain sweep"
    wall, cpu, ret = ({name: [] for name in variants} for _ in range(3))
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no variant always goes first
            w, c, d, _ = call(variants[name], jax.random.key(r + 1))
            wall[name].append(w)
            cpu[name].append(c)
            ret[name].append(d)
    # the overhead within each round (all variants run back to back), median over rounds: the
    # machine's load changes between rounds far more than within one
    paired = {name: statistics.median(c / p for c, p in zip(cpu[name], cpu["plain"])) - 1 for name in variants}
    paired_wall = {name: statistics.median(w / p for w, p in zip(wall[name], wall["plain"])) - 1 for name in variants}
    stat = lambda name: [statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name]),
                         min(cpu[name])]
    base = stat("plain")
    rows = {}
    print(f"N={args.n}, {T} tokens, {args.repeats} interleaved repeats (seconds per sweep; overhead = ratio to "
          "plain - 1); results identical to the plain sweep's bits")
    print(f"{'variant':28s} {'wall med':>8s} {'wall min':>8s} {'CPU med':>8s} {'CPU min':>8s} {'returns':>8s}   "
          "overhead: wall med / wall min / CPU med / CPU min / per-round CPU, wall")
    for name in variants:
        s = stat(name)
        over = [x / b - 1 for x, b in zip(s, base)]
        rows[name] = {"wall_median": s[0], "wall_min": s[1], "cpu_median": s[2], "cpu_min": s[3],
                      "returns_after": statistics.median(ret[name]), "overheads": over,
                      "per_round_cpu": paired[name], "per_round_wall": paired_wall[name]}
        print(f"{name:28s} {s[0]:8.4f} {s[1]:8.4f} {s[2]:8.4f} {s[3]:8.4f} {statistics.median(ret[name]):8.4f}   "
              + " / ".join(f"{100 * o:+.2f}%" for o in over + [paired[name], paired_wall[name]]))
    return rows


if __name__ == "__main__":
    main()
