"""Automata of words and substrings: "contains", "avoids", keywords and banned words.

* :func:`substring_dfa`: the Aho–Corasick automaton of byte strings (state: the longest
  suffix of the text read so far that is a prefix of some string; accepting: a string has
  just been completed), the base of stop strings and banned strings;
* :func:`avoid_strings_dfa`: the text never contains any of the strings;
* :func:`word_dfa`: the text contains ``word`` as a whole word (a maximal run of ASCII
  letters equal to it, case-insensitively: the rule of ``tasks.sentences.words``), or as a
  plain substring with ``whole_word=False``;
* :func:`keywords_dfa`: contains every one of the words, in any order (a product);
* :func:`banned_words_dfa`: contains none of them.

Matching is on UTF-8 bytes, which for valid text is the same as matching characters.

>>> dfa = keywords_dfa(["dog", "park"])
>>> [dfa.matches(t) for t in ("the dog runs to the park.", "the dogs run to the park.")]
[True, False]
"""

from __future__ import annotations

import collections

import numpy as np

from genppl.models.interface import InputError

from .bytes import ByteDFA, from_table
from .ops import complement, intersect

__all__ = ["avoid_strings_dfa", "banned_words_dfa", "encode_strings", "keywords_dfa", "substring_dfa",
           "word_dfa"]

_LETTERS = np.zeros(256, bool)
_LETTERS[ord("a"):ord("z") + 1] = True
_LETTERS[ord("A"):ord("Z") + 1] = True
_LETTERS.setflags(write=False)


def encode_strings(strings, what: str) -> list[bytes]:
    """``strings`` (one str/bytes or a list of them, none empty) as a list of UTF-8 byte strings;
    bad input raises :class:`InputError` whose message starts with ``what``."""
    if isinstance(strings, (str, bytes)):
        strings = [strings]
    try:
        strings = list(strings)
    except TypeError:
        raise InputError(f"{what} must be a list of strings, got {type(strings).__name__}") from None
    if not strings:
        raise InputError(f"{what}: give at least one string")
    out = []
    for s in strings:
        if not isinstance(s, (str, bytes)):
            raise InputError(f"{what} must be strings, got {type(s).__name__} {s!r}")
        if not s:
            raise InputError(f"{what} cannot contain the empty string (it occurs everywhere)")
        out.append(s.encode() if isinstance(s, str) else bytes(s))
    return out


def substring_dfa(strings) -> ByteDFA:
    """Aho–Corasick automaton of byte strings: state = the longest suffix of the text read so far
    that is a prefix of some string; accepting = some string ends here.

    >>> dfa = substring_dfa([b"he", b"she"])
    >>> bool(dfa.accepting[dfa.run(b"ushe")]), bool(dfa.accepting[dfa.run(b"ush")])
    (True, False)
    """
    strings = encode_strings(strings, "the strings")
    # byte classes: each byte used by a string gets its own class, the rest share class 0
    used = sorted({b for s in strings for b in s})
    byte_class = np.zeros(256, np.int32)
    byte_class[used] = np.arange(1, len(used) + 1)
    goto: list[dict[int, int]] = [{}]
    ends = [False]
    for s in strings:
        node = 0
        for b in s:
            c = int(byte_class[b])
            if c not in goto[node]:
                goto.append({})
                ends.append(False)
                goto[node][c] = len(goto) - 1
            node = goto[node][c]
        ends[node] = True
    num, classes = len(goto), len(used) + 1
    trans = np.zeros((num, classes), np.int32)
    fail = np.zeros(num, np.int64)
    accepting = np.array(ends, bool)
    queue = collections.deque()
    for c in range(classes):  # depth one: failures go to the root
        if c in goto[0]:
            trans[0, c] = goto[0][c]
            queue.append(goto[0][c])
    while queue:  # breadth first: a node's failure state is complete before it is used
        node = queue.popleft()
        accepting[node] |= accepting[fail[node]]
        for c in range(classes):
            if c in goto[node]:
                child = goto[node][c]
                fail[child] = trans[fail[node], c]
                trans[node, c] = child
                queue.append(child)
            else:
                trans[node, c] = trans[fail[node], c]
    # the automaton never dies; an unreachable dead state keeps the ByteDFA contract
    trans = np.concatenate([trans, np.full((1, classes), num, np.int32)])
    accepting = np.concatenate([accepting, [False]])
    return ByteDFA(trans=trans, byte_class=byte_class, accepting=accepting, start=0, dead=num)


def avoid_strings_dfa(strings) -> ByteDFA:
    """The text never contains any of ``strings`` (bytes, across any split): the
    :func:`substring_dfa` with every transition that completes a string sent to the dead
    state, and every other state accepting.

    >>> d = avoid_strings_dfa(["ab"])
    >>> [d.matches(t) for t in ("ba", "aab", "")]
    [True, False, True]
    """
    search = substring_dfa(encode_strings(strings, "banned strings"))
    dead = search.dead
    trans = np.where(search.accepting[search.trans], dead, search.trans).astype(np.int32)
    accepting = ~search.accepting
    accepting[dead] = False
    return ByteDFA(trans=trans, byte_class=search.byte_class, accepting=accepting, start=search.start, dead=dead)


def _check_word(word) -> bytes:
    if not isinstance(word, str) or not word:
        raise InputError(f"a keyword must be a non-empty string, got {word!r}")
    return word.encode()


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
        return from_table(table, accepting, found.start, found.dead)
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
    return from_table(table, accepting, 0, dead)


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
