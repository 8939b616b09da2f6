"""DFAs for lexical constraints, built on :mod:`ppl.regex` and :mod:`ppl.strings`.

Constraints are byte DFAs (:class:`ppl.ByteDFA`) combined by product (:func:`intersect`) and
complement (:func:`complement`), then lifted once to the tokenizer's tokens
(:class:`ppl.TokenDFA`, which also merges the states that can no longer accept):

* :func:`word_dfa`: the text contains ``word`` as a whole word (a maximal run of ASCII
  letters equal to it, case-insensitively: the rule of :func:`tasks.sentences.words`), or as
  a plain substring with ``whole_word=False``;
* :func:`keywords_dfa`: contains every one of the words, in any order (a product);
* :func:`banned_words_dfa`: contains none of them;
* :func:`constraint_dfa`: keywords, banned words and a regular expression together, compiled
  over a tokenizer: the DFA the guide (:mod:`circuits.guide`) intersects with an HMM.

>>> dfa = keywords_dfa(["dog", "park"])
>>> [dfa.matches(t) for t in ("the dog runs to the park.", "the dogs run to the park.")]
[True, False]
>>> from genppl import models
>>> tdfa = constraint_dfa(models.CharTokenizer("$ab ", eos_id=0), keywords=["ab"])
>>> tdfa.run([1, 2]) in tdfa.accepting.nonzero()[0]
True
"""

from __future__ import annotations

import numpy as np

from genppl.models.interface import InputError
from genppl.ppl.regex import ByteDFA, TokenDFA, compile_regex, minimize, vocabulary
from genppl.ppl.strings import substring_dfa

__all__ = ["banned_words_dfa", "complement", "constraint_dfa", "intersect", "keywords_dfa", "word_dfa"]

_LETTERS = np.zeros(256, bool)
_LETTERS[ord("a"):ord("z") + 1] = True
_LETTERS[ord("A"):ord("Z") + 1] = True


def _check_word(word) -> bytes:
    if not isinstance(word, str) or not word:
        raise InputError(f"a keyword must be a non-empty string, got {word!r}")
    return word.encode()


def _full_byte_dfa(trans_by_byte: np.ndarray, accepting, start: int, dead: int) -> ByteDFA:
    """A ByteDFA from a [S, 256] table, minimised (byte classes merged)."""
    return minimize(trans_by_byte.astype(np.int32), np.arange(256, dtype=np.int32),
                    np.asarray(accepting, bool), start=start, dead=dead)


def word_dfa(word: str, whole_word: bool = True) -> ByteDFA:
    """Byte DFA of "the text contains ``word``".

    whole_word: ``word`` must be a maximal run of ASCII letters, compared case-insensitively
    (as ``tasks.sentences.words`` splits text); the word itself must then be letters only.
    Otherwise: the exact bytes of ``word`` occur anywhere.

    >>> d = word_dfa("cat")
    >>> [d.matches(t) for t in ("a cat.", "Cat", "cats", "the bobcat", "cat, dog")]
    [True, True, False, False, True]
    """
    data = _check_word(word)
    if not whole_word:
        found = substring_dfa([data])
        # once found, stay found: redirect the transitions out of accepting states to a sink
        sink = found.num_states
        trans = np.concatenate([found.trans, np.zeros((1, found.trans.shape[1]), np.int32)])
        trans[sink] = sink
        trans[np.concatenate([found.accepting, [False]])] = sink
        accepting = np.concatenate([found.accepting, [True]])
        table = trans[:, found.byte_class]
        return _full_byte_dfa(table, accepting, found.start, found.dead)
    if not all(_LETTERS[b] for b in data):
        raise InputError(f"a whole-word keyword must be ASCII letters only, got {word!r}; "
                         "use whole_word=False for other strings")
    lower = data.lower()
    L = len(lower)
    # states: 0..L matched letters of the current run (run started at a word boundary),
    # L+1 inside a run that cannot match, L+2 found (sticky), L+3 dead (unreachable)
    other, found, dead = L + 1, L + 2, L + 3
    table = np.zeros((L + 4, 256), np.int64)
    lowered = np.frombuffer(bytes(range(256)).lower(), np.uint8)
    for j in range(L + 1):
        row = np.where(_LETTERS, other, 0)  # a non-letter ends the run
        if j < L:
            row[lowered == lower[j]] = j + 1
        else:
            row[~_LETTERS] = found  # the run ended exactly at the word
        table[j] = row
    table[other] = np.where(_LETTERS, other, 0)
    table[found] = found
    table[dead] = dead
    accepting = np.zeros(L + 4, bool)
    accepting[[L, found]] = True  # L: the text ends right after the word
    return _full_byte_dfa(table, accepting, 0, dead)


