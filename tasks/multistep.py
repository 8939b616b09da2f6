"""Harder word problems: two people, carried state, distractors, counts up to 99.

A document looks like::

    Q: Sam has 13 apples and Ann has 15 apples. Sam buys 8 more. Ann gives 4 to Sam.
    Ann finds 9 more. Sam doubles his apples. Sam gives 7 to Ann. How many apples does Sam have now?
    A: Sam has 13. Sam buys 8 more: 13 + 8 = 21. Ann gives 4 to Sam: 21 + 4 = 25. Ann finds 9 more: skip. Sam doubles his apples: 25 * 2 = 50. Sam gives 7 to Ann: 50 - 7 = 43. The answer is 43.

(the question and the answer are one line each). Two people hold the same kind of item; every
sentence after the first changes one person's count (``buys``/``finds``/``wins`` add,
``loses``/``sells``/``gives away`` subtract, ``doubles``/``triples`` multiply) or moves items
from one person to the other (``X gives n to Y``). The question asks about one of the two.
The worked answer reads the question one sentence at a time: first the asked person's count
(``Sam has 13.``), then for every later sentence the sentence, ``": "``, and either the
equation ``a op b = c.`` it applies to the asked person's count or ``skip.`` (the
*distractors*: what the other person does on their own); then ``The answer is N.``. Every step
ends with ``"."``; equations and the answer have the format of :mod:`tasks.arithmetic`, so its
helpers (``extract_answer``, ``steps``, ``check_steps``) apply.

Reading matters here: an equation can be arithmetically right and still wrong for the
question (applying the other person's purchase, or adding a gift that went the other way),
which an arithmetic step verifier cannot see.

Difficulty knobs (arguments of :func:`generate_problem`): ``steps`` (how many equations the
worked answer has), ``distractors`` (how many sentences to skip), ``max_operand`` (one-digit
amounts by default; up to two digits), ``multiply`` (whether one doubling, of a count up to
25, or tripling, up to 15, may occur). Every count stays in ``[0, MAX_VALUE]``.

Splits: :func:`problems` gives the ``"train"``, ``"dev"`` and ``"eval"`` streams. The first
:data:`HELD_OUT` questions of the eval stream, and of the dev stream, are excluded from every
training stream, and the dev stream excludes the eval questions, so no question is in two
splits. Tune on ``dev``; report on ``eval``.

Randomness comes from :class:`random.Random` (the standard library): a seed gives the same
problems on every platform.
"""

from __future__ import annotations

import dataclasses
import random

from . import arithmetic
from .splits import SPLITS, Splits

__all__ = [
    "Problem", "generate_problem", "problems", "prompt_text", "document", "extract_answer",
    "is_correct", "check", "accuracy", "reference_steps", "steps_on_track", "on_track", "held_out_questions",
    "EVAL_SEED", "DEV_SEED", "HELD_OUT", "MAX_VALUE", "MAX_NEW_TOKENS", "STEPS", "DISTRACTORS", "SPLITS",
]

#: Seeds of the held-out streams; training streams use other seeds and exclude both sets.
EVAL_SEED = 2_000_003
DEV_SEED = 2_000_033
#: How many questions (from the start of the eval and the dev stream) are kept out of training.
HELD_OUT = 2000
#: Every count lies in [0, MAX_VALUE].
MAX_VALUE = 99
#: Token budget that fits every worked answer of the default difficulty with the bundled
#: tokenizer (the longest, with EOS, is 144 tokens; the mean about 108).
MAX_NEW_TOKENS = 144
#: Default range (inclusive) of the number of equations in the worked answer.
STEPS = (3, 6)
#: Default range (inclusive) of the number of distractor sentences.
DISTRACTORS = (1, 2)

_NAMES = ["Sam", "Tom", "Ben", "Max", "Leo", "Jack", "Noah", "Omar", "Ravi", "Luis",
          "Ann", "Mia", "Lily", "Emma", "Zoe", "Rosa", "Nina", "Ella", "Maya", "Kate"]
