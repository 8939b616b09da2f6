"""Amortisation (Hu et al.; variational reasoning): a LoRA proposal trained toward the target,
against SMC with the base proposal, at equal samples.

    python benchmarks/compare_amortised.py                      # target p(x)^4, 60 steps per objective
    python benchmarks/compare_amortised.py --target reward       # p(x) r(x) with the bundled PRM
    python benchmarks/compare_amortised.py --quick               # 4 steps, 4 eval problems

Target, per problem (prompt): ``--target power``: pi(x) ∝ p(x)^alpha (``ppl.Program(alpha=)``);
``--target reward``: pi(x) ∝ p(x) r(x)^beta with the reward of ``--prm`` on the finished
solution (``ppl.FinalReward``: partial rewards only guide). The base proposal is the locally
optimal one for the target's token-level part (for p^alpha: temperature 1/alpha; for the
reward target: the LM itself), the learned one a rank-``--rank`` LoRA on that base
(``variational.Guide(proposal=models.LoRA(...))``, q ∝ base * p_lora / p), trained once on
``--train-problems`` problems of the task's training stream, one problem per step (so
the proposal is amortised over prompts), with

* **trajectory balance** with log Z set per batch to its optimum, the mean of
  log pi_unnorm(x) - log q(x) over the batch (the log-variance form of TB: one scalar
  log Z_theta cannot serve many prompts whose log Z differ);
* **forward KL** from SMC samples (``variational.forward_kl``, SMC with the current guide).

Evaluation on eval problems, N particles each: SMC with each proposal (resampling at
ESS < N/2), accuracy of the weighted vote; the importance ESS / N of a run without
resampling; and the training cost (steps, wall seconds, sampled sequences). 95% intervals
over problems (Wilson for 0/1 values, else bootstrap). Learning rate, rank and steps are
fixed in advance (no dev tuning).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

from genppl import models, ppl  # noqa: E402
from genppl.cli.methods import encode_prompt, step_delimiter  # noqa: E402
from genppl.inference import smc, variational  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    testbed.common_arguments(p, problems=32, dev=0, quick_problems=4)
    p.add_argument("--target", choices=["power", "reward"], default="power")
    p.add_argument("--alpha", type=float, default=4.0, help="power target: p(x)^alpha")
    p.add_argument("--prm", default="prm", help="reward target: the reward (see compare_prm.py; default the bundled PRM)")
    p.add_argument("--beta", type=float, default=1.0, help="reward target: r(x)^beta")
    p.add_argument("--n", type=int, default=8, help="particles at evaluation")
    p.add_argument("--steps", type=int, default=None, help="training steps per objective (default 60; --quick 4)")
    p.add_argument("--samples", type=int, default=None, help="samples per training step (default 16; --quick 8)")
    p.add_argument("--train-problems", type=int, default=64)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="token cap per answer (default: the task's MAX_NEW_TOKENS)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    testbed.resolve_counts(args)
    args.steps = args.steps or (4 if args.quick else 60)
    args.samples = args.samples or (8 if args.quick else 16)
    return args


def training_problems(task, n, seed):
    if hasattr(task.module, "problems"):
        return list(task.module.problems("train", n, seed=seed))
    import random

    rng = random.Random(f"{seed}/compare-amortised-train")
    held_out = {p.question for p in testbed.split(task, "eval", 1000)} | \
        {p.question for p in testbed.split(task, "dev", 200)}
    out = []
    while len(out) < n:
        pb = task.module.generate_problem(rng)
        if pb.question not in held_out:
            out.append(pb)
    return out


class Setup:
    def __init__(self, args, lm, task):
        self.args, self.lm, self.task = args, lm, task
        if args.target == "reward":
            self.reward = testbed.load_reward(args.prm, lm)
            self.potential = self.reward.potential("final", args.beta)
            self.delimiter = step_delimiter(lm, task.step_delimiter)
            self.alpha, self.base = 1.0, ppl.proposals.prior()
        else:
            self.reward, self.potential, self.delimiter, self.alpha = None, None, None, args.alpha
            self.base = ppl.proposals.locally_optimal()

    def program(self, problem, token_level: bool = False):
        """The target's program; ``token_level``: without the step delimiter (variational
        training works token by token; the target of a finished sequence is the same)."""
        ids = encode_prompt(self.lm, self.task.prompt(problem))
        return ppl.Program(self.lm, ids, self.args.max_new_tokens, potential=self.potential, alpha=self.alpha,
                           step_delimiter=None if token_level else self.delimiter)


def train(setup, guide, objective, problems, args, log=print):
    programs = testbed.same_width([setup.program(pb, token_level=True) for pb in problems])  # one compiled step
    trainer = variational.Trainer(objective, optax.chain(optax.clip_by_global_norm(10.0), optax.adam(args.lr)),
                                  programs[0])
    state = trainer.init(args.seed)
    started = time.perf_counter()
    losses = []
    for step in range(args.steps):
        trainer.program = programs[step % len(programs)]  # one prompt per step: amortised over prompts
        state, loss, _, finite = trainer.step(state)
        if not bool(finite):
            raise variational.TrainingError(f"{objective.name}: training diverged at step {step}")
        losses.append(float(loss))
    seconds = time.perf_counter() - started
    log(f"  trained {objective.name}: {args.steps} steps, loss {np.mean(losses[:5]):.3f} -> "
        f"{np.mean(losses[-5:]):.3f}, {seconds:.0f} s", flush=True)
    return state.params["guide"], {"steps": args.steps, "seconds": seconds,
                                   "sequences": args.steps * objective.num_samples}


def evaluate(setup, problems, proposals, args, log=print):
    out = {name: {"accuracy": [], "ess": [], "log_z": []} for name in proposals}
    chunks = [(c, chunk, ppl.stack([setup.program(pb) for pb in chunk]))
              for c, chunk in testbed.chunks(problems, args.batch)]
    for j, (name, (wrap, proposal)) in enumerate(proposals.items()):
        started = time.perf_counter()
        for c, chunk, stacked in chunks:  # one compiled call per chunk
            programs = wrap(stacked)  # one guided LM for the chunk
            key = jax.random.fold_in(jax.random.key(args.seed + 1), c)  # same key for every proposal
            results = smc.run(programs, args.n, key, proposal=proposal)
            plains = smc.run(programs, args.n, jax.random.fold_in(key, 1), proposal=proposal, ess_threshold=0.0)
            for pb, result, plain in zip(chunk, results, plains):
                answer = testbed.vote([setup.task.answer_of(t) for t in result.texts], result.weights)
                out[name]["accuracy"].append(float(answer is not None and answer == pb.answer))
                out[name]["log_z"].append(result.log_z)
                out[name]["ess"].append(plain.final_ess / args.n)
        log(f"  {name}: accuracy {np.mean(out[name]['accuracy']):.3f}, ESS/N {np.mean(out[name]['ess']):.3f}, "
            f"{time.perf_counter() - started:.0f} s", flush=True)
    return out


def render(args, table, costs, seconds, setup):
    target = (f"p(x)^{args.alpha:g}" if args.target == "power" else
              f"p(x) r(x)^{args.beta:g}, r = {setup.reward.name}")
    header = ["proposal", "accuracy (weighted vote) [95% CI]", "importance ESS / N [95% CI]", "mean log Z_hat",
              "training steps", "training s", "sequences sampled in training"]
    rows = []
    for name, r in table.items():
        c = costs.get(name, {"steps": 0, "seconds": 0.0, "sequences": 0})
        rows.append([name, testbed.fmt_ci(testbed.interval(r["accuracy"], binary=True)),
                     testbed.fmt_ci(testbed.interval(r["ess"], binary=False)),
                     f"{np.mean([z for z in r['log_z'] if np.isfinite(z)]):.2f}", c["steps"], f"{c['seconds']:.0f}",
                     c["sequences"]])
    cmd = testbed.command_line("compare_amortised", args)
    lm_desc = f"`{args.model}`" if args.model else "the bundled model"
    return (f"### (c) Amortisation: a LoRA proposal against SMC with the base proposal\n\n"
            f"`{cmd}` ({testbed.machine_line()}; {seconds / 60:.1f} min wall). Policy: {lm_desc}; task "
            f"`{args.task}`; target pi ∝ {target}; LoRA rank {args.rank}, Adam({args.lr:g}) with clipping 10, "
            f"{args.samples} samples per step, one of {args.train_problems} training problems per step (fixed in "
            f"advance, not tuned); evaluation on {args.problems} eval problems with N = {args.n} particles, "
            f"at most {args.max_new_tokens} new tokens; seed {args.seed}, {args.batch} problems per compiled call. "
            f"Equal samples: every row uses N "
            f"particles per problem and the same keys.\n\n" + testbed.markdown_table(header, rows) +
            f"\n\n![ESS and accuracy](figures/{figure_name(args)}.png)\n")


def figure_name(args) -> str:
    return testbed.figure_name("amortised" + ("_reward" if args.target == "reward" else ""), args.quick)


def plot(table, results, name):
    fig, (ax1, ax2) = testbed.new_figure(2, (4.5, 3.6))
    names = list(table)
    for ax, metric, label in ((ax1, "accuracy", "accuracy"), (ax2, "ess", "importance ESS / N")):
        cis = [testbed.interval(table[n][metric], binary=metric == "accuracy") for n in names]
        ax.bar(range(len(names)), [c[0] for c in cis],
               yerr=np.array([[c[0] - c[1], c[2] - c[0]] for c in cis]).T, alpha=0.7)
        ax.set_xticks(range(len(names)), [n.replace(" proposal", "").replace("LoRA, ", "") for n in names],
                      fontsize=7, rotation=15)
        ax.set_ylabel(label + " (95% CI)")
    return testbed.save_figure(fig, name, results)


def main(argv=None):
    args = parse_args(argv)
    clock = testbed.Clock()
    task = testbed.load_task(args.task)
    args.max_new_tokens = args.max_new_tokens or task.max_new_tokens
    lm = models.load(args.model)
    setup = Setup(args, lm, task)
    print(f"# (c) amortisation: {lm!r}, task {args.task}, target {args.target}", flush=True)
    train_set = training_problems(task, args.train_problems, args.seed)
    proposals = {"base proposal (SMC)": (lambda prog: prog, setup.base)}
    costs = {}
    for name, make in (("LoRA, trajectory balance", lambda g: variational.trajectory_balance(g, args.samples, log_z="batch")),
                       ("LoRA, forward KL from SMC", lambda g: variational.forward_kl(g, args.samples))):
        guide = variational.Guide(proposal=models.LoRA(lm, rank=args.rank))
        params, costs[name] = train(setup, guide, make(guide), train_set, args)
        proposals[name] = ((lambda prog, g=guide, p=params: g.program(p, prog)), guide.proposal_fn)
    table = evaluate(setup, testbed.split(task, "eval", args.problems), proposals, args)
    text = render(args, table, costs, clock.elapsed(), setup)
    print("\n" + text)
    if not args.no_write:
        print(f"figure: {plot(table, args.results, figure_name(args))}")
        section = "compare-amortised" + ("-reward" if args.target == "reward" else "") + ("-quick" if args.quick else "")
        testbed.write_section(section, text, args.results)
    return {"table": table, "costs": costs}


if __name__ == "__main__":
    main()
