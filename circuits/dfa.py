"""The lexical constraint of the HMM x DFA guide, as one token-level DFA.

:func:`constraint_dfa` combines keywords, banned words and a regular expression into one
byte DFA (a product of :func:`genppl.ppl.automata.keywords_dfa`,
:func:`~genppl.ppl.automata.banned_words_dfa` and :func:`~genppl.ppl.automata.compile_regex`)
and lifts it once to the tokenizer's tokens (a :class:`genppl.ppl.automata.TokenDFA`, which
also merges the states that can no longer accept). Every automaton it builds on lives in
:mod:`genppl.ppl.automata`.

>>> from genppl import models
>>> tdfa = constraint_dfa(models.CharTokenizer("$ab ", eos_id=0), keywords=["ab"])
>>> tdfa.run([1, 2]) in tdfa.accepting.nonzero()[0]
True
"""

from __future__ import annotations

from genppl.models.interface import InputError
from genppl.ppl.automata import TokenDFA, banned_words_dfa, compile_regex, intersect, keywords_dfa, vocabulary

__all__ = ["constraint_dfa"]


def constraint_dfa(tokenizer_or_lm, keywords=(), banned=(), regex: str | None = None, *,
                   whole_word: bool = True) -> TokenDFA:
    """The token-level DFA of "contains every keyword, none of the banned words, and (if
    given) matches ``regex`` in full", over the tokens of an LM or tokenizer.

    whole_word: keywords and banned words are whole words (maximal runs of ASCII letters,
    compared case-insensitively), else plain substrings. EOS keeps the state (the token DFA's
    convention); tokens without bytes lead to the dead state.
    """
    parts = []
    if keywords:
        parts.append(keywords_dfa(keywords, whole_word))
    if banned:
        parts.append(banned_words_dfa(banned, whole_word))
    if regex is not None:
        parts.append(compile_regex(regex))
    if not parts:
        raise InputError("give keywords, banned words or a regex: the constraint is empty")
    token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
    return TokenDFA.build(intersect(*parts), token_bytes, eos_id, vocab_size)