_HIS = {n: ("his" if i < 10 else "her") for i, n in enumerate(_NAMES)}
_ITEMS = ["apples", "marbles", "stickers", "books", "coins", "cookies", "pencils", "cards",
          "shells", "stamps", "balloons", "crayons", "eggs", "oranges", "toys", "flowers"]
_ADD = ["{X} buys {n} more.", "{X} finds {n} more.", "{X} wins {n} more.", "{X} gets {n} more {i}."]
_SUB = ["{X} loses {n}.", "{X} sells {n} of them.", "{X} gives away {n}.", "{X} drops {n} {i}."]
_MUL = {2: "{X} doubles {q} {i}.", 3: "{X} triples {q} {i}."}
_GIVE = "{X} gives {n} to {Y}."
_MUL_LIMIT = {2: 25, 3: 15}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: the question line, the integer answer, the worked solution (the answer
    line after ``"A:"``, with its leading space), and its difficulty (``steps`` equations,
    ``distractors`` skipped sentences)."""

    question: str
    answer: int
    solution: str
    steps: int
    distractors: int

    @property
    def text(self) -> str:
        """The whole training document (without BOS/EOS)."""
        return document(self)


def _check_range(name, value, lo, hi):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, tuple) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not lo <= value[0] <= value[1] <= hi):
        raise ValueError(f"{name} must be an integer or an inclusive range (lo, hi) within "
                         f"[{lo}, {hi}], got {value!r}")
    return value


def generate_problem(rng: random.Random | int, steps=STEPS, distractors=DISTRACTORS,
                     max_operand: int = 9, multiply: bool = True) -> Problem:
    """Draw one problem. ``rng`` is a :class:`random.Random` (or a seed).

    steps: number of equations of the worked answer (an int or an inclusive range; 1..10).
    distractors: number of sentences about the other person alone (int or range; 0..6).
    max_operand: largest added, subtracted or given amount (2..MAX_VALUE; default one digit,
        while the counts themselves run up to two digits).
    multiply: allow one doubling or tripling of the asked person's count.
    """
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    steps = _check_range("steps", steps, 1, 10)
    distractors = _check_range("distractors", distractors, 0, 6)
    if isinstance(max_operand, bool) or not isinstance(max_operand, int) or not 2 <= max_operand <= MAX_VALUE:
        raise ValueError(f"max_operand must be an integer in [2, {MAX_VALUE}], got {max_operand!r}")
    k = rng.randint(*steps)
    d = rng.randint(*distractors)
    asked, other = rng.sample(_NAMES, 2)
    items = rng.choice(_ITEMS)
    values = {asked: rng.randint(5, 40), other: rng.randint(5, 40)}
    first = [asked, other] if rng.random() < 0.5 else [other, asked]
    sentences = [f"{first[0]} has {values[first[0]]} {items} and {first[1]} has {values[first[1]]} {items}."]
    equations = []
    worked = [f"{asked} has {values[asked]}."]  # the worked answer: one step per sentence
    # which of the k + d sentences are distractors
    kinds = ["step"] * k + ["distractor"] * d
    rng.shuffle(kinds)
    used_mul = False
    for kind in kinds:
        if kind == "distractor":
            # the other person acts alone: buys, loses, ... (never a transfer, never asked)
            v = values[other]
            ops = (["+"] if v <= MAX_VALUE - 2 else []) + (["-"] if v >= 2 else [])
            op = rng.choice(ops)
            if op == "+":
                n = rng.randint(2, min(max_operand, MAX_VALUE - v))
                template = rng.choice(_ADD)
            else:
                n = rng.randint(1, min(max_operand, v))
                template = rng.choice(_SUB)
            values[other] = v + n if op == "+" else v - n
            sentences.append(template.format(X=other, n=n, i=items))
            worked.append(f"{sentences[-1][:-1]}: skip.")
            continue
        v, w = values[asked], values[other]
        choices, weights = [], []
        if v <= MAX_VALUE - 2:
            choices += ["+", "from"]; weights += [3, 2 if w >= 1 else 0]
        if v >= 2:
            choices += ["-", "to"]; weights += [3, 2 if w <= MAX_VALUE - 1 else 0]
        if multiply and not used_mul and 2 <= v <= _MUL_LIMIT[2]:
            choices.append("*"); weights.append(1)
        if not any(weights):
            choices, weights = ["-"], [1]
        op = rng.choices(choices, weights=weights)[0]
        if op == "+":
            n = rng.randint(2, min(max_operand, MAX_VALUE - v))
            text, eq = rng.choice(_ADD).format(X=asked, n=n, i=items), ("+", n)
        elif op == "from":  # the other person gives to the asked one
            n = rng.randint(1, min(max_operand, w, MAX_VALUE - v))
            text, eq = _GIVE.format(X=other, n=n, Y=asked), ("+", n)
            values[other] = w - n
        elif op == "-":
            n = rng.randint(1, min(max_operand, v))
            text, eq = rng.choice(_SUB).format(X=asked, n=n, i=items), ("-", n)
        elif op == "to":  # the asked person gives to the other
            n = rng.randint(1, min(max_operand, v, MAX_VALUE - w))
            text, eq = _GIVE.format(X=asked, n=n, Y=other), ("-", n)
            values[other] = w + n
        else:
            n = 3 if v <= _MUL_LIMIT[3] and rng.random() < 0.4 else 2
            text, eq = _MUL[n].format(X=asked, q=_HIS[asked], i=items), ("*", n)
            used_mul = True
        sign, n = eq
        result = {"+": v + n, "-": v - n, "*": v * n}[sign]
        equations.append(f"{v} {sign} {n} = {result}.")
        values[asked] = result
        sentences.append(text)
        worked.append(f"{text[:-1]}: {equations[-1]}")
    sentences.append(f"How many {items} does {asked} have now?")
    question = " ".join(sentences)
    solution = " " + " ".join(worked) + f" The answer is {values[asked]}."
    return Problem(question=question, answer=values[asked], solution=solution, steps=k, distractors=d)


_SPLITS = Splits(generate_problem, "multistep", EVAL_SEED, DEV_SEED, HELD_OUT)


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


def prompt_text(problem: Problem) -> str:
    """The prompt: ``"Q: <question>\\nA:"`` (prepend BOS when encoding it for the model)."""
    return f"Q: {problem.question}\nA:"


def document(problem: Problem) -> str:
    """The full document: the prompt followed by the worked solution."""
    return prompt_text(problem) + problem.solution


#: The final answer of a completion (the number in ``"The answer is N"``), or None.
extract_answer = arithmetic.extract_answer


def is_correct(completion: str, problem: Problem) -> bool:
    """Whether the completion's final answer equals the problem's answer."""
    return extract_answer(completion) == problem.answer


def check(completion: str, problem: Problem) -> bool:
    """Whether the completion is right: its final answer is the problem's answer (the steps
    are not required to be the reference ones)."""
    return is_correct(completion, problem)


def accuracy(completions, problems_) -> float:
    """Fraction of completions whose final answer is right (``completions[i]`` answers
    ``problems_[i]``)."""
    return arithmetic.accuracy(completions, problems_)


def reference_steps(problem: Problem) -> list[tuple[int, str, int, int]]:
    """The reference equations ``(a, op, b, c)`` of the worked solution, in order."""
    return arithmetic.steps(problem.solution)


def steps_on_track(completion: str, problem: Problem) -> list[bool]:
    """For each equation the completion writes, whether it and every one before it equal the
    reference solution's (a gold step label: False from the first departure on)."""
    ref = reference_steps(problem)
    out, ok = [], True
    for i, s in enumerate(arithmetic.steps(completion)):
        ok = ok and i < len(ref) and s == ref[i]
        out.append(ok)
    return out


def on_track(partial: str, problem: Problem) -> bool:
    """Whether a partial solution (the text after ``"A:"`` up to the end of a step) is, step
    for step, the beginning of the reference solution (a gold label for a step: every step so
    far is the one the question calls for). Surrounding spaces are ignored."""
    if "\nA:" in partial:
        partial = partial.split("\nA:", 1)[1]
    partial, reference = partial.strip(), problem.solution.strip()
    return bool(partial) and reference.startswith(partial) and (
        len(partial) == len(reference) or reference[len(partial)] == " ")
