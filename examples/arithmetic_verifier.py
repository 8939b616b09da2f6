"""SMC with a step verifier against plain sampling on held-out arithmetic problems.

    python examples/arithmetic_verifier.py                    # bundled model, 8 four-step problems, N = 16
    python examples/arithmetic_verifier.py --ops 0 --problems 16   # the first 16, any length
    python examples/arithmetic_verifier.py --model DIR --problems 4 --n 8

The model writes worked answers such as ``12 + 7 = 19. 19 - 5 = 14. The answer is 14.``
The target is p(x | question) conditioned on "every written equation holds": a
:class:`ppl.StepVerifier` checks the partial solution at every step boundary (each ``"."``),
so a particle dies at its first wrong equation and SMC resamples the survivors. The answer is
the weighted vote of the particles; plain sampling answers by majority vote.
"""

from __future__ import annotations

import argparse
import collections


import jax

from genppl import models, ppl
from genppl.inference import smc
from genppl.tasks import arithmetic


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--ops", type=int, default=4, help="only problems with this many operations (2-4; 0: any)")
    p.add_argument("--n", type=int, default=16, help="particles / samples per problem")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    tok = lm.tokenizer
    # One verifier object for every problem: the compiled SMC sweep is reused across prompts.
    verifier = ppl.StepVerifier(arithmetic.equations_hold, tok)
    # Steps end with ". "; byte-level BPE glues the space to the next token, so the step
    # boundary is the token holding ".".
    delimiter = arithmetic.STEP_DELIMITER.strip()

    key = jax.random.key(args.seed)
    rows = []
    problems = arithmetic.eval_problems(200 if args.ops else args.problems)
    if args.ops:  # held-out problems whose worked answer has exactly `ops` equations
        problems = [pb for pb in problems if pb.solution.count("=") == args.ops][: args.problems]
    for problem in problems:
        prompt = [lm.eos_id] + tok.encode(arithmetic.prompt_text(problem))  # BOS = EOS here
        key, k_smc, k_sample = jax.random.split(key, 3)

        program = ppl.Program(lm, prompt, args.max_new_tokens, potential=verifier,
                              step_delimiter=delimiter)
        result = smc.run(program, args.n, k_smc)
        smc_answer = result.best_answer(arithmetic.extract_answer)  # weighted vote

        plain = models.sample(lm, prompt, args.n, args.max_new_tokens, k_sample)
        answers = [arithmetic.extract_answer(t) for t in plain.texts]
        votes = collections.Counter(a for a in answers if a is not None).most_common(1)
        rows.append({
            "answer": problem.answer,
            "smc_answer": smc_answer,
            "smc_correct": smc_answer == problem.answer,
            # posterior mass on the right answer, the weighted analogue of per-sample accuracy
            "smc_accuracy": sum(w for t, w in zip(result.texts, result.weights)
                                if arithmetic.is_correct(t, problem)),
            "smc_log_z": result.log_z,  # log P(every equation holds) under the model
            "sample_answer": votes[0][0] if votes else None,
            "sample_correct": bool(votes) and votes[0][0] == problem.answer,
            "sample_accuracy": sum(a == problem.answer for a in answers) / len(answers),
            "sample_steps_hold": sum(arithmetic.check_steps(t) for t in plain.texts) / len(answers),
            "smc_best": result.best(),
        })
        print(f"answer {problem.answer:>3} | SMC vote {smc_answer!s:>4}, mass on the answer "
              f"{rows[-1]['smc_accuracy']:.2f}, log Z {result.log_z:7.3f} | "
              f"sampling vote {rows[-1]['sample_answer']!s:>4}, per-sample accuracy "
              f"{rows[-1]['sample_accuracy']:.2f}")

    summary = {
        "problems": len(rows),
        "smc_weighted_vote_accuracy": sum(r["smc_correct"] for r in rows) / len(rows),
        "smc_accuracy": sum(r["smc_accuracy"] for r in rows) / len(rows),
        "sampling_majority_vote_accuracy": sum(r["sample_correct"] for r in rows) / len(rows),
        "sampling_accuracy": sum(r["sample_accuracy"] for r in rows) / len(rows),
        "sampling_all_steps_hold": sum(r["sample_steps_hold"] for r in rows) / len(rows),
        "rows": rows,
    }
    print(f"\nlast problem's particles:\n{result.summary()}\n")
    for name, value in summary.items():
        if name != "rows":
            print(f"{name:>32}: {value:.3f}" if isinstance(value, float) else f"{name:>32}: {value}")
    # check: every surviving SMC particle's equations hold (the verifier's promise)
    ok = all(arithmetic.equations_hold(t) for t, w in zip(result.texts, result.weights) if w > 0)
    print(f"{'check (live particles verified)':>32}: {'ok' if ok else 'FAILED'}")
    summary["check"] = ok
    return summary


if __name__ == "__main__":
    main()
