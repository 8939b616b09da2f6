"""Train/dev/eval splits of a problem generator that never share a question.

The eval and dev streams are fixed seeds; their first ``held_out`` questions are kept out of
every training stream, and the dev stream skips the eval questions. Used by
:mod:`tasks.chains` and :mod:`tasks.multistep`.
"""

from __future__ import annotations

import random

SPLITS = ("train", "dev", "eval")


class Splits:
    """The splits of ``generate(rng, **knobs)``; training streams are seeded ``f"{seed}/{name}-train"``."""

    def __init__(self, generate, name: str, eval_seed: int, dev_seed: int, held_out: int):
        self.generate, self.name = generate, name
        self.eval_seed, self.dev_seed, self.held_out = eval_seed, dev_seed, held_out

    def stream(self, seed, exclude: set, n: int, **knobs) -> list:
        rng = random.Random(seed)
        out = []
        while len(out) < n:
            p = self.generate(rng, **knobs)
            if p.question not in exclude:
                out.append(p)
        return out

    def held_out_questions(self, split: str = "both") -> set[str]:
        if split not in ("eval", "dev", "both"):
            raise ValueError(f"split must be 'eval', 'dev' or 'both', got {split!r}")
        eval_questions = {p.question for p in self.stream(self.eval_seed, set(), self.held_out)}
        if split == "eval":
            return eval_questions
        dev_questions = {p.question for p in self.stream(self.dev_seed, eval_questions, self.held_out)}
        return dev_questions if split == "dev" else eval_questions | dev_questions

    def problems(self, split: str, n: int, seed: int = 0, **knobs) -> list:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if split != "train":
            if n > self.held_out:
                raise ValueError(f"the {split} split holds {self.held_out} problems; asked for {n}")
            if knobs:
                raise ValueError(f"the {split} split has fixed difficulty; knobs {sorted(knobs)} apply to 'train'")
            if split == "eval":
                return self.stream(self.eval_seed, set(), n)
            return self.stream(self.dev_seed, self.held_out_questions("eval"), n)
        return self.stream(f"{seed}/{self.name}-train", self.held_out_questions("both"), n, **knobs)
