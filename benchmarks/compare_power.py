"""Power sampling (Karan & Du; Power-SMC) against temperature 1/alpha: accuracy, cost, and
likelihood against diversity.

    python benchmarks/compare_power.py                    # 48 eval problems (3 compiled calls of 16), n = 8, alpha 2 and 4
    python benchmarks/compare_power.py --quick            # 8 problems, n = 4
    python benchmarks/compare_power.py --task arithmetic --model default

Defaults: the testbed (task ``chains``, policy ``reasoner``). Problems run ``--batch`` at a
time: each method is one compiled call for the whole chunk (many prompts per call).

Per eval problem, each method returns ``--n`` answers (samples, chains or weighted particles):

* **base sampling** (temperature 1, p itself);
* **temperature 1/alpha**: token-level sharpening, samples p_t(v)^alpha / sum_v' p_t(v')^alpha
  at each token (not p(x)^alpha);
* **MH power sampling** (``inference.mcmc.power_mcmc``): blockwise Metropolis-Hastings on
  p(x)^alpha with proposals at temperature 1/alpha;
* **Power-SMC** (``inference.power.power_smc``): weighted particles for p(x)^alpha;
* **rollout power sampling** (``inference.power.power_rollout``): each next token from
  p(v)^alpha times a rollout estimate of the future's mass.

for alpha in ``--alphas`` (default 2 and 4). Columns: accuracy (the share of right answers,
weighted by the particles' normalised weights for Power-SMC), tokens sampled per answer
(every proposal, extension and rollout; for SMC one token per particle per step), the mean
log p(x) of the answers under the base model, and the number of distinct final answers
among the n (diversity). 95% intervals over problems: percentile bootstrap of the mean of
the per-problem shares; the Must-show comparison also gets a paired bootstrap interval of the
difference. The sampler
settings are fixed in advance (below), not tuned, so no dev split is used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

from genppl import models  # noqa: E402
from genppl.cli.methods import encode_prompt  # noqa: E402
from genppl.inference import mcmc, power, smc  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    testbed.common_arguments(p, problems=48, dev=0, quick_problems=8)
    p.add_argument("--n", type=int, default=None, help="answers per problem (default 8; --quick 4)")
    p.add_argument("--alphas", type=float, nargs="+", default=[2.0, 4.0])
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="token cap per answer (default: the task's MAX_NEW_TOKENS)")
    p.add_argument("--block-size", type=int, default=16, help="MH: tokens per block B")
    p.add_argument("--num-mcmc", type=int, default=2, help="MH: steps per block")
    p.add_argument("--rollouts", type=int, default=2, help="rollout power sampling: M")
    p.add_argument("--rollout-top-k", type=int, default=2, help="rollout power sampling: K")
    p.add_argument("--horizon", type=int, default=8, help="rollout power sampling: rollout length")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    testbed.resolve_counts(args)
    if args.n is None:
        args.n = 4 if args.quick else 8
    return args


def methods(args, alpha):
    n, T = args.n, args.max_new_tokens
    return {
        "temperature 1/alpha": lambda lm, ids, key: models.sample(lm, ids, n, T, key, temperature=1.0 / alpha),
        "MH power sampling": lambda lm, ids, key: mcmc.power_mcmc(
            lm, ids, n, T, key, alpha=alpha, block_size=args.block_size, num_mcmc=args.num_mcmc),
        "Power-SMC": lambda lm, ids, key: power.power_smc(lm, ids, n, T, key, alpha=alpha),
        "rollout power sampling": lambda lm, ids, key: power.power_rollout(
            lm, ids, n, T, key, alpha=alpha, top_k=args.rollout_top_k, rollouts=args.rollouts,
            horizon=args.horizon),
    }


def measure(out, problem, task) -> dict:
    """Per-problem accuracy, tokens per answer, mean log p and distinct answers."""
    answers = [task.answer_of(t) for t in out.texts]
    correct = np.array([a is not None and a == problem.answer for a in answers], float)
    if isinstance(out, smc.SMCResult):
        w = np.asarray(out.weights, np.float64)
        live = w > 0
        return {"accuracy": float(w @ correct), "tokens": float(len(out.ess)),
                "log_p": float(w @ np.where(live, out.log_p, 0.0)) if live.any() else np.nan,
                "distinct": float(len({a for a, ok in zip(answers, live) if ok}))}
    tokens = out.tokens_generated if getattr(out, "tokens_generated", None) is not None else out.num_tokens
    return {"accuracy": float(correct.mean()), "tokens": float(np.mean(tokens)),
            "log_p": float(np.mean(out.log_probs)), "distinct": float(len(set(answers)))}


def run(args, lm, task, problems, log=print):
    table = {}  # (method, alpha) -> {metric: [per problem]}
    jobs = [("base sampling", None, lambda lm, ids, key: models.sample(lm, ids, args.n, args.max_new_tokens, key))]
    for alpha in args.alphas:
        jobs += [(name, alpha, fn) for name, fn in methods(args, alpha).items()]
    chunks = [(c, chunk, [encode_prompt(lm, task.prompt(pb)) for pb in chunk])
              for c, chunk in testbed.chunks(problems, args.batch)]
    for j, (name, alpha, fn) in enumerate(jobs):
        started = time.perf_counter()
        rows = {"accuracy": [], "tokens": [], "log_p": [], "distinct": []}
        for c, chunk, prompts in chunks:  # one compiled call per chunk
            outs = fn(lm, prompts, jax.random.fold_in(jax.random.key(args.seed), 1000 * j + c))
            for problem, out in zip(chunk, outs):
                for k, v in measure(out, problem, task).items():
                    rows[k].append(v)
        table[name, alpha] = rows
        log(f"  {name}{'' if alpha is None else f' (alpha {alpha:g})'}: accuracy {np.mean(rows['accuracy']):.3f}, "
            f"{np.mean(rows['tokens']):.0f} tokens/answer, {time.perf_counter() - started:.0f} s", flush=True)
    return table


def must_show(table, alphas):
    lines = []
    for alpha in alphas:
        temp = testbed.interval(table["temperature 1/alpha", alpha]["accuracy"], binary=False)
        for other in ("MH power sampling", "Power-SMC"):
            ci = testbed.interval(table[other, alpha]["accuracy"], binary=False)
            diff = np.asarray(table[other, alpha]["accuracy"]) - np.asarray(table["temperature 1/alpha", alpha]["accuracy"])
            low, high = testbed.bootstrap(diff)
            verdict = "intervals do not overlap" if not testbed.overlaps(ci, temp) else "intervals overlap"
            lines.append(f"- alpha {alpha:g}: {other} {testbed.fmt_ci(ci)} vs temperature 1/alpha "
                         f"{testbed.fmt_ci(temp)}: {verdict}; paired difference {diff.mean():+.3f} "
                         f"[{low:+.3f}, {high:+.3f}]")
    return "\n".join(lines)


def render(args, table, seconds):
    header = ["method", "alpha", "accuracy [95% CI]", "tokens sampled / answer", "mean log p(answer)",
              "distinct answers (of n)"]
    rows = []
    for (name, alpha), r in table.items():
        rows.append([name, "-" if alpha is None else f"{alpha:g}", testbed.fmt_ci(testbed.interval(r["accuracy"], binary=False)),
                     f"{np.mean(r['tokens']):.1f}", f"{np.nanmean(r['log_p']):.2f}",
                     f"{np.mean(r['distinct']):.2f}"])
    cmd = testbed.command_line("compare_power", args)
    lm_desc = f"`{args.model}`" if args.model else "the bundled model"
    return (f"### (b) Power sampling against temperature 1/alpha\n\n"
            f"`{cmd}` ({testbed.machine_line()}; {seconds / 60:.1f} min wall). Policy: {lm_desc}; task "
            f"`{args.task}`, {args.problems} eval problems, n = {args.n} answers each, at most "
            f"{args.max_new_tokens} new tokens; MH B = {args.block_size}, N_MCMC = {args.num_mcmc}; Power-SMC "
            f"N = {args.n}; rollouts K = {args.rollout_top_k}, M = {args.rollouts}, H = {args.horizon} "
            f"(fixed in advance, not tuned); seed {args.seed}, {args.batch} problems per compiled call. Accuracy "
            f"(share of right answers among the n) "
            f"with a 95% bootstrap interval over problems.\n\n" + testbed.markdown_table(header, rows) +
            f"\n\n![likelihood against diversity](figures/{testbed.figure_name('power_panel', args.quick)}.png)\n\n" + must_show(table, args.alphas) + "\n")


def plot(table, results, figure="power_panel"):
    fig, (ax1, ax2) = testbed.new_figure(2, (5.5, 4.2))
    names = list(dict.fromkeys(n for n, _ in table))
    for name in names:
        keys = [k for k in table if k[0] == name]
        xs = [np.mean(table[k]["distinct"]) for k in keys]
        ys = [np.nanmean(table[k]["log_p"]) for k in keys]
        ax1.plot(xs, ys, marker="o", linestyle=":", label=name)
        for k, x, y in zip(keys, xs, ys):
            ax1.annotate("" if k[1] is None else f"a={k[1]:g}", (x, y), fontsize=7)
    ax1.set_xlabel("distinct answers among n (diversity)")
    ax1.set_ylabel("mean log p(answer) (likelihood)")
    ax1.legend(fontsize=7)
    labels, means, errs = [], [], []
    for k, r in table.items():
        m, lo, hi = testbed.interval(r["accuracy"], binary=False)
        labels.append(k[0].replace(" sampling", "").replace("temperature ", "T=") + ("" if k[1] is None else f" a={k[1]:g}"))
        means.append(m)
        errs.append([m - lo, hi - m])
    ax2.barh(range(len(labels)), means, xerr=np.array(errs).T, color="tab:blue", alpha=0.7)
    ax2.set_yticks(range(len(labels)), labels, fontsize=7)
    ax2.set_xlabel("accuracy (95% CI over problems)")
    return testbed.save_figure(fig, figure, results)


def main(argv=None):
    args = parse_args(argv)
    clock = testbed.Clock()
    task = testbed.load_task(args.task)
    args.max_new_tokens = args.max_new_tokens or task.max_new_tokens
    lm = models.load(args.model)
    print(f"# (b) power comparison: {lm!r}, task {args.task}, alphas {args.alphas}, n {args.n}", flush=True)
    problems = testbed.split(task, "eval", args.problems)
    table = run(args, lm, task, problems)
    text = render(args, table, clock.elapsed())
    print("\n" + text)
    if not args.no_write:
        print(f"figure: {plot(table, args.results, testbed.figure_name('power_panel', args.quick))}")
        testbed.write_section("compare-power" + ("-quick" if args.quick else ""), text, args.results)
    return {"table": table}


if __name__ == "__main__":
    main()
