"""An arithmetic answer forced into the worked-solution format by a regular expression.

    python examples/regex_answer.py                           # bundled model, first held-out problem
    python examples/regex_answer.py --problem 3 --n 32
    python examples/regex_answer.py --model DIR --n 4 --max-new-tokens 24

The corpus writes answers as ``12 + 7 = 19. 19 - 5 = 14. The answer is 14.``; :data:`PATTERN`
admits exactly that shape (one to four equations of small numbers, then the answer). Target:
p(x | question) * 1[re.fullmatch(PATTERN, x)]. ``ppl.Regex`` compiles the pattern into a
token-level automaton, so every particle follows the format token by token (EOS is allowed
only where the text is complete), and the weighted vote over the particles gives the answer.
"""

from __future__ import annotations

import argparse
import re


import jax

from genppl import models, ppl
from genppl.inference import smc
from genppl.tasks import arithmetic

#: " a op b = c." one to four times, then " The answer is N." (numbers of at most 3 digits)
PATTERN = r"( \d{1,3} [-+*] \d{1,3} = \d{1,3}\.){1,4} The answer is \d{1,3}\."


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--problem", type=int, default=0, help="index of the held-out problem")
    p.add_argument("--pattern", default=PATTERN)
    p.add_argument("--n", type=int, default=16, help="particles")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    problem = arithmetic.eval_problems(args.problem + 1)[args.problem]
    prompt = [lm.eos_id] + lm.tokenizer.encode(arithmetic.prompt_text(problem))  # BOS (= EOS)
    print(arithmetic.prompt_text(problem))

    program = ppl.Program(lm, prompt, args.max_new_tokens, potential=ppl.Regex(args.pattern, lm))
    result = smc.run(program, args.n, jax.random.key(args.seed))
    print(result.summary(), "\n")

    live = [(t, w) for t, w in zip(result.texts, result.weights) if w > 0]
    answer = result.best_answer(arithmetic.extract_answer)  # weighted vote
    votes = list(result.vote(arithmetic.extract_answer).items())[:5]
    print(f"weighted vote: {answer} (correct: {problem.answer}); top shares "
          + ", ".join(f"{a}: {v:.2f}" for a, v in votes))
    print(f"log Z = {result.log_z:.3f} (log P(the model's answer fits the pattern))")

    # check: every particle that carries weight matches the pattern in full (Python's re)
    ok = all(re.fullmatch(args.pattern, t) for t, _ in live)
    print(f"check ({len(live)} live particles re.fullmatch the pattern): {'ok' if ok else 'FAILED'}")
    if not live:
        print("no particle completed the format within --max-new-tokens: allow more tokens")
    return {"texts": result.texts, "live": [t for t, _ in live], "answer": answer,
            "correct": answer == problem.answer, "log_z": result.log_z, "check": ok, "result": result}


if __name__ == "__main__":
    main()
