"""Amortized inference on the bundled model: SMC with and without a learned proposal or twist,
at equal particles.

    python benchmarks/variational.py                       # LoRA proposal (TB) and twist head (CTL)
    python benchmarks/variational.py --guide lora --steps 60 --n 16 --runs 32
    python benchmarks/variational.py --model DIR --constraint keyword --keyword cat
    python benchmarks/variational.py --part tabular      # every objective, exact KLs (tabular LM)

Task: continue ``<BOS>S:`` for ``--max-new-tokens`` tokens under a hard constraint: ``no-e``
(``ppl.BannedStrings(["e", "E"])``, a lipogram) or ``keyword`` (the text must contain
``--keyword``, a ``ppl.Regex``). The baseline is SMC with the locally optimal proposal
(q ∝ p * constraint mask, already exact for the constraint's next token). Learned guides:

* ``lora``: a rank-``--rank`` LoRA on q/v projections, q ∝ p * mask * (p_lora / p), trained
  with trajectory balance (a learned log Z; its squared residual is the variance of log w);
* ``twist``: a linear twist head on the final hidden state, trained by contrastive twist
  learning (positives: twisted SMC particles; negatives: twisted proposal samples).

Evaluation, for each guide and the baseline, over ``--runs`` seeds at ``--n`` particles:
importance-sampling ESS / N (no resampling: how well q alone matches the target), and for
SMC (systematic resampling at ESS < N/2) the mean and variance of log Z_hat. Training time is
wall time of the training loop (compilation included); TB's log Z_theta starts at the
baseline's SMC estimate. The machine is shared (2 CPU cores,
other jobs running): times are noisy; compare the columns of one run.
"""

from __future__ import annotations

import argparse
import platform
import time


import jax
import numpy as np
import optax

from genppl import models
from genppl import ppl
from genppl.inference import variational as vi
from genppl.inference.variational import Trainer


def build(args):
    lm = models.load(args.model)
    prompt = [lm.eos_id] + lm.tokenizer.encode(args.prompt)
    if args.constraint == "no-e":
        potential = ppl.BannedStrings(["e", "E"], lm)
    else:
        potential = ppl.Regex(f".*{args.keyword}.*", lm)
    return lm, ppl.Program(lm, prompt, args.max_new_tokens, potential=potential)


def evaluate(program, n, runs, seed, proposal=ppl.proposals.locally_optimal(), upper=False):
    """(IS ESS/N mean, SMC log Z_hat mean, SMC Var(log Z_hat)) over ``runs`` seeds; with
    ``upper``, the two-sided bounds of smc.log_z_bounds (references drawn by weight from a
    256-particle SMC with the same proposal: approximately exact)."""
    _, ess_is = vi.smc_log_z(program, seed, n, runs, proposal=proposal, ess_threshold=0.0)
    log_z, _ = vi.smc_log_z(program, seed + 1, n, runs, proposal=proposal, ess_threshold=0.5)
    finite = np.isfinite(log_z)
    return {"ess": float(np.mean(ess_is)), "log_z": float(np.mean(log_z[finite])) if finite.any() else -np.inf,
            "log_z_var": float(np.var(log_z[finite], ddof=1)) if finite.sum() > 1 else np.nan,
            "dead_runs": int((~finite).sum()),
            **(_bounds(program, n, runs, seed, proposal) if upper else {})}


def _bounds(program, n, runs, seed, proposal):
    from genppl.inference import smc

    b = smc.log_z_bounds(program, n, seed + 2, runs=runs, proposal=proposal, reference_particles=256)
    return {"lower": b.lower, "lower_se": b.lower_se, "upper": b.upper, "upper_se": b.upper_se, "gap": b.gap}


def train(guide_name, lm, program, args, log_z_start):
    t0 = time.perf_counter()
    if guide_name == "lora":
        guide = vi.Guide(proposal=models.LoRA(lm, rank=args.rank))
        objective = vi.trajectory_balance(guide, args.batch)
        params = objective.init(jax.random.key(args.seed))
        # start log Z_theta at the baseline's SMC estimate: TB's residual is then the spread
        # of log w, not a constant offset that Adam would take hundreds of steps to remove
        params["log_z"] = np.float32(log_z_start)
    else:
        guide = vi.Guide(twist=models.TwistHead(lm))
        objective = vi.contrastive_twist(guide, args.batch, source=vi.smc_samples)
        params = None
    trainer = Trainer(objective, optax.chain(optax.clip_by_global_norm(10.0), optax.adam(args.lr)), program)
    state, history = trainer.fit(trainer.init(args.seed, params), args.steps, progress=args.progress)
    seconds = time.perf_counter() - t0
    return guide, state.params["guide"], seconds, history


