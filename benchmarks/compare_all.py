"""Run the four research comparisons in turn (each writes its table and figure):

    python benchmarks/compare_all.py --quick          # the few-minute versions, two at a time
    python benchmarks/compare_all.py                  # default settings
    python benchmarks/compare_all.py --task chains --model reasoner --prm prm

``--task``, ``--model``, ``--prm`` and ``--max-new-tokens`` go to the comparisons that take them ((a)-(c); (d) runs
on the sentences task with ``--model``). Each comparison runs in its own Python process: one
process that compiled all four comparisons' programs died in XLA's CPU compiler ("LLVM
compilation error: Cannot allocate memory") at the start of (b). Wall time per comparison, with
its process's start-up, is printed at the end; a comparison that fails stops the run.
``--jobs 2`` (the default with ``--quick``) runs two at a time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(name: str, argv: list[str], captured: bool) -> float:
    """Seconds of one comparison in its own process; its output is printed at its end when
    comparisons run side by side (``captured``), so that theirs do not interleave."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(HERE / f"compare_{name}.py"), *argv], capture_output=captured,
                         text=True)
    if captured:
        print(f"\n===== compare_{name} =====\n{out.stdout}{out.stderr}", flush=True)
    if out.returncode:
        raise SystemExit(f"compare_{name}.py {' '.join(argv)} failed (exit {out.returncode})")
    return time.perf_counter() - started


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--task", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--prm", default=None)
    p.add_argument("--max-new-tokens", default=None, help="token cap of (a)-(c) (default: the task's MAX_NEW_TOKENS)")
    p.add_argument("--jobs", type=int, default=None, help="comparisons run side by side (default 2 with --quick, "
                   "where compiling dominates: 4.9 min against 6.1 one at a time on 2 cores; else 1)")
    p.add_argument("--only", nargs="+", choices=["prm", "power", "amortised", "ctrlg"], default=None)
    args = p.parse_args(argv)
    args.jobs = args.jobs or (2 if args.quick else 1)
    common = ["--quick"] if args.quick else []
    model = ["--model", args.model] if args.model else []
    task = ["--task", args.task] if args.task else []
    prm = ["--prm", args.prm] if args.prm else []
    task += ["--max-new-tokens", args.max_new_tokens] if args.max_new_tokens else []
    runs = {"prm": common + model + task + prm, "power": common + model + task, "amortised": common + model + task,
            "ctrlg": common + (model if args.model and args.model != "reasoner" else [])}
    chosen = [name for name in runs if not args.only or name in args.only]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the processes
        seconds = dict(zip(chosen, pool.map(lambda name: run(name, runs[name], args.jobs > 1), chosen)))
    print("\n" + ", ".join(f"{k}: {v / 60:.1f} min" for k, v in seconds.items()) +
          f"; total {(time.perf_counter() - started) / 60:.1f} min wall")
    return seconds


if __name__ == "__main__":
    main()
