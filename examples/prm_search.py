"""Search with a process reward model: the step-level particle filter against majority vote
and best-of-N at the same number of samples (Puri et al., in miniature).

    python examples/prm_search.py                                  # arithmetic, the step verifier as reward
    python examples/prm_search.py --task chains --model reasoner --prm prm   # the trained PRM
    python examples/prm_search.py --n 16 --problems 8

For each problem, N generations per method:

* majority vote over N samples from the LM;
* best-of-N: the sample whose finished solution the reward scores highest
  (``search.best_of_n`` on a program whose potential is the final reward r(x): with the LM
  as proposal its importance weight is log r(x));
* the step-level particle filter (``smc.reward_particle_filter``): target
  p(x) prod_k r(x_<=k), resampled at every step, answered by the weighted vote.

The reward is ``--prm``: ``verifier`` (``tasks.arithmetic.step_reward``: 0.1 per wrong worked
equation; it cannot see misreadings of the question), ``prm`` (the bundled trained process
reward model, which reads the question) or a PRM checkpoint directory. The full comparison,
with confidence intervals and N from 1 to 64, is ``benchmarks/compare_prm.py``.
"""

from __future__ import annotations

import argparse
import collections

import jax
import numpy as np

from genppl import models, ppl
from genppl.cli.methods import encode_prompt, load_reward, step_delimiter
from genppl.inference import search, smc
from genppl.tasks import arithmetic, chains, multistep

TASKS = {"arithmetic": arithmetic, "chains": chains, "multistep": multistep}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory or 'reasoner' (default: bundled)")
    p.add_argument("--task", choices=list(TASKS), default="arithmetic")
    p.add_argument("--prm", default="verifier", help="verifier, prm (bundled PRM) or a PRM directory")
    p.add_argument("--problems", type=int, default=4)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's MAX_NEW_TOKENS")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.max_new_tokens = args.max_new_tokens or TASKS[args.task].MAX_NEW_TOKENS

    lm = models.load(args.model)
    reward = load_reward(args.prm)
    final = ppl.PRMFinalReward(reward, lm.tokenizer) if isinstance(reward, models.ProcessRewardModel) else \
        ppl.FinalReward(reward, lm.tokenizer)
    delimiter = step_delimiter(lm, arithmetic.STEP_DELIMITER)
    problems = arithmetic.eval_problems(args.problems) if args.task == "arithmetic" else \
        TASKS[args.task].problems("eval", args.problems)
    right = collections.defaultdict(list)
    for i, problem in enumerate(problems):
        ids = encode_prompt(lm, arithmetic.prompt_text(problem))
        k1, k2, k3 = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), i), 3)
        samples = models.sample(lm, ids, args.n, args.max_new_tokens, k1)
        right["majority vote"].append(arithmetic.majority_vote(samples.texts) == problem.answer)
        best = search.best_of_n(ppl.Program(lm, ids, args.max_new_tokens, potential=final), args.n, k2)
        right["best-of-N (reward)"].append(best.selected is not None and
                                           arithmetic.extract_answer(best.selected_text) == problem.answer)
        pf = smc.reward_particle_filter(lm, ids, reward, args.n, k3, max_new_tokens=args.max_new_tokens,
                                       step_delimiter=delimiter)
        right["particle filter (reward)"].append(pf.best_answer(arithmetic.extract_answer) == problem.answer)
        print(f"problem {i}: answer {problem.answer}; PF says {pf.best_answer(arithmetic.extract_answer)}, "
              f"best of {args.n} says {arithmetic.extract_answer(best.selected_text or '')}", flush=True)
    accuracy = {name: float(np.mean(v)) for name, v in right.items()}
    print(f"\n{args.problems} {args.task} problems, N = {args.n}, reward: {args.prm}")
    for name, acc in accuracy.items():
        print(f"  {name:28s} accuracy {acc:.2f}")
    ok = len(accuracy) == 3 and all(0.0 <= a <= 1.0 for a in accuracy.values())
    print(f"check (every method answered every problem): {'ok' if ok else 'FAILED'}")
    return {"accuracy": accuracy, "check": ok, "problems": len(problems)}


if __name__ == "__main__":
    main()
