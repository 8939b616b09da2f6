"""Multi-step arithmetic word problems with a worked chain of thought and a checkable answer.

A document looks like::

    Q: Sam has 12 apples. He buys 7 more. Then he gives 5 to Ann. How many apples does Sam have now?
    A: 12 + 7 = 19. 19 - 5 = 14. The answer is 14.

The question is one line; the answer line writes one equation ``a op b = c`` per operation
(``op`` is ``+``, ``-`` or ``*``), each ending with ``". "``, then ``The answer is N.``
A step-level sampler can therefore cut the answer at ``". "`` (:data:`STEP_DELIMITER`).

Problems start from a number in 2..20 and apply 2-4 operations (every intermediate value
stays in ``[0, MAX_VALUE]``): additions and subtractions of one-digit numbers, and at most
one doubling (of a value up to 20) or tripling (up to 12). The bundled model is meant to
solve them often but far from always.

Randomness comes from :class:`random.Random` (the standard library), so a seed gives the
same problems on every platform and every numpy version.

The prompt for a problem is :func:`prompt_text` (the text up to and including ``"A:"``).
Language models trained on the bundled corpus see each document after a BOS token, so
prepend the tokenizer's BOS id (``<|endoftext|>``) to the encoded prompt.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
from typing import Sequence

__all__ = [
    "Problem", "generate_problem", "prompt_text", "document", "extract_answer", "is_correct",
    "steps", "step_checks", "check_steps", "step_score", "eval_problems", "accuracy",
    "equations_hold", "step_reward", "majority_vote", "weighted_vote", "score",
    "EVAL_SEED", "STEP_DELIMITER", "MAX_VALUE", "MAX_NEW_TOKENS", "WRONG_STEP_REWARD",
]

#: Seed of the held-out evaluation set; training corpora use other seeds and exclude it.
EVAL_SEED = 1_000_003
#: Every intermediate value lies in [0, MAX_VALUE].
MAX_VALUE = 60
#: Token budget of a worked answer (the longest, with EOS, is about 55 tokens with the bundled tokenizer).
MAX_NEW_TOKENS = 96
#: Steps of the worked answer end with this string.
STEP_DELIMITER = ". "
#: :func:`step_reward` of a partial solution: this to the power of its wrong equations.
WRONG_STEP_REWARD = 0.1

_NAMES = [
    ("Sam", "he"), ("Tom", "he"), ("Ben", "he"), ("Max", "he"), ("Leo", "he"), ("Jack", "he"),
    ("Noah", "he"), ("Omar", "he"), ("Ravi", "he"), ("Luis", "he"),
    ("Ann", "she"), ("Mia", "she"), ("Lily", "she"), ("Emma", "she"), ("Zoe", "she"),
    ("Rosa", "she"), ("Nina", "she"), ("Ella", "she"), ("Maya", "she"), ("Kate", "she"),
]
_ITEMS = [
    "apples", "marbles", "stickers", "books", "coins", "cookies", "pencils", "cards",
    "shells", "stamps", "balloons", "crayons", "eggs", "oranges", "toys", "flowers",
]
_OBJECT = {"he": "him", "she": "her"}
_POSSESSIVE = {"he": "his", "she": "her"}

# Phrasings of each operation; {p} pronoun, {o} object pronoun, {q} possessive,
# {n} amount, {x} another person, {i} the items.
_ADD = [
    "{P} buys {n} more.", "{P} finds {n} more.", "{X} gives {o} {n} more.",
    "{P} gets {n} more {i}.", "{P} wins {n} more.", "{P} picks up {n} more {i}.",
]
_SUB = [
    "{P} gives {n} to {x}.", "{P} loses {n}.", "{P} sells {n} of them.",
    "{P} gives away {n} {i}.", "{X} takes {n} of them.", "{P} drops {n}.",
]
_MUL = {
    2: ["{P} doubles {q} {i}.", "{P} gets twice as many {i}."],
    3: ["{P} triples {q} {i}.", "{P} gets three times as many {i}."],
}
_LINKS = ["", "Then ", "Later ", "Next "]
# doubling or tripling only happens to values up to these
_MUL_LIMIT = {2: 20, 3: 12}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One word problem: the question line, the integer answer, and the worked solution
    (the answer line after ``"A:"``, with its leading space)."""

    question: str
    answer: int
    solution: str

    @property
    def text(self) -> str:
        """The whole training document (without BOS/EOS)."""
        return document(self)


