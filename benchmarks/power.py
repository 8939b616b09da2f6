"""Power sampling of p(x)^alpha on the bundled arithmetic task: accuracy, cost and speed.

    python benchmarks/power.py                                   # 16 problems, n=4, alpha=4
    python benchmarks/power.py --problems 64 --n 8 --num-mcmc 4 --block-size 24
    python benchmarks/power.py --base-temperature 1              # the checkpoint itself as p
    python benchmarks/power.py --skip-accuracy                   # only the timings
    python benchmarks/power.py --skip-reference                  # no torch

Three parts, all on the same checkpoint, in one process, in the same run:

1. Accuracy on ``--problems`` held-out arithmetic problems (prompt ``[BOS] + prompt_text``,
   as the CLI), ``--n`` samples each. The bundled model at temperature 1 solves them almost
   always, so by default the base model p is the checkpoint at ``--base-temperature 1.5``
   (a weaker model; every method then targets powers of that p). Methods: plain sampling (temperature 1), temperature 1/alpha,
   blockwise MH power sampling (``inference.mcmc.power_mcmc``), Power-SMC (``inference.power.power_smc``;
   accuracy weighted by the particles' normalised weights) and rollout power sampling
   (``inference.power.power_rollout``), with the tokens each method samples per returned sample
   (every proposal, extension and rollout counted; for SMC one token per particle per step)
   and the median wall time per problem (each method compiles once per prompt-length bucket:
   those calls are in the total, the median mostly excludes them).
2. Wall time per MH step. Ours: the compiled kernel (``inference.mcmc.build_kernel()`` in a
   ``fori_loop``) on chains that were first extended to ``--max-new-tokens`` (or EOS), one
   chain and ``--n`` chains. Reference: the published approach with transformers' PyTorch
   model: one chain, each proposal a ``generate`` from the full prefix recomputed
   (``do_sample``, temperature 1/alpha, ``top_k=0``), then a forward pass over the current and
   the proposed sequence to get log p and log q of both suffixes. The sides are timed in
   ``--repeats`` interleaved rounds (ours with one chain: one call of ``--mh-steps`` steps; ours
   with ``--n`` chains: the same; the reference: ``--ref-steps`` steps, median per step), and
   the speed-ups are printed from the medians and as the median of the per-round ratios; torch
   runs on ``--torch-threads`` threads (default 1: faster than 2 on the shared machine).
3. Power-SMC against plain decoding: median wall time of ``--repeats`` calls on one prompt,
   same n, same max_new_tokens, after a warm-up call.

The machine may be shared with other jobs: timings are noisy, compare ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


import jax
import jax.numpy as jnp
import numpy as np

from genppl import models
from genppl.cli.methods import encode_prompt
from genppl.inference import mcmc, power, smc
from genppl.tasks import arithmetic


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--base-temperature", type=float, default=1.5,
                   help="accuracy part: the base model p is the checkpoint at this temperature (the "
                        "bundled model at temperature 1 solves these problems almost always)")
    p.add_argument("--n", type=int, default=4, help="samples / chains / particles per problem")
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--block-size", type=int, default=32, help="power-mh: B")
    p.add_argument("--num-mcmc", type=int, default=2, help="power-mh: MH steps per block")
    p.add_argument("--smc-n", type=int, default=None, help="Power-SMC particles (default: --n)")
    p.add_argument("--rollouts", type=int, default=2, help="rollout power sampling: M")
    p.add_argument("--rollout-top-k", type=int, default=2, help="rollout power sampling: K")
    p.add_argument("--horizon", type=int, default=8, help="rollout power sampling: rollout length")
    p.add_argument("--mh-steps", type=int, default=16, help="timed MH steps (ours, per call)")
    p.add_argument("--ref-steps", type=int, default=16, help="timed MH steps (reference)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="reference: torch threads (1 was the fastest on the shared 2-core machine)")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    return p.parse_args(argv)


# ---- 1. accuracy -------------------------------------------------------------------------
def methods(args):
    a = args.alpha
    smc_n = args.smc_n or args.n
    return {
        "plain sampling (T=1)": lambda lm, ids, key: models.sample(lm, ids, args.n, args.max_new_tokens, key),
        f"temperature 1/alpha on p (T={1 / a:g})": lambda lm, ids, key: models.sample(
            lm, ids, args.n, args.max_new_tokens, key, temperature=1.0 / a),
        f"MH power sampling (B={args.block_size}, N_MCMC={args.num_mcmc})": lambda lm, ids, key: mcmc.power_mcmc(
            lm, ids, args.n, args.max_new_tokens, key, alpha=a, block_size=args.block_size, num_mcmc=args.num_mcmc),
        f"Power-SMC (N={smc_n})": lambda lm, ids, key: power.power_smc(
            lm, ids, smc_n, args.max_new_tokens, key, alpha=a),
        f"rollout power sampling (K={args.rollout_top_k}, M={args.rollouts}, H={args.horizon})":
            lambda lm, ids, key: power.power_rollout(
                lm, ids, args.n, args.max_new_tokens, key, alpha=a, top_k=args.rollout_top_k,
                rollouts=args.rollouts, horizon=args.horizon),
    }


def cost(out) -> float:
    """Tokens sampled per returned sample."""
    if isinstance(out, smc.SMCResult):
        return float(len(out.ess))  # every live particle samples one token per step
    if hasattr(out, "tokens_generated") and out.tokens_generated is not None:
        return float(np.mean(out.tokens_generated))
    return float(np.mean(out.num_tokens))


def accuracy(out, problem) -> float:
    correct = np.array([arithmetic.extract_answer(t) == problem.answer for t in out.texts], float)
    if isinstance(out, smc.SMCResult):
        return float(np.dot(out.weights, correct))
    return float(correct.mean())


@jax.tree_util.register_pytree_node_class
class TemperedLM(models.LanguageModel):
    """The checkpoint at temperature tau: a weaker base model p_tau = softmax(logits / tau)."""

    def __init__(self, base, tau: float):
        self.base, self.tau = base, float(tau)
        self.vocab_size, self.eos_id = base.vocab_size, base.eos_id
        self.tokenizer, self.max_length = base.tokenizer, base.max_length

    def tree_flatten(self):
        return (self.base,), (self.tau,)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    def _initial(self, prompt, prompt_length, capacity):
        logits, cache = self.base._initial(prompt, prompt_length, capacity)
        return logits / self.tau, cache

    def _forward(self, cache, tokens, positions, mask):
        logits, cache = self.base._forward(cache, tokens, positions, mask)
        return logits / self.tau, cache


def run_accuracy(lm, args):
    if args.base_temperature != 1.0:
        lm = TemperedLM(lm, args.base_temperature)
    problems = arithmetic.eval_problems(args.problems)
    prompts = [encode_prompt(lm, arithmetic.prompt_text(pb)) for pb in problems]
    rows = []
    for name, method in methods(args).items():
        acc, tokens, times = [], [], []
        key = jax.random.key(args.seed)
        extra = []
        for problem, ids in zip(problems, prompts):
            key, sub = jax.random.split(key)
            start = time.perf_counter()
            out = method(lm, ids, sub)
            times.append(time.perf_counter() - start)
            acc.append(accuracy(out, problem))
            tokens.append(cost(out))
            if getattr(out, "acceptance", None) is not None and len(out.acceptance):
                extra.append(float(np.mean(out.acceptance)))
        row = {"method": name, "accuracy": float(np.mean(acc)),
               "se": float(np.std(acc, ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else float("nan"),
               "tokens": float(np.mean(tokens)), "median_s": statistics.median(times), "total_s": sum(times),
               "acceptance": float(np.mean(extra)) if extra else None}
        rows.append(row)
        print(f"  {name}: accuracy {row['accuracy']:.3f}, tokens/sample {row['tokens']:.1f}, "
              f"{row['median_s']:.2f} s/problem", flush=True)
    return rows


# ---- 2. time per MH step -----------------------------------------------------------------
def ours_mh_rounds(lm, ids, n, args):
    """A function timing one round of ``--mh-steps`` MH steps of ``n`` chains (compiled first):
    returns (seconds per step, tokens regenerated per step per chain)."""
    kernel = mcmc.build_kernel()  # suffix move, proposal at temperature 1/alpha
    cap, alpha = args.max_new_tokens, jnp.float32(args.alpha)

    @jax.jit
    def steps(lm, state, key):
        def body(i, carry):
            state, regenerated = carry
            state, info = kernel(jax.random.fold_in(key, i), state, lm, alpha, cap)
            return state, regenerated + info.proposed_tokens.sum()
        return jax.lax.fori_loop(0, args.mh_steps, body, (state, jnp.int32(0)))

    state, rounds = kernel.init(jax.random.key(1), lm, ids, n, cap, alpha), 0
    jax.block_until_ready(steps(lm, state, jax.random.key(2)))  # compile + warm up

    def one_round():
        nonlocal state, rounds
        start = time.perf_counter()
        state, count = jax.block_until_ready(steps(lm, state, jax.random.key(10 + rounds)))
        rounds += 1
        return (time.perf_counter() - start) / args.mh_steps, int(count) / (args.mh_steps * n)

    return one_round


def reference_mh_rounds(path, ids, args):
    """The reference, one chain; each proposal a transformers ``generate`` from the recomputed
    prefix. Returns a function timing one round of ``--ref-steps`` steps (the first step of the
    first round warms up, untimed): (median seconds per step, tokens regenerated per step)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.torch_threads)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    prompt = torch.tensor([ids])
    p_len, cap, alpha = prompt.shape[1], args.max_new_tokens, args.alpha
    gen = dict(do_sample=True, temperature=1.0 / alpha, top_k=0, top_p=1.0, eos_token_id=eos,
               pad_token_id=eos)

    def suffix_logs(seq, m):
        with torch.no_grad():
            logits = model(seq).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1)
        logq = torch.log_softmax(alpha * logits, -1)
        target = seq[0, 1:]
        rows = torch.arange(p_len - 1 + m, seq.shape[1] - 1)
        return float(logp[rows, target[rows]].sum()), float(logq[rows, target[rows]].sum())

    with torch.no_grad():
        x = model.generate(prompt, max_new_tokens=cap, **gen)
    steps_done = 0

    def step():
        nonlocal x, steps_done
        n_cur = x.shape[1] - p_len
        m = int(torch.randint(n_cur, ()))
        with torch.no_grad():
            y = model.generate(x[:, :p_len + m], max_new_tokens=cap - m, **gen)
        n_new = y.shape[1] - p_len
        lp_new, lq_new = suffix_logs(y, m)
        lp_old, lq_old = suffix_logs(x, m)
        log_r = float(mcmc.log_acceptance(alpha, lp_new, lp_old, lq_new, lq_old, -np.log(n_new), -np.log(n_cur),
                                          xp=np))
        if np.log(np.random.default_rng(steps_done).uniform()) < log_r:
            x = y
        steps_done += 1
        return n_new - m

    step()  # warms up

    def one_round():
        times, regenerated = [], 0
        for _ in range(args.ref_steps):
            start = time.perf_counter()
            regenerated += step()
            times.append(time.perf_counter() - start)
        return statistics.median(times), regenerated / args.ref_steps

    return one_round


