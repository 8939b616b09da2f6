"""Tasks with checkable answers, and the corpus of the bundled default model.

* :mod:`tasks.arithmetic`: multi-step word problems with a worked chain of thought.
* :mod:`tasks.chains`: longer problems in the same format (5-8 operations, amounts up to 12),
  with train/dev/eval splits: the task of the second bundled model ("reasoner").
* :mod:`tasks.multistep`: harder problems still (two people, distractors, sentence-by-sentence
  reading), with train/dev/eval splits; the bundled models do not learn them.
* :mod:`tasks.sentences`: simple sentences over a few hundred words, for keyword constraints.
* :mod:`tasks.corpus`: the mixed training corpus of the bundled model.
* :mod:`tasks.splits`: train/dev/eval streams of a generator that never share a question.

Prompts are plain text (``arithmetic.prompt_text(problem)``, ``sentences.prompt_text()``);
the bundled model expects its BOS token (``<|endoftext|>``) before the encoded prompt.
Scoring: ``arithmetic.score(texts, problem, weights=None)`` and
``sentences.score(texts, weights=None, keywords=None)`` give a prompt's metrics (weighted for
SMC particles); ``arithmetic.equations_hold`` and ``arithmetic.step_reward`` are the step
verifier and the step reward the ``genppl`` command's SMC methods use.
"""

from . import arithmetic, chains, corpus, multistep, sentences, splits

__all__ = ["arithmetic", "chains", "corpus", "multistep", "sentences", "splits"]