def _capitalize(s: str) -> str:
    return s[:1].upper() + s[1:]


def generate_problem(rng: random.Random | int, operations: tuple[int, int] | None = None, max_operand: int = 9,
                     max_value: int = MAX_VALUE) -> Problem:
    """Draw one problem. ``rng`` is a :class:`random.Random` (or a seed).

    The defaults give this task (2-4 operations, one-digit amounts, values in [0, 60]);
    ``operations`` (an inclusive range), ``max_operand`` and ``max_value`` make longer
    problems with larger numbers (:mod:`tasks.chains`) in the same format.
    """
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    (name, he), = rng.sample(_NAMES, 1)
    others = [n for n, _ in _NAMES if n != name]
    items = rng.choice(_ITEMS)
    value = rng.randint(2, 20)
    sentences = [f"{name} has {value} {items}."]
    equations = []
    num_ops = rng.choice([2, 2, 3, 3, 4]) if operations is None else rng.randint(*operations)
    used_mul = False
    for k in range(num_ops):
        choices, weights = [], []
        if value <= max_value - 2:
            choices.append("+"); weights.append(4)
        if value >= 2:
            choices.append("-"); weights.append(4)
        if not used_mul and 2 <= value <= _MUL_LIMIT[2]:
            choices.append("*"); weights.append(1)
        op = rng.choices(choices, weights=weights)[0]
        if op == "+":
            n = rng.randint(2, min(max_operand, max_value - value))
            template = rng.choice(_ADD)
            result = value + n
        elif op == "-":
            n = rng.randint(1, min(max_operand, value))
            template = rng.choice(_SUB)
            result = value - n
        else:
            n = 3 if value <= _MUL_LIMIT[3] and rng.random() < 0.4 else 2
            template = rng.choice(_MUL[n])
            result = value * n
            used_mul = True
        x = rng.choice(others)
        text = template.format(P=he, p=he, o=_OBJECT[he], q=_POSSESSIVE[he], n=n, x=x, X=x, i=items)
        link = rng.choice(_LINKS) if k > 0 else ""
        if link:
            text = link + (text if text.startswith(x) else text[0].lower() + text[1:])
        sentences.append(_capitalize(text))
        equations.append(f"{value} {op} {n} = {result}.")
        value = result
    sentences.append(f"How many {items} does {name} have now?")
    question = " ".join(sentences)
    solution = " " + " ".join(equations) + f" The answer is {value}."
    return Problem(question=question, answer=value, solution=solution)


def prompt_text(problem: Problem) -> str:
    """The prompt: ``"Q: <question>\\nA:"`` (prepend BOS when encoding it for the model)."""
    return f"Q: {problem.question}\nA:"


def document(problem: Problem) -> str:
    """The full document: the prompt followed by the worked solution."""
    return prompt_text(problem) + problem.solution


_ANSWER = re.compile(r"The answer is (-?\d+)")
_EQUATION = re.compile(r"(-?\d+)\s*([-+*x×])\s*(-?\d+)\s*=\s*(-?\d+)")


def extract_answer(text: str) -> int | None:
    """The final answer of a completion: the number in its first ``"The answer is N"``,
    or ``None`` if there is none. Works on a bare completion or a whole document."""
    if "\nA:" in text:
        text = text.split("\nA:", 1)[1]
    m = _ANSWER.search(text)
    return int(m.group(1)) if m else None


def is_correct(completion: str, problem: Problem) -> bool:
    """Whether the completion's final answer equals the problem's answer."""
    return extract_answer(completion) == problem.answer


def steps(completion: str) -> list[tuple[int, str, int, int]]:
    """Every equation ``a op b = c`` written in the completion, as ``(a, op, b, c)``
    (``x`` and ``×`` read as ``*``)."""
    if "\nA:" in completion:
        completion = completion.split("\nA:", 1)[1]
    out = []
    for a, op, b, c in _EQUATION.findall(completion):
        out.append((int(a), "*" if op in "x×" else op, int(b), int(c)))
    return out


def _holds(a: int, op: str, b: int, c: int) -> bool:
    return {"+": a + b, "-": a - b, "*": a * b}[op] == c


