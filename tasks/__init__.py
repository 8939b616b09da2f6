"""Tasks with checkable answers, and the corpus of the bundled default model.

* :mod:`tasks.arithmetic`: multi-step word problems with a worked chain of thought.
* :mod:`tasks.sentences`: simple sentences over a few hundred words, for keyword constraints.
* :mod:`tasks.corpus`: the mixed training corpus of the bundled model.

Prompts are plain text (``arithmetic.prompt_text(problem)``, ``sentences.prompt_text()``);
the bundled model expects its BOS token (``<|endoftext|>``) before the encoded prompt.
"""

from . import arithmetic, corpus, sentences

__all__ = ["arithmetic", "corpus", "sentences"]
