"""Particle filtering with a process reward model (Puri et al.): accuracy against budget N.

    python benchmarks/compare_prm.py                       # default: 64 eval problems, N = 1..64
    python benchmarks/compare_prm.py --quick               # 8 problems, N = 4, 16, no dev sweep
    python benchmarks/compare_prm.py --task arithmetic --prm verifier --model default

Defaults: the testbed (task ``chains``, policy ``reasoner``, the bundled PRM). Problems run
``--batch`` at a time, each method and budget one compiled call for the whole chunk.

Per eval problem and budget N (N generated sequences per problem for every method; the table
reports the tokens each method actually generated):

* **plain sampling**: one sample's accuracy (the mean over the ``--plain`` samples drawn for
  the problem: 64, or the largest N with ``--quick``), flat in N: a budget does not help a
  single sample;
* **majority vote** over the first N of those samples;
* **best-of-N (PRM argmax)**: the sample whose finished text the reward scores highest;
* **weighted best-of-N**: the answer with the largest total reward over the N samples;
* **beam search with the PRM** (``inference.search.beam_search``, step level): N / K beams,
  K sampled next steps each, kept by log p + sum of log step rewards; the best beam answers;
* **particle filter with the PRM** (``ppl.StepReward``, as ``smc.reward_particle_filter``):
  target p(x) prod_k r(x_<=k)^beta, resampling at every step, proposals from the LM; the
  answer of largest total particle weight;
* **SMC with the PRM as a twist** (``ppl.FinalReward``, ``reward_particle_filter(final=True)``):
  target p(x) r(x)^beta, the partial rewards only guide resampling (at ESS < N/2).

beta (particle filter, twisted SMC) and K (beam) are chosen on a dev split (problems drawn
from another seed, eval questions removed) at N = 16, never on the eval problems. 95%
intervals over problems: Wilson for 0/1 outcomes, a percentile bootstrap otherwise; the
Must-show comparison at N = 16 also gets a paired bootstrap interval of the difference.

The reward (``--prm``) sees the question: it scores the prompt plus the partial solution.
SMC tokens are the final particles' lengths summed (each of the N slots generates one step
per SMC step; after resampling the survivors' lengths stand in for the discarded ones').
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

from genppl import models, ppl  # noqa: E402
from genppl.cli.methods import encode_prompt, step_delimiter  # noqa: E402
from genppl.inference import search, smc  # noqa: E402

METHODS = ("plain sampling", "majority vote", "best-of-N (PRM argmax)", "weighted best-of-N (PRM)",
           "beam search (PRM)", "particle filter (PRM)", "SMC, PRM as twist")
DEFAULTS = {"beta_pf": 1.0, "beta_twist": 1.0, "expansions": 4}
SAMPLED = METHODS[:4]  # read off one set of plain samples per problem


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    testbed.common_arguments(p, problems=64, dev=16, quick_problems=8)
    p.add_argument("--prm", default="prm", help="reward: 'prm' (the bundled trained PRM, the default), "
                   "'verifier' (arithmetic step checks, question-blind) or a PRM checkpoint directory")
    p.add_argument("--plain", type=int, default=None, help="samples per problem behind the plain-sampling row "
                   "(default 64; --quick: the largest budget)")
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="N values (default 1 2 4 ... 64)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="token cap per answer (default: the task's MAX_NEW_TOKENS)")
    p.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.5, 2.0],
                   help="dev candidates for beta (ties go to the first, the default 1)")
    p.add_argument("--expansions", type=int, nargs="+", default=[4, 2],
                   help="dev candidates for beam K (ties go to the first, the default 4)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    testbed.resolve_counts(args)
    args.budgets = tuple(args.budgets or testbed.budgets(args.quick, small=(4, 16)))
    args.plain = max(args.plain or (max(args.budgets) if args.quick else 64), max(args.budgets))
    return args


class Runner:
    """Everything shared across problems: the LM, the reward potentials (one object each, so
    every call reuses one compiled sweep), the step delimiter. Each method runs a chunk of
    problems in ONE compiled call (many prompts per call: prompt b of a call with key k uses
    ``jax.random.split(k, B)[b]``); a host-side reward (the arithmetic verifier) runs them one
    by one, problem b with ``jax.random.fold_in(k, b)``."""

    def __init__(self, lm, task, reward, max_new_tokens):
        self.lm, self.task, self.reward, self.T = lm, task, reward, max_new_tokens
        self.delimiter = step_delimiter(lm, task.step_delimiter)
        self.batched = reward.prm is not None  # host callbacks are not mapped over prompts

    def program(self, ids, kind, beta):
        return ppl.Program(self.lm, ids, self.T, potential=self.reward.potential(kind, beta),
                           step_delimiter=self.delimiter)

    def programs(self, prompts, kind, beta):
        """The programs of one call: a list (one per prompt) when batched, else one program."""
        return [self.program(i, kind, beta) for i in prompts] if self.batched else self.program(prompts, kind, beta)

    def each(self, fn, items, key):
        """``fn(items, key)`` as one call when batched, else ``fn(item_b, fold_in(key, b))``."""
        if self.batched:
            return list(fn(items, key))
        return [fn(item, jax.random.fold_in(key, b)) for b, item in enumerate(items)]

    def samples(self, problems, ids, n, key):
        """n plain samples per problem: correctness, answers, tokens, and each finished text's reward."""
        outs = self.each(lambda prompts, k: models.sample(self.lm, prompts, n, self.T, k), ids, key)
        got = []
        for problem, prompt, out in zip(problems, ids, outs):
            rewards = self.reward.score(prompt, self.task.prompt(problem), out.texts)
            answers = [self.task.answer_of(t) for t in out.texts]
            got.append({"answers": answers, "correct": np.array([a == problem.answer for a in answers], float),
                        "tokens": np.asarray(out.num_tokens, np.int64), "rewards": rewards})
        return got

    def particle_filter(self, ids, n, key, beta, kind="step"):
        """(answer, tokens) per problem: the answer of largest total particle weight."""
        def run(prompts, k):
            return smc.run(self.programs(prompts, kind, beta), n, k, proposal=ppl.proposals.prior(),
                           ess_threshold=1.0 if kind == "step" else 0.5)

        return [(testbed.vote([self.task.answer_of(t) for t in r.texts], r.weights), sum(map(len, r.token_ids)))
                for r in self.each(run, ids, key)]

    def beam(self, ids, n, key, expansions):
        """(answer, tokens) per problem: N / K beams, K expansions each; the best beam answers."""
        k = min(expansions, n)

        def run(prompts, key_):
            return search.beam_search(self.programs(prompts, "step", 1.0), max(1, n // k), key_, expansions=k)

        return [((None if r.selected_text is None else self.task.answer_of(r.selected_text)), r.tokens)
                for r in self.each(run, ids, key)]


def sample_methods(s, n):
    """Answers of the sample-based methods from the first n samples."""
    answers, rewards = s["answers"][:n], s["rewards"][:n]
    tokens = int(s["tokens"][:n].sum())
    return {
        "majority vote": (testbed.vote(answers), tokens),
        "best-of-N (PRM argmax)": (answers[int(np.argmax(rewards))], tokens),
        "weighted best-of-N (PRM)": (testbed.vote(answers, rewards), tokens),
    }


def evaluate(runner, problems, budgets, params, seed, methods=METHODS, batch=16, plain=64, log=print):
    """outcomes[method][N] = list of per-problem values; tokens likewise. Problems run
    ``batch`` at a time (one compiled call per method and N); ``plain``: samples per problem
    behind the plain-sampling row (at least max N)."""
    task = runner.task
    outcomes = {m: {n: [] for n in budgets} for m in methods}
    tokens = {m: {n: [] for n in budgets} for m in methods}
    n_max = max(max(budgets), plain if "plain sampling" in methods else 1)
    sampled = any(m in methods for m in SAMPLED)  # the dev sweep runs one search method only
    started = time.perf_counter()
    done = 0
    for c, chunk in testbed.chunks(problems, batch):
        ids = [encode_prompt(runner.lm, task.prompt(problem)) for problem in chunk]
        base = jax.random.fold_in(jax.random.key(seed), c)
        samples = runner.samples(chunk, ids, n_max, jax.random.fold_in(base, 0)) if sampled else [None] * len(chunk)
        for j, n in enumerate(budgets):
            runs = {}
            if "beam search (PRM)" in methods:
                runs["beam search (PRM)"] = runner.beam(ids, n, jax.random.fold_in(base, 100 + j), params["expansions"])
            if "particle filter (PRM)" in methods:
                runs["particle filter (PRM)"] = runner.particle_filter(ids, n, jax.random.fold_in(base, 200 + j),
                                                                       params["beta_pf"], "step")
            if "SMC, PRM as twist" in methods:
                runs["SMC, PRM as twist"] = runner.particle_filter(ids, n, jax.random.fold_in(base, 300 + j),
                                                                   params["beta_twist"], "final")
            for b, (problem, s) in enumerate(zip(chunk, samples)):
                row = {}
                if sampled:
                    row = sample_methods(s, n)
                    row["plain sampling"] = (None, int(s["tokens"][:n].sum()))
                row.update({m: r[b] for m, r in runs.items()})
                for m in methods:
                    answer, spent = row[m]
                    value = float(s["correct"].mean()) if m == "plain sampling" else float(answer == problem.answer)
                    outcomes[m][n].append(value)
                    tokens[m][n].append(spent)
        done += len(chunk)
        log(f"  {done}/{len(problems)} problems, {time.perf_counter() - started:.0f} s", flush=True)
    return outcomes, tokens


def choose(runner, dev, seed, args, log=print):
    """beta of the particle filter and of twisted SMC, and the beam's K, on the dev split at N = 16."""
    params = dict(DEFAULTS)
    if not dev:
        log("  no dev split: the defaults " + ", ".join(f"{k}={v}" for k, v in params.items()))
        return params
    n = 16

    def dev_accuracy(method, **changed):
        trial = {**params, **changed}
        out, _ = evaluate(runner, dev, (n,), trial, seed + 1, methods=(method,), batch=args.batch,
                          log=lambda *a, **k: None)
        return float(np.mean(out[method][n]))

    params["beta_pf"] = testbed.choose_on_dev(args.betas, lambda b: dev_accuracy("particle filter (PRM)", beta_pf=b),
                                              "particle filter beta", log)
    params["beta_twist"] = testbed.choose_on_dev(args.betas, lambda b: dev_accuracy("SMC, PRM as twist", beta_twist=b),
                                                 "twisted SMC beta", log)
    params["expansions"] = testbed.choose_on_dev(args.expansions,
                                                 lambda k: dev_accuracy("beam search (PRM)", expansions=k), "beam K", log)
    return params


def summarise(outcomes, tokens, budgets):
    rows = {}
    for m in outcomes:
        for n in budgets:
            rows[m, n] = (testbed.interval(outcomes[m][n], binary=m != "plain sampling"), float(np.mean(tokens[m][n])))
    return rows


def must_show(outcomes, rows, n=16):
    """PF against majority vote and both best-of-N at N = n: intervals and a paired bootstrap."""
    pf = "particle filter (PRM)"
    if n not in outcomes[pf]:
        return "N = 16 was not in the budgets of this run."
    lines = []
    for other in ("majority vote", "best-of-N (PRM argmax)", "weighted best-of-N (PRM)"):
        a, b = rows[pf, n][0], rows[other, n][0]
        diff = np.asarray(outcomes[pf][n]) - np.asarray(outcomes[other][n])
        low, high = testbed.bootstrap(diff)
        verdict = "intervals do not overlap" if not testbed.overlaps(a, b) else "intervals overlap"
        lines.append(f"- particle filter {testbed.fmt_ci(a)} vs {other} {testbed.fmt_ci(b)}: {verdict}; "
                     f"paired difference {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]")
    return "\n".join(lines)


def render(args, rows, params, budgets, lm_desc, reward_desc, seconds, outcomes):
    header = ["method"] + [f"N={n}" for n in budgets] + [f"tokens/problem at N={max(budgets)}"]
    table = []
    for m in METHODS:
        table.append([m] + [testbed.fmt_ci(rows[m, n][0]) for n in budgets] + [f"{rows[m, max(budgets)][1]:,.0f}"])
    cmd = testbed.command_line("compare_prm", args)
    return (f"### (a) Particle filtering with a PRM: accuracy against budget N\n\n"
            f"`{cmd}` ({testbed.machine_line()}; {seconds / 60:.1f} min wall). Policy: {lm_desc}; task "
            f"`{args.task}`, {args.problems} eval problems, at most {args.max_new_tokens} new tokens; reward: "
            f"{reward_desc}. Hyper-parameters " + (f"chosen on {args.dev_problems} dev problems at N = 16: "
                                                   if args.dev_problems else "fixed in advance (no dev run): ")
            + ", ".join(f"{k} = {v:g}" for k, v in params.items()) +
            f"; seed {args.seed}, {args.batch} problems per compiled call. Accuracy with its 95% interval over "
            f"problems (Wilson; plain sampling: bootstrap of the per-problem share of right samples among "
            f"{args.plain}).\n\n"
            + testbed.markdown_table(header, table) +
            f"\n\n![accuracy against N](figures/{testbed.figure_name('prm_scaling', args.quick)}.png)\n\nAt N = 16:\n\n" + must_show(outcomes, rows) + "\n")


def plot(rows, budgets, results, path_name="prm_scaling"):
    fig, (ax,) = testbed.new_figure(1, (6.5, 4.5))
    for m in METHODS:
        means = [rows[m, n][0][0] for n in budgets]
        low = [rows[m, n][0][1] for n in budgets]
        high = [rows[m, n][0][2] for n in budgets]
        ax.plot(budgets, means, marker="o", label=m)
        ax.fill_between(budgets, low, high, alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget N (sequences per problem)")
    ax.set_ylabel("accuracy (95% CI over problems)")
    ax.legend(fontsize=7)
    return testbed.save_figure(fig, path_name, results)


def main(argv=None):
    args = parse_args(argv)
    clock = testbed.Clock()
    task = testbed.load_task(args.task)
    args.max_new_tokens = args.max_new_tokens or task.max_new_tokens
    lm = models.load(args.model)
    reward = testbed.load_reward(args.prm, lm)
    runner = Runner(lm, task, reward, args.max_new_tokens)
    print(f"# (a) PRM comparison: {lm!r}, task {args.task}, reward {args.prm}, budgets {args.budgets}", flush=True)
    params = choose(runner, testbed.split(task, "dev", args.dev_problems), args.seed, args)
    problems = testbed.split(task, "eval", args.problems)
    outcomes, tokens = evaluate(runner, problems, args.budgets, params, args.seed, batch=args.batch,
                               plain=args.plain)
    rows = summarise(outcomes, tokens, args.budgets)
    lm_desc = f"`{args.model}`" if args.model else "the bundled model"
    text = render(args, rows, params, args.budgets, lm_desc, reward.name, clock.elapsed(), outcomes)
    print("\n" + text)
    if not args.no_write:
        print(f"figure: {plot(rows, args.budgets, args.results, testbed.figure_name('prm_scaling', args.quick))}")
        testbed.write_section("compare-prm" + ("-quick" if args.quick else ""), text, args.results)
    return {"rows": rows, "params": params, "outcomes": outcomes, "tokens": tokens}


if __name__ == "__main__":
    main()
