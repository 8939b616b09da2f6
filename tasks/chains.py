"""Longer word problems: 5-8 operations on one person's count, amounts up to 12, counts up to 99.

A document looks like::

    Q: Emma has 14 cards. She buys 12 more. Then she gives 9 to Tom. She doubles her cards.
    Later she loses 3. She finds 11 more. How many cards does Emma have now?
    A: 14 + 12 = 26. 26 - 9 = 17. 17 * 2 = 34. 34 - 3 = 31. 31 + 11 = 42. The answer is 42.

(the question and the answer are one line each). The format, the phrasings and the helpers
are those of :mod:`tasks.arithmetic` (its generator with longer chains and larger numbers), so
a model trained on the easy problems reads these as well; what makes them hard is length:
every one of 5-8 equations must take the right amount and the right operation from the
question (``gives 9 to Tom`` subtracts, ``Tom gives her 9`` adds) and compute it right, and
one slip anywhere loses the answer. A misread amount or sign with right arithmetic is a
wrong step that the arithmetic step verifier cannot see; a process reward model can.

Splits: :func:`problems` gives the ``"train"``, ``"dev"`` and ``"eval"`` streams. The first
:data:`HELD_OUT` questions of the eval stream, and of the dev stream, are excluded from every
training stream, and the dev stream excludes the eval questions, so no question is in two
splits. Tune on ``dev``; report on ``eval``.

This is the task of the second bundled model (``models.load("reasoner")``, trained by
``python scripts/train_default_model.py --reasoner``). :mod:`tasks.multistep` (two people,
sentence-by-sentence reading) is harder still: the bundled models do not learn it in the
training budgets of a 2-core CPU (see ``models/bundled-reasoner/README.md``).
"""

from __future__ import annotations

import dataclasses
import random

from . import arithmetic
# the answer check and gold step labels read only a problem's answer and solution: shared
from .multistep import accuracy, check, is_correct, on_track, reference_steps, steps_on_track
from .splits import SPLITS, Splits

__all__ = [
    "Problem", "generate_problem", "problems", "prompt_text", "document", "extract_answer", "is_correct",
    "check", "accuracy", "reference_steps", "steps_on_track", "on_track", "held_out_questions",
    "EVAL_SEED", "DEV_SEED", "HELD_OUT", "MAX_VALUE", "MAX_OPERAND", "OPERATIONS", "MAX_NEW_TOKENS",
    "STEP_DELIMITER", "SPLITS", "misread",
]

