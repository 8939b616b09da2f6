"""Cost of progress reporting from inside a compiled SMC sweep.

    python benchmarks/progress.py                  # bundled model, N=64, 64 tokens, 9 repeats
    python benchmarks/progress.py --n 16 --tokens 32 --repeats 5

One program (``<BOS>S:`` continued by exactly ``--tokens`` tokens without the letter "e":
``MinLength(T) * BannedStrings(["e", "E"])``, locally optimal proposal, systematic resampling
at ESS < N/2) is swept three ways, interleaved, after one warm-up call each (which compiles):

* plain: the jitted sweep of the kernel (``smc.run(..., progress=False)``);
* reporting: the kernel wrapped in ``inference.progress.Reporting`` at the default rate
  (every ``T // 8`` steps), with a bar open on the host, as ``smc.run`` does by default;
* every step: the same with a callback at every step (the worst case);
* every T/4 steps: 4 callbacks per sweep;
* never fires: the callback is compiled into the loop but its condition is never true (what
  having a host callback in the program costs by itself).

The order of the calls rotates between repeats.

Because wall times on a shared machine are noisy, a second part measures the cost of one
callback directly: a compiled loop of 2000 trivial steps with a callback at every step
against the same loop without, CPU microseconds per callback (median over repeats); times
the number of callbacks per sweep, over the plain sweep's CPU time, this is the projected
overhead of the default rate.

Each call is timed to ``block_until_ready`` plus ``jax.effects_barrier`` (so the host side of
the callbacks is included), in wall time and in this process's CPU time (every thread; what
the sweep costs, far less disturbed than wall time when other processes share the cores).
Reported: median and minimum per variant, and the overhead of each reporting variant
relative to the plain sweep (ratio - 1).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import jax

from genppl import models, ppl
from genppl.inference import progress, smc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
    T = args.tokens
    program = ppl.Program(lm, prompt, T, potential=ppl.MinLength(T, lm.eos_id) * ppl.BannedStrings(["e", "E"], lm))
    kernel = smc.build_kernel()
    sweep = jax.jit(smc.sweep, static_argnums=0)
    variants = {"plain": kernel, "reporting (default rate)": progress.reporting(kernel, T),
                "every step": progress.Reporting(kernel, 1), "every T/4 steps": progress.Reporting(kernel, max(1, T // 4)),
                "never fires": progress.Reporting(kernel, 10 * T)}
    state = smc.init(program, args.n)

    def call(k, key):
        from tqdm import tqdm

        sink = io.StringIO()  # the bar's host work is real, its output goes nowhere
        bar = tqdm(total=T, file=sink, mininterval=0)
        progress.open_bars.append(bar)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            out = sweep(k, program, state, key)
            jax.block_until_ready(out)
            jax.effects_barrier()
            return time.perf_counter() - t0, time.process_time() - c0, bar.n
        finally:
            progress.open_bars.remove(bar)
            bar.close()

    for name, k in variants.items():  # warm-up: compile each
        call(k, jax.random.key(0))
    times = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    updates = {}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order: no variant always goes first
            k = variants[name]
            seconds, cpu_seconds, seen = call(k, jax.random.key(r + 1))
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
            updates[name] = seen
    rows = {}
    print(f"N={args.n}, {T} tokens, {args.repeats} interleaved repeats (seconds per sweep; overhead = ratio to "
          "plain - 1)")
    print(f"{'variant':26s} {'wall median':>11s} {'wall min':>9s} {'CPU median':>10s} {'CPU min':>8s}   "
          "overheads: wall med / wall min / CPU med / CPU min")
    for name in variants:
        stats = [statistics.median(times[name]), min(times[name]), statistics.median(cpu[name]), min(cpu[name])]
        base = [statistics.median(times["plain"]), min(times["plain"]), statistics.median(cpu["plain"]),
                min(cpu["plain"])]
        over = [s / b - 1 for s, b in zip(stats, base)]
        rows[name] = {"wall_median": stats[0], "wall_min": stats[1], "cpu_median": stats[2], "cpu_min": stats[3],
                      "overheads": over, "bar_reached": updates[name]}
        print(f"{name:26s} {stats[0]:11.4f} {stats[1]:9.4f} {stats[2]:10.4f} {stats[3]:8.4f}   "
              + " / ".join(f"{100 * o:+.2f}%" for o in over) + f"   bar at {updates[name]}/{T}")
    rows["callback"] = callback_cost(args.repeats)
    cost = rows["callback"]["cpu_us_per_callback"]
    calls = T // progress.report_every(T)
    base = statistics.median(cpu["plain"])
    print(f"one callback costs {cost:.1f} us of CPU (median over repeats of a 2000-step loop); the default rate "
          f"makes {calls} callbacks per sweep: {calls * cost / 1e6:.5f} s = {100 * calls * cost / 1e6 / base:.3f}% "
          f"of the plain sweep's {base:.3f} s CPU")
    return rows


def callback_cost(repeats: int, steps: int = 2000) -> dict:
    """CPU (and wall) microseconds per host callback, from a compiled loop of ``steps`` trivial
    steps with a callback at every step against the same loop without (bar open, as in a run)."""
    from tqdm import tqdm

    def loop(with_callback):
        def body(x, i):
            if with_callback:
                jax.debug.callback(progress.emit, i)
            return x * 1.0000001 + 1.0, None

        return jax.jit(lambda x: jax.lax.scan(body, x, jax.numpy.arange(steps))[0])

    fns = {True: loop(True), False: loop(False)}
    bar = tqdm(total=steps, file=io.StringIO(), mininterval=0)
    progress.open_bars.append(bar)
    try:
        for f in fns.values():
            jax.block_until_ready(f(0.0))
        cpu, wall = {True: [], False: []}, {True: [], False: []}
        for _ in range(repeats):
            for flag, f in fns.items():
                bar.n = 0
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(0.0))
                jax.effects_barrier()
                wall[flag].append(time.perf_counter() - t0)
                cpu[flag].append(time.process_time() - c0)
    finally:
        progress.open_bars.remove(bar)
        bar.close()
    per = lambda d: 1e6 * (statistics.median(d[True]) - statistics.median(d[False])) / steps
    return {"cpu_us_per_callback": per(cpu), "wall_us_per_callback": per(wall)}


if __name__ == "__main__":
    main()
