"""An arithmetic answer extracted as JSON that validates against a schema.

    python examples/json_extraction.py                        # bundled model, first held-out problem
    python examples/json_extraction.py --problem 3 --n 32
    python examples/json_extraction.py --model DIR --n 4 --max-new-tokens 48

Target: p(x | question) * 1[x is a JSON document valid under :data:`SCHEMA`], written in
``ppl.JSONSchema``'s serialisation policy (an optional space after ``,`` and ``:``,
properties in the schema's order). The schema asks for
``{"steps": ["18 - 3 = 15", ...], "answer": 19}``: one to three equations of small numbers,
then the integer answer (0 to 999). ``ppl.JSONSchema`` lowers the schema to a token-level automaton, so
every particle stays a valid prefix token by token and EOS comes only after a complete
document; the weighted vote over the particles' "answer" fields gives the answer.
"""

from __future__ import annotations

import argparse
import json
import re

import jax

from genppl import models, ppl
from genppl.inference import smc
from genppl.tasks import arithmetic

EQUATION = r"^\d{1,3} [-+*] \d{1,3} = \d{1,3}$"
SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {"type": "array", "items": {"type": "string", "pattern": EQUATION}, "minItems": 1, "maxItems": 3},
        "answer": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["steps", "answer"],
    "additionalProperties": False,
}


def schema_with(max_items: int) -> dict:
    """:data:`SCHEMA` with at most ``max_items`` steps."""
    steps = dict(SCHEMA["properties"]["steps"], maxItems=max_items)
    return dict(SCHEMA, properties=dict(SCHEMA["properties"], steps=steps))


def valid(text: str, max_items: int = 3) -> bool:
    """The example's own check, independent of the automaton: json parses it, the keys and
    types are the schema's, and every step matches the equation pattern (Python's re)."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    steps = value.get("steps") if isinstance(value, dict) else None
    return (isinstance(value, dict) and list(value) == ["steps", "answer"] and isinstance(steps, list)
            and 1 <= len(steps) <= max_items and all(isinstance(s, str) and re.search(EQUATION, s) for s in steps)
            and isinstance(value["answer"], int) and not isinstance(value["answer"], bool)
            and 0 <= value["answer"] <= 999)


def answer_of(text: str):
    try:
        return json.loads(text)["answer"]
    except (ValueError, KeyError, TypeError):
        return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: bundled)")
    p.add_argument("--problem", type=int, default=0, help="index of the held-out problem")
    p.add_argument("--n", type=int, default=16, help="particles")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-items", type=int, default=3, help="at most this many steps")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lm = models.load(args.model)
    problem = arithmetic.eval_problems(args.problem + 1)[args.problem]
    text = arithmetic.prompt_text(problem)
    prompt = [lm.eos_id] + lm.tokenizer.encode(text)  # BOS (= EOS for the bundled model)
    print(text)

    schema = ppl.JSONSchema(schema_with(args.max_items), lm)
    print(f"{schema!r}: token tables {tuple(schema.table.shape)}")
    program = ppl.Program(lm, prompt, args.max_new_tokens, potential=schema)
    result = smc.run(program, args.n, jax.random.key(args.seed))
    print(result.summary(), "\n")

    live = [t for t, w in zip(result.texts, result.weights) if w > 0]
    answer = result.best_answer(answer_of)  # weighted vote over the "answer" fields
    print(f"weighted vote: {answer} (correct: {problem.answer})")
    print(f"log Z = {result.log_z:.3f} (log P(the model writes a valid document within the budget))")
    ok = all(valid(t, args.max_items) for t in live)
    print(f"check ({len(live)} live particles are valid JSON for the schema): {'ok' if ok else 'FAILED'}")
    if not live:
        print("no particle completed a document within --max-new-tokens: allow more tokens")
    return {"texts": result.texts, "live": live, "answer": answer, "correct": answer == problem.answer,
            "log_z": result.log_z, "check": ok, "result": result}


if __name__ == "__main__":
    main()
