"""Automata for constraints, host-side (numpy only): regex syntax, byte DFAs, token DFAs,
boolean operations, and word / substring automata.

The pipeline: a pattern is parsed (:mod:`.syntax`) and compiled to a minimal DFA over UTF-8
bytes (:mod:`.nfa`, :class:`ByteDFA` in :mod:`.bytes`); byte DFAs combine by product and
complement (:mod:`.ops`) or come from word lists (:mod:`.words`); one is lifted once to a
tokenizer's tokens (:class:`TokenDFA`, :mod:`.tokens`). The token-level potentials built on
them live in :mod:`genppl.ppl.constraints`.

>>> from genppl.ppl import automata
>>> dfa = automata.intersect(automata.compile_regex("[a-z ]+"), automata.keywords_dfa(["dog"]))
>>> dfa.matches("a dog"), dfa.matches("a dog!"), dfa.matches("a cat")
(True, False, False)
"""

from .bytes import ByteDFA, from_table, minimize
from .nfa import MAX_NFA_STATES, NFA, compile_regex, determinize, utf8_sequences
from .ops import complement, intersect
from .syntax import MAX_CODEPOINT, SURROGATES, parse
from .tokens import TokenDFA, TokenRunner, vocabulary
from . import trees
from .trees import compile_tree
from .words import (avoid_strings_dfa, banned_words_dfa, encode_strings, keywords_dfa, substring_dfa,
                    word_dfa)

__all__ = [
    "MAX_CODEPOINT", "MAX_NFA_STATES", "NFA", "SURROGATES", "ByteDFA", "TokenDFA", "TokenRunner",
    "avoid_strings_dfa", "banned_words_dfa", "compile_regex", "compile_tree", "complement", "determinize", "encode_strings",
    "from_table", "intersect", "keywords_dfa", "minimize", "parse", "substring_dfa", "utf8_sequences",
    "trees", "vocabulary", "word_dfa",
]