#: Seeds of the held-out streams; training streams use other seeds and exclude both sets.
EVAL_SEED = 3_000_017
DEV_SEED = 3_000_041
#: How many questions (from the start of the eval and the dev stream) are kept out of training.
HELD_OUT = 2000
#: Every count lies in [0, MAX_VALUE].
MAX_VALUE = 99
#: Largest added or subtracted amount.
MAX_OPERAND = 12
#: Default range (inclusive) of the number of operations (equations of the worked answer).
OPERATIONS = (5, 8)
#: Token budget that fits every worked answer with the bundled tokenizer (the longest, with
#: EOS, is 103 tokens in 5,000 training problems; the mean about 78).
MAX_NEW_TOKENS = 112
STEP_DELIMITER = arithmetic.STEP_DELIMITER


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: the question line, the integer answer, the worked solution (the answer
    line after ``"A:"``, with its leading space), and ``steps``, its number of equations."""

    question: str
    answer: int
    solution: str
    steps: int

    @property
    def text(self) -> str:
        """The whole training document (without BOS/EOS)."""
        return document(self)


def generate_problem(rng: random.Random | int, operations=OPERATIONS, max_operand: int = MAX_OPERAND) -> Problem:
    """Draw one problem. ``rng`` is a :class:`random.Random` (or a seed); ``operations`` an
    int or an inclusive range within [1, 12]; ``max_operand`` in [2, 30]."""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    if isinstance(operations, int) and not isinstance(operations, bool):
        operations = (operations, operations)
    if (not isinstance(operations, tuple) or len(operations) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in operations)
            or not 1 <= operations[0] <= operations[1] <= 12):
        raise ValueError(f"operations must be an integer or an inclusive range (lo, hi) within [1, 12], "
                         f"got {operations!r}")
    if isinstance(max_operand, bool) or not isinstance(max_operand, int) or not 2 <= max_operand <= 30:
        raise ValueError(f"max_operand must be an integer in [2, 30], got {max_operand!r}")
    p = arithmetic.generate_problem(rng, operations=operations, max_operand=max_operand, max_value=MAX_VALUE)
    return Problem(p.question, p.answer, p.solution, len(arithmetic.steps(p.solution)))


_SPLITS = Splits(generate_problem, "chains", EVAL_SEED, DEV_SEED, HELD_OUT)


def held_out_questions(split: str = "both") -> set[str]:
    """The questions no training stream may contain: the first :data:`HELD_OUT` of the
    ``"eval"`` stream, of the ``"dev"`` stream, or of ``"both"``."""
    return _SPLITS.held_out_questions(split)


def problems(split: str, n: int, seed: int = 0, **knobs) -> list[Problem]:
    """``n`` problems of a split: ``"eval"`` (report here), ``"dev"`` (tune here) or
    ``"train"`` (``seed`` picks the stream; any number).

    eval and dev give the first ``n`` (at most :data:`HELD_OUT`) of their fixed streams, with
    the default difficulty; knobs (see :func:`generate_problem`) apply to ``"train"`` only.
    No question appears in two splits.
    """
    return _SPLITS.problems(split, n, seed, **knobs)


prompt_text = arithmetic.prompt_text
document = arithmetic.document
extract_answer = arithmetic.extract_answer


def misread(problem: Problem, rng: random.Random | int) -> tuple[str, int]:
    """A wrong worked solution of the kind the bundled reasoner writes, and the index of its
    first wrong equation: ``(solution, k)``.

    Equation ``k`` (uniform over the solution's) takes another amount of the question (most
    often a neighbouring sentence's, or 2 for 3 in a multiplication) with probability 0.6, the
    opposite sign (+ for -) with probability 0.25, or a carried result off by 1-3 with
    probability 0.15; the arithmetic of the wrong equation is right (but for that slip), and
    every later equation applies the question's own operation and amount to the wrong running
    count, down to a wrong answer. Counts stay non-negative. Step labels of the result are
    exact: :func:`on_track` is true up to equation ``k`` and false from it on. Synthetic
    training data for a process reward model (``scripts/train_prm.py --synthetic``).
    """
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    ref = reference_steps(problem)
    amounts = [b for _, op, b, _ in ref if op != "*"]
    for _ in range(100):
        k = rng.randrange(len(ref))
        a, op, b, c = ref[k]
        kind = rng.choices(["amount", "sign", "slip"], [0.6, 0.25, 0.15])[0]
        if kind == "amount":
            if op == "*":
                b = 5 - b  # doubles <-> triples
            else:
                near = [ref[j][2] for j in (k - 2, k - 1, k + 1, k + 2)
                        if 0 <= j < len(ref) and ref[j][1] != "*"]
                pool = [v for v in (near if near and rng.random() < 0.7 else amounts) if v != b]
                if not pool:
                    continue
                b = rng.choice(pool)
        elif kind == "sign":
            if op == "*":
                continue
            op = "+" if op == "-" else "-"
        c = {"+": a + b, "-": a - b, "*": a * b}[op]
        if kind == "slip":
            c += rng.choice([-3, -2, -1, 1, 2, 3])
        written = ref[:k] + [(a, op, b, c)]
        for _, o, y, _ in ref[k + 1:]:
            value = written[-1][3]
            written.append((value, o, y, {"+": value + y, "-": value - y, "*": value * y}[o]))
        value = written[-1][3]
        if value == problem.answer or min(z for *_, z in written) < 0:
            continue
        return " " + " ".join(f"{x} {o} {y} = {z}." for x, o, y, z in written) + f" The answer is {value}.", k
    raise ValueError(f"no misreading of this problem found in 100 tries: {problem.question!r}")