def _table(dfa: ByteDFA) -> np.ndarray:
    return dfa.trans[:, dfa.byte_class]  # [S, 256]


def intersect(*dfas: ByteDFA) -> ByteDFA:
    """The product DFA: accepts what every one of ``dfas`` accepts (reachable part, minimised).

    >>> d = intersect(word_dfa("a", whole_word=False), word_dfa("b", whole_word=False))
    >>> [d.matches(t) for t in ("ab", "ba", "aa")]
    [True, True, False]
    """
    if not dfas:
        raise InputError("intersect needs at least one DFA")
    for d in dfas:
        if not isinstance(d, ByteDFA):
            raise InputError(f"intersect takes ppl.ByteDFA objects, got {type(d).__name__}")
    result = dfas[0]
    for other in dfas[1:]:
        result = _product(result, other)
    return result


def _product(a: ByteDFA, b: ByteDFA) -> ByteDFA:
    ta, tb = _table(a), _table(b)
    ids = {(a.dead, b.dead): 0, (a.start, b.start): 1} if (a.start, b.start) != (a.dead, b.dead) \
        else {(a.dead, b.dead): 0}
    pairs = list(ids)
    rows = []
    k = 0
    while k < len(pairs):
        p, q = pairs[k]
        nxt_a, nxt_b = ta[p], tb[q]
        codes = nxt_a.astype(np.int64) * tb.shape[0] + nxt_b
        row = np.empty(256, np.int64)
        for code in np.unique(codes):
            pair = (int(code) // tb.shape[0], int(code) % tb.shape[0])
            if pair not in ids:
                ids[pair] = len(pairs)
                pairs.append(pair)
            row[codes == code] = ids[pair]
        rows.append(row)
        k += 1
    accepting = np.array([a.accepting[p] and b.accepting[q] for p, q in pairs], bool)
    start = ids[(a.start, b.start)]
    return _full_byte_dfa(np.array(rows), accepting, start, 0)


def complement(dfa: ByteDFA) -> ByteDFA:
    """Accepts exactly the byte strings ``dfa`` rejects (the dead state becomes a sink that
    accepts; a new unreachable dead state keeps the ByteDFA contract)."""
    table = _table(dfa)
    n = table.shape[0]
    table = np.concatenate([table, np.full((1, 256), n)])
    accepting = np.concatenate([~dfa.accepting, [False]])
    return _full_byte_dfa(table, accepting, dfa.start, n)


def keywords_dfa(words, whole_word: bool = True) -> ByteDFA:
    """Contains every word of ``words`` (any order, each at least once)."""
    words = _word_list(words, "keywords")
    return intersect(*(word_dfa(w, whole_word) for w in words))


def banned_words_dfa(words, whole_word: bool = True) -> ByteDFA:
    """Contains none of ``words``."""
    words = _word_list(words, "banned words")
    return intersect(*(complement(word_dfa(w, whole_word)) for w in words))


def _word_list(words, what):
    if isinstance(words, str):
        raise InputError(f"{what} must be a list of words, e.g. ['dog', 'park'], not one string")
    words = list(words)
    if not words:
        raise InputError(f"{what}: give at least one word")
    return words


def constraint_dfa(tokenizer_or_lm, keywords=(), banned=(), regex: str | None = None, *,
                   whole_word: bool = True) -> TokenDFA:
    """The token-level DFA of "contains every keyword, none of the banned words, and (if
    given) matches ``regex`` in full", over the tokens of an LM or tokenizer.

    EOS keeps the state (the token DFA's convention); tokens without bytes lead to the dead
    state.
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
