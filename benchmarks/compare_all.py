"""Run the four research comparisons in turn (each writes its table and figure):

    python benchmarks/compare_all.py --quick          # the few-minute versions
    python benchmarks/compare_all.py                  # default settings
    python benchmarks/compare_all.py --task chains --model reasoner --prm prm

``--task``, ``--model``, ``--prm`` and ``--max-new-tokens`` go to the comparisons that take them ((a)-(c); (d) runs
on the sentences task with ``--model``). Wall time per comparison is printed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_amortised  # noqa: E402
import compare_ctrlg  # noqa: E402
import compare_power  # noqa: E402
import compare_prm  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--task", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--prm", default=None)
    p.add_argument("--max-new-tokens", default=None, help="token cap of (a)-(c) (default: the task's MAX_NEW_TOKENS)")
    p.add_argument("--only", nargs="+", choices=["prm", "power", "amortised", "ctrlg"], default=None)
    args = p.parse_args(argv)
    common = ["--quick"] if args.quick else []
    model = ["--model", args.model] if args.model else []
    task = ["--task", args.task] if args.task else []
    prm = ["--prm", args.prm] if args.prm else []
    task += ["--max-new-tokens", args.max_new_tokens] if args.max_new_tokens else []
    runs = {"prm": (compare_prm, common + model + task + prm), "power": (compare_power, common + model + task),
            "amortised": (compare_amortised, common + model + task),
            "ctrlg": (compare_ctrlg, common + (model if args.model and args.model != "reasoner" else []))}
    seconds = {}
    for name, (module, argv_) in runs.items():
        if args.only and name not in args.only:
            continue
        # one long process compiles many programs; a default run died in XLA's CPU compiler
        # ("Cannot allocate memory") at the start of (b) after (a): free what (a) compiled
        jax.clear_caches()
        started = time.perf_counter()
        module.main(argv_)
        seconds[name] = time.perf_counter() - started
    print("\n" + ", ".join(f"{k}: {v / 60:.1f} min" for k, v in seconds.items()) +
          f"; total {sum(seconds.values()) / 60:.1f} min")
    return seconds


if __name__ == "__main__":
    main()
