"""What each method of the PRM comparison costs per compiled call, with the PRM read
incrementally (its own KV cache: each step boundary reads only the new tokens, as
``ppl.PRMReward`` does) against a full pass over the whole buffer at every boundary.

    python benchmarks/prm_cost.py                # 16 eval problems of chains, N = 4 and 16
    python benchmarks/prm_cost.py --problems 8 --budgets 16

Times ``compare_prm.Runner``'s calls on one chunk of eval problems (one compiled call each):
beam search, the particle filter and twisted SMC with the bundled PRM, at each N, both ways,
side by side in one run; each call runs twice (the first compiles; the second is the steady
state, reported). The full pass is defined here (:class:`FullPass`), as the potentials
evaluated before the incremental state existed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_prm  # noqa: E402
import testbed  # noqa: E402

from genppl import models, ppl  # noqa: E402
from genppl.cli.methods import encode_prompt  # noqa: E402
from genppl.ppl.scorers import FinalReward, StepReward, content_length  # noqa: E402


class FullPass:
    """Mixin: score a boundary by one PRM forward pass over every row's whole buffer."""

    def init(self, lm_state):
        return self.scorer.init(self, lm_state)

    def logw_boundary(self, pstate, lm_state, at_boundary, final):
        return self._account(pstate, lm_state, at_boundary, final, lambda rows: self._evaluate(lm_state, rows))

    def _evaluate(self, lm_state, rows):
        content = jnp.maximum(content_length(lm_state, self.eos_id), 1)
        return self.beta * jax.nn.log_sigmoid(self.prm.logits(lm_state.tokens, content))


class FullPassStep(FullPass, ppl.PRMReward):
    scorer = StepReward


class FullPassFinal(FullPass, ppl.PRMFinalReward):
    scorer = FinalReward


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--budgets", type=int, nargs="+", default=[4, 16])
    p.add_argument("--model", default="reasoner")
    args = p.parse_args(argv)
    task = testbed.load_task("chains")
    lm = models.load(args.model)
    incremental, full = testbed.load_reward("prm", lm), testbed.load_reward("prm", lm)
    full._potentials = {("step", 1.0): FullPassStep(full.prm, lm.tokenizer), ("final", 1.0): FullPassFinal(full.prm, lm.tokenizer)}
    runners = {"incremental": compare_prm.Runner(lm, task, incremental, task.max_new_tokens),
               "full pass": compare_prm.Runner(lm, task, full, task.max_new_tokens)}
    problems = testbed.split(task, "eval", args.problems)
    ids = [encode_prompt(lm, task.prompt(pb)) for pb in problems]
    key = jax.random.key(0)
    methods = {"beam search (PRM)": lambda r, n: r.beam(ids, n, key, 4),
               "particle filter (PRM)": lambda r, n: r.particle_filter(ids, n, key, 1.0, "step"),
               "SMC, PRM as twist": lambda r, n: r.particle_filter(ids, n, key, 1.0, "final")}
    print(f"{args.problems} problems of chains in one call, {lm!r}, the bundled PRM ({testbed.machine_line()})")
    rows = []
    for n in args.budgets:
        for name, fn in methods.items():
            seconds, answers = {}, {}
            for way, runner in runners.items():
                for _ in range(2):  # the second call: compiled
                    started = time.perf_counter()
                    answers[way] = fn(runner, n)
                    seconds[way] = time.perf_counter() - started
            same = sum(a == b for a, b in zip(answers["incremental"], answers["full pass"]))
            ratio = seconds["full pass"] / seconds["incremental"]
            rows.append([name, n, f"{seconds['full pass']:.1f}", f"{seconds['incremental']:.1f}", f"{ratio:.1f}x",
                         f"{same}/{len(ids)}"])
            print(f"  {name}, N = {n}: full pass {seconds['full pass']:.1f} s, incremental "
                  f"{seconds['incremental']:.1f} s ({ratio:.1f}x); same answer and tokens on {same}/{len(ids)}",
                  flush=True)
    print("\n" + testbed.markdown_table(["method", "N", "full pass (s)", "incremental (s)", "speed-up",
                                         "same (answer, tokens)"], rows))


if __name__ == "__main__":
    main()