def time_mh(lm, ids, path, args):
    """Interleaved rounds (ours with 1 chain, ours with ``--n`` chains, the reference), each
    round timing every side once. Returns {side: (median s per step, tokens per step per chain)}
    and the per-round speed-ups (reference / ours, per chain) as lists."""
    sides = {"ours 1": ours_mh_rounds(lm, ids, 1, args), "ours n": ours_mh_rounds(lm, ids, args.n, args)}
    if not args.skip_reference:
        sides["reference"] = reference_mh_rounds(path, ids, args)
    rounds = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, run in sides.items():
            rounds[name].append(run())
    summary = {name: (statistics.median(r[0] for r in rs), statistics.mean(r[1] for r in rs))
               for name, rs in rounds.items()}
    speedups = {}
    if "reference" in rounds:
        ref = [r[0] for r in rounds["reference"]]
        speedups["1"] = [a / b[0] for a, b in zip(ref, rounds["ours 1"])]
        speedups["n"] = [a / (b[0] / args.n) for a, b in zip(ref, rounds["ours n"])]
    return summary, speedups


# ---- 3. Power-SMC against plain decoding -------------------------------------------------
def median_time(run, repeats):
    run(0)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        run(r + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    lm = models.load(args.model)
    path = models.bundled_path() if args.model is None else args.model
    print(f"# power sampling benchmark: {lm!r}, alpha={args.alpha:g}, n={args.n}, "
          f"max_new_tokens={args.max_new_tokens}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.default_backend()}", flush=True)
    problem = arithmetic.eval_problems(1)[0]
    ids = encode_prompt(lm, arithmetic.prompt_text(problem))

    rows = [] if args.skip_accuracy else run_accuracy(lm, args)

    summary, speedups = time_mh(lm, ids, path, args)
    ours_1, regen_1 = summary["ours 1"]
    ours_n, regen_n = summary["ours n"]
    ref = summary.get("reference")

    smc_n = args.smc_n or args.n
    plain_s = median_time(lambda s: models.sample(lm, ids, smc_n, args.max_new_tokens, jax.random.key(s)),
                          args.repeats)
    smc_s = median_time(lambda s: power.power_smc(lm, ids, smc_n, args.max_new_tokens, s, alpha=args.alpha),
                        args.repeats)

    print()
    if rows:
        print(f"Accuracy on {args.problems} arithmetic problems, {args.n} samples each; base model p = the "
              f"checkpoint at temperature {args.base_temperature:g}; alpha={args.alpha:g}, "
              f"max_new_tokens={args.max_new_tokens}:\n")
        print("| method | accuracy (± se over problems) | tokens sampled / sample | MH acceptance | median s / problem |")
        print("|---|---|---|---|---|")
        for r in rows:
            acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}"
            print(f"| {r['method']} | {r['accuracy']:.3f} ± {r['se']:.3f} | {r['tokens']:.1f} | {acc} | "
                  f"{r['median_s']:.2f} |")
        print()
    print("Wall time per MH step (one prompt, suffix regenerated up to max_new_tokens):\n")
    print("| sampler | chains | s / step | s / step / chain | tokens regenerated / step / chain |")
    print("|---|---|---|---|---|")
    print(f"| ours (compiled kernel, prefix cache) | 1 | {ours_1:.4f} | {ours_1:.4f} | {regen_1:.1f} |")
    print(f"| ours (compiled kernel, prefix cache) | {args.n} | {ours_n:.4f} | {ours_n / args.n:.4f} | "
          f"{regen_n:.1f} |")
    if ref is not None:
        print(f"| reference (transformers generate per proposal, prefix recomputed) | 1 | {ref[0]:.4f} | "
              f"{ref[0]:.4f} | {ref[1]:.1f} |")
        print(f"\nSpeed-up per MH step: {ref[0] / ours_1:.1f}x with one chain, "
              f"{ref[0] / (ours_n / args.n):.1f}x per chain with {args.n} chains batched (goal >= 10x); "
              f"median of the per-round speed-ups {statistics.median(speedups['1']):.1f}x and "
              f"{statistics.median(speedups['n']):.1f}x (rounds: "
              f"{', '.join(f'{x:.1f}' for x in speedups['1'])} and {', '.join(f'{x:.1f}' for x in speedups['n'])}).")
    print(f"\nPower-SMC ({smc_n} particles) {smc_s:.3f} s vs plain decoding ({smc_n} samples) {plain_s:.3f} s: "
          f"{smc_s / plain_s:.2f}x (goal <= 3x).")


if __name__ == "__main__":
    main()