def tabular_part(args) -> dict:
    """Exact KLs by enumeration on a random tabular LM (vocab 4, 3 tokens), target p^2."""
    lm = models.TabularLM.random(jax.random.key(args.seed), vocab_size=4, max_len=3, eos_boost=0.5)
    program = ppl.Program(lm, [1], 3, alpha=2.0)
    exact = vi.exact_batch(program)
    guide = vi.Guide(proposal=models.TabularAdapter(lm), log_q=vi.adapted_lm)
    objectives = {"ELBO (K=8)": vi.elbo(guide, 8), "IWAE (K=8)": vi.iwae(guide, 8),
                  "MIWAE (M=2, K=4)": vi.miwae(guide, 4, 2), "CIWAE (K=8, beta=0.5)": vi.ciwae(guide, 8),
                  "forward KL (SMC, 16 particles)": vi.forward_kl(guide, 16),
                  "forward KL (exact samples)": vi.forward_kl(guide, 16, source=vi.exact_samples),
                  "trajectory balance (K=8)": vi.trajectory_balance(guide, 8),
                  "sub-trajectory balance (K=8)": vi.subtrajectory_balance(guide, 8)}
    start = guide.init(jax.random.key(0))
    rows = {"base LM (q = p, untrained)": vi.exact_kl(guide, start, program, exact)[:2] + (None,),
            "locally optimal q ∝ p^2 (no training)":
                vi.exact_kl(vi.Guide(proposal=models.TabularAdapter(lm)), start, program, exact)[:2] + (None,)}
    for name, objective in objectives.items():
        trainer = Trainer(objective, optax.adam(0.05), program)
        state, _ = trainer.fit(trainer.init(args.seed), args.tabular_steps, progress=False)
        log_z = float(state.params["log_z"]) if "log_z" in state.params else None
        rows[name] = vi.exact_kl(guide, state.params["guide"], program, exact)[:2] + (log_z,)
    print(f"\n# tabular: exact KLs after {args.tabular_steps} Adam(0.05) steps; exact log Z = {exact['log_z']:.4f}")
    print("| q | KL(pi||q) | KL(q||pi) | learned log Z |\n|---|---|---|---|")
    for name, (pq, qp, lz) in rows.items():
        print(f"| {name} | {pq:.4f} | {qp:.4f} | {'' if lz is None else f'{lz:.4f}'} |")
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--prompt", default="S:")
    p.add_argument("--constraint", choices=["no-e", "keyword"], default="no-e")
    p.add_argument("--keyword", default="cat")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--guide", choices=["lora", "twist", "both"], default="both")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16, help="samples per training step")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--n", type=int, default=16, help="particles at evaluation")
    p.add_argument("--runs", type=int, default=32, help="independent SMC runs at evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--upper", action="store_true", help="also the conditional-SMC upper bound and the "
                   "bidirectional KL estimate (smc.log_z_bounds)")
    p.add_argument("--part", choices=["bundled", "tabular"], default="bundled",
                   help="tabular: every objective on a random tabular LM, exact KLs by enumeration")
    p.add_argument("--tabular-steps", type=int, default=200)
    args = p.parse_args(argv)
    if args.part == "tabular":
        return tabular_part(args)

    lm, program = build(args)
    print(f"# variational benchmark: {args.constraint}, {args.max_new_tokens} tokens, N={args.n}, "
          f"{args.runs} runs; {platform.machine()}, jax {jax.__version__}, {jax.devices()[0].platform}")
    rows = {"baseline (locally optimal q)": dict(evaluate(program, args.n, args.runs, 100, upper=args.upper),
                                                 train_s=0.0)}
    names = ["lora", "twist"] if args.guide == "both" else [args.guide]
    for name in names:
        guide, params, seconds, history = train(name, lm, program, args, rows["baseline (locally optimal q)"]["log_z"])
        label = {"lora": f"LoRA proposal (rank {args.rank}, TB)", "twist": "twist head (CTL)"}[name]
        rows[label] = dict(evaluate(guide.program(params, program), args.n, args.runs, 100, guide.proposal_fn,
                                    upper=args.upper),
                           train_s=seconds,
                           first_loss=history[0]["loss"], last_loss=history[-1]["loss"])
    print("\n| guide | train steps | train time (s) | IS ESS / N | SMC mean log Z_hat | SMC Var(log Z_hat) "
          "| dead SMC runs |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        steps = 0 if r["train_s"] == 0 else args.steps
        print(f"| {label} | {steps} | {r['train_s']:.1f} | {r['ess']:.3f} | {r['log_z']:.3f} | "
              f"{r['log_z_var']:.4f} | {r['dead_runs']}/{args.runs} |")
    if args.upper:
        print("\n| guide | SMC lower E[log Z_hat] | CSMC upper E[log Z_hat] | bidirectional KL (upper - lower) |")
        print("|---|---|---|---|")
        for label, r in rows.items():
            print(f"| {label} | {r['lower']:.3f} ± {r['lower_se']:.3f} | {r['upper']:.3f} ± {r['upper_se']:.3f} | "
                  f"{r['gap']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
