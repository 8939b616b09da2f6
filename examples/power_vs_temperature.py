"""Sharpening the whole sequence against sharpening each token: p(x)^alpha (MH power sampling,
Power-SMC) against temperature 1/alpha, on word problems (Karan & Du; Power-SMC).

    python examples/power_vs_temperature.py                        # alpha 4, 4 problems, n = 4
    python examples/power_vs_temperature.py --task chains --model reasoner --alpha 2

Temperature 1/alpha samples each token from p_t(v)^alpha / sum_v' p_t(v')^alpha: it sharpens
every step locally and ignores how the rest of the sequence will go. p(x)^alpha, the product
of p_t^alpha normalised over whole sequences, favours tokens after which the model is
confident: ``mcmc.power_mcmc`` (blockwise Metropolis-Hastings with temperature-1/alpha
proposals) and ``power.power_smc`` (particles weighted by the ratio of the two) sample it.
Printed per method: accuracy, the mean log p(x) of the answers (likelihood), the number of
distinct final answers (diversity) and the tokens sampled per answer (cost). The full
comparison, with rollout power sampling and intervals, is ``benchmarks/compare_power.py``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from genppl import models
from genppl.cli.methods import encode_prompt
from genppl.inference import mcmc, power
from genppl.tasks import arithmetic, chains, multistep

TASKS = {"arithmetic": arithmetic, "chains": chains, "multistep": multistep}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory or 'reasoner' (default: bundled)")
    p.add_argument("--task", choices=list(TASKS), default="arithmetic")
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--problems", type=int, default=4)
    p.add_argument("--n", type=int, default=4, help="answers per problem")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's MAX_NEW_TOKENS")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.max_new_tokens = args.max_new_tokens or TASKS[args.task].MAX_NEW_TOKENS

    lm = models.load(args.model)
    a, n, T = args.alpha, args.n, args.max_new_tokens
    methods = {
        "base (temperature 1)": lambda ids, k: models.sample(lm, ids, n, T, k),
        f"temperature 1/{a:g}": lambda ids, k: models.sample(lm, ids, n, T, k, temperature=1.0 / a),
        "MH power sampling": lambda ids, k: mcmc.power_mcmc(lm, ids, n, T, k, alpha=a, block_size=16, num_mcmc=2),
        "Power-SMC": lambda ids, k: power.power_smc(lm, ids, n, T, k, alpha=a),
    }
    problems = arithmetic.eval_problems(args.problems) if args.task == "arithmetic" else \
        TASKS[args.task].problems("eval", args.problems)
    rows = {}
    for name, run in methods.items():
        acc, logp, distinct, tokens = [], [], [], []
        for i, problem in enumerate(problems):
            out = run(encode_prompt(lm, arithmetic.prompt_text(problem)), jax.random.fold_in(jax.random.key(args.seed), i))
            answers = [arithmetic.extract_answer(t) for t in out.texts]
            right = np.array([x == problem.answer for x in answers], float)
            if hasattr(out, "weights"):  # weighted particles
                acc.append(float(out.weights @ right))
                logp.append(float(out.weights @ np.where(out.weights > 0, out.log_p, 0.0)))
                tokens.append(len(out.ess))
            else:
                acc.append(right.mean())
                logp.append(float(np.mean(out.log_probs)))
                tokens.append(float(np.mean(out.tokens_generated if getattr(out, "tokens_generated", None) is not None
                                            else out.num_tokens)))
            distinct.append(len(set(answers)))
        rows[name] = {"accuracy": float(np.mean(acc)), "log_p": float(np.mean(logp)),
                      "distinct": float(np.mean(distinct)), "tokens": float(np.mean(tokens))}
        r = rows[name]
        print(f"{name:22s} accuracy {r['accuracy']:.2f}  mean log p {r['log_p']:7.2f}  distinct answers "
              f"{r['distinct']:.2f} of {n}  tokens/answer {r['tokens']:6.1f}", flush=True)
    ok = all(np.isfinite(r["log_p"]) for r in rows.values())
    print(f"check (every method returned answers with finite log p): {'ok' if ok else 'FAILED'}")
    return {"rows": rows, "check": ok}


if __name__ == "__main__":
    main()
