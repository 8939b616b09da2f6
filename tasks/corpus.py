"""The training corpus of the bundled default model.

Two kinds of documents, shuffled together:

* arithmetic word problems with a worked answer (:mod:`tasks.arithmetic`)::

      Q: Sam has 12 apples. He buys 7 more. Then he gives 5 to Ann. How many apples does Sam have now?
      A: 12 + 7 = 19. 19 - 5 = 14. The answer is 14.

* simple sentences over a vocabulary of a few hundred words (:mod:`tasks.sentences`)::

      S: the small dog carries a red ball to the park.

Documents carry no special tokens; the training script writes each one as
``<|endoftext|> document`` and packs them, so that every document follows a BOS/EOS token and
is followed by one (the model learns to stop).

Problems of the held-out evaluation set (``arithmetic.eval_problems(HELD_OUT)``) never
appear in a corpus.
"""

from __future__ import annotations

import random

from . import arithmetic, chains, multistep, sentences

__all__ = ["build_corpus", "HELD_OUT"]

#: How many evaluation problems (from the start of the evaluation stream) are kept out.
HELD_OUT = 2000


def build_corpus(n_arithmetic: int, n_sentences: int, seed: int = 0, n_multistep: int = 0,
                 n_chains: int = 0) -> list[str]:
    """``n_arithmetic`` problem documents, ``n_sentences`` sentence documents, and harder
    problem documents from the ``"train"`` streams (which exclude the dev and eval
    questions) of :mod:`tasks.multistep` (``n_multistep``) and :mod:`tasks.chains`
    (``n_chains``), shuffled.

    Deterministic given ``seed`` (standard-library :class:`random.Random` streams derived
    from it), whatever the platform; ``n_multistep = n_chains = 0`` gives the corpus of the
    bundled model.
    """
    for name, value in (("n_arithmetic", n_arithmetic), ("n_sentences", n_sentences),
                        ("n_multistep", n_multistep), ("n_chains", n_chains)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    held_out = {p.question for p in arithmetic.eval_problems(HELD_OUT)}
    rng = random.Random(f"{seed}/arithmetic")
    docs = []
    while len(docs) < n_arithmetic:
        problem = arithmetic.generate_problem(rng)
        if problem.question not in held_out:
            docs.append(arithmetic.document(problem))
    rng = random.Random(f"{seed}/sentences")
    docs += [sentences.document(sentences.generate_sentence(rng)) for _ in range(n_sentences)]
    if n_multistep:
        docs += [multistep.document(p) for p in multistep.problems("train", n_multistep, seed=seed)]
    if n_chains:
        docs += [chains.document(p) for p in chains.problems("train", n_chains, seed=seed)]
    random.Random(f"{seed}/shuffle").shuffle(docs)
    return docs