def step_checks(completion: str) -> list[bool]:
    """For each written equation, whether it is arithmetically right."""
    return [_holds(*s) for s in steps(completion)]


def check_steps(completion: str) -> bool:
    """True when the completion writes at least one equation and every one is right.

    It checks arithmetic only, not whether the steps follow the question: a step verifier.
    """
    checks = step_checks(completion)
    return bool(checks) and all(checks)


def step_score(completion: str) -> float:
    """Fraction of the written equations that are right (0.0 when there is none)."""
    checks = step_checks(completion)
    return sum(checks) / len(checks) if checks else 0.0


def eval_problems(n: int = 200, seed: int = EVAL_SEED) -> list[Problem]:
    """A fixed held-out set of ``n`` problems (the first ``n`` of the stream for ``seed``;
    training corpora are drawn from other seeds and exclude these questions)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(seed)
    return [generate_problem(rng) for _ in range(n)]


def accuracy(completions, problems) -> float:
    """Fraction of completions whose final answer is right (``completions[i]`` answers
    ``problems[i]``)."""
    completions, problems = list(completions), list(problems)
    if len(completions) != len(problems):
        raise ValueError(f"got {len(completions)} completions for {len(problems)} problems")
    if not problems:
        return 0.0
    return sum(is_correct(c, p) for c, p in zip(completions, problems)) / len(problems)


# ---- step checks as potentials, and scoring of a prompt's samples -----------------------
def equations_hold(text: str) -> bool:
    """Step verifier: every equation written so far is right (vacuously true before the
    first one). A 0/1 potential for ``ppl.StepVerifier``."""
    return all(step_checks(text))


def step_reward(texts: Sequence[str]) -> list[float]:
    """Reward of partial solutions (a batched reward model for ``ppl.StepReward`` or
    ``inference.smc.reward_particle_filter``): :data:`WRONG_STEP_REWARD` to the power of the
    number of wrong equations, so 1.0 while every step holds."""
    return [WRONG_STEP_REWARD ** (len(c) - sum(c)) for c in map(step_checks, texts)]


def majority_vote(texts: Sequence[str], weights=None) -> int | None:
    """The most frequent extracted answer among the texts (None when none gives one); with
    ``weights``, texts of weight 0 (dead particles) do not vote. Ties go to the answer seen
    first."""
    voters = [extract_answer(t) for i, t in enumerate(texts) if weights is None or weights[i] > 0]
    voted = collections.Counter(a for a in voters if a is not None).most_common(1)
    return voted[0][0] if voted else None


def weighted_vote(texts: Sequence[str], weights) -> int | None:
    """The answer with the largest total weight (normalised importance weights of
    particles); texts without an answer or with weight 0 do not vote. None when none does."""
    totals: dict = collections.defaultdict(float)
    for text, w in zip(texts, weights):
        answer = extract_answer(text)
        if answer is not None and w > 0:
            totals[answer] += float(w)
    return max(totals, key=totals.get) if totals else None


def score(texts: Sequence[str], problem: Problem, weights=None) -> dict[str, float]:
    """Metrics of the samples of one problem.

    Without ``weights`` (plain samples): ``accuracy`` (share of right answers) and
    ``majority_vote_accuracy`` (1.0 if the most frequent answer is right). With ``weights``
    (the normalised weights of SMC particles, summing to 1 or all 0): ``accuracy`` is the
    weighted share of right answers, the majority vote counts only particles of positive
    weight, and ``weighted_vote_accuracy`` is 1.0 if the answer of largest total weight is
    right.
    """
    texts = list(texts)
    if weights is not None and len(weights) != len(texts):
        raise ValueError(f"got {len(weights)} weights for {len(texts)} texts")
    correct = [extract_answer(t) == problem.answer for t in texts]
    if weights is None:
        accuracy_ = sum(correct) / len(texts) if texts else 0.0
    else:
        accuracy_ = float(sum(float(w) for w, c in zip(weights, correct) if c))
    metrics = {"accuracy": float(accuracy_),
               "majority_vote_accuracy": float(majority_vote(texts, weights) == problem.answer)}
    if weights is not None:
        metrics["weighted_vote_accuracy"] = float(weighted_vote(texts, weights) == problem.answer)
    return metrics
