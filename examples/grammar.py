"""An arithmetic answer written as an expression of a context-free grammar.

    python examples/grammar.py                                # bundled model, first held-out problem
    python examples/grammar.py --problem 3 --n 32 --depth 3

Target: p(x | question) * 1[x in L(GRAMMAR)], the grammar being a small arithmetic-expression
language: equations ``expression = N.`` (up to three terms, each a product of up to two
factors, a factor a number or a parenthesised expression nested up to ``--depth`` levels),
then ``The answer is N.``. ``ppl.Grammar`` parses the Lark grammar, lowers it (nesting
bounded by ``--depth``) to a token-level automaton and runs it inside the compiled SMC sweep. The
example then evaluates every equation and reports the weighted share of particles whose
equations all hold, and the weighted vote over the stated answers.
"""

from __future__ import annotations

import argparse
import re

import jax
import lark

from genppl import models, ppl
from genppl.inference import smc
from genppl.tasks import arithmetic

GRAMMAR = r"""
start: (" " equation)~1..STEPS " The answer is " NUMBER "."
equation: sum " = " NUMBER "."
?sum: product ((" + " | " - ") product)~0..2
?product: atom (" * " atom)~0..1
?atom: NUMBER | "(" sum ")"
NUMBER: /[0-9]{1,3}/
"""


def equations_hold(text: str, parser):
    """Whether every equation of a generated text holds (Python's arithmetic on the expression
    text, digits and + - * ( ) only), or None when lark's parser rejects the text."""
    try:
        parser.parse(text)
    except lark.exceptions.LarkError:
        return None
    pairs = re.findall(r" ([0-9 +*()-]+?) = ([0-9]+)\.", text.split(" The answer is ")[0])
    return all(eval(e, {"__builtins__": {}}) == int(n) for e, n in pairs)


def answer_of(text: str):
    found = re.search(r"The answer is ([0-9]+)\.$", text)
    return int(found.group(1)) if found else None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--problem", type=int, default=0, help="index of the held-out problem")
    p.add_argument("--n", type=int, default=16, help="particles")
    p.add_argument("--depth", type=int, default=2, help="parentheses nest at most this deep")
    p.add_argument("--steps", type=int, default=4, help="at most this many equations before the answer")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    problem = arithmetic.eval_problems(args.problem + 1)[args.problem]
    text = arithmetic.prompt_text(problem)
    prompt = [lm.eos_id] + lm.tokenizer.encode(text)  # BOS (= EOS for the bundled model)
    print(text)

    text_of_grammar = GRAMMAR.replace("STEPS", str(args.steps))
    grammar = ppl.Grammar(text_of_grammar, lm, max_depth=args.depth)
    print(f"{grammar!r}: token tables {tuple(grammar.table.shape)}")
    program = ppl.Program(lm, prompt, args.max_new_tokens, potential=grammar)
    result = smc.run(program, args.n, jax.random.key(args.seed))
    print(result.summary(), "\n")

    parser = lark.Lark(text_of_grammar, start="start", parser="earley", lexer="dynamic")
    live = [(t, w) for t, w in zip(result.texts, result.weights) if w > 0]
    holds = [equations_hold(t, parser) for t, _ in live]
    ok = all(h is not None for h in holds)  # every live particle parses (lark as the oracle)
    right = sum(w for (_, w), h in zip(live, holds) if h)
    answer = result.best_answer(answer_of)  # weighted vote
    print(f"weighted share whose equations all hold: {right:.2f}")
    print(f"weighted vote over the stated answers: {answer} (correct: {problem.answer})")
    print(f"check ({len(live)} live particles parse under the grammar): {'ok' if ok else 'FAILED'}")
    if not live:
        print("no particle completed an expression within --max-new-tokens: allow more tokens")
    return {"texts": result.texts, "live": [t for t, _ in live], "answer": answer, "right_share": right,
            "log_z": result.log_z, "check": ok, "result": result}


if __name__ == "__main__":
    main()
