"""String constraints over the decoded byte stream, across token boundaries.

* :class:`BannedStrings`: the continuation never contains any of the strings (a token-level
  hard constraint, log phi = 0 or -inf);
* :class:`StopStrings`: generation ends right after the first occurrence of any of the
  strings; used by ``ppl.Program(..., stop=[...])``, it changes the transition (the particle
  finishes), not the weight.

Both are compiled from one Aho–Corasick automaton (:func:`substring_dfa`): a byte DFA whose
accepting states are those where one of the strings has just been completed. Matching is on
UTF-8 bytes, which for valid text is the same as matching characters.

>>> import jax
>>> from genppl import models, ppl
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)   # tokens "$abcd"
>>> no_ab = ppl.BannedStrings(["ab"], lm)          # "a" then "b" is banned, even as two tokens
>>> program = ppl.Program(lm, [1], max_new_tokens=4, potential=no_ab, stop=["c"])
>>> state = program.init(8)
>>> for k in range(4):
...     state, logw = program.step(jax.random.key(k), state)
>>> all("ab" not in t and "c" not in t[:-1] for t in program.finished_text(state))
True
"""

from __future__ import annotations

import collections

import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError

from .regex import ByteDFA, DFAPotential, TokenDFA, _TokenRunner, vocabulary

__all__ = ["BannedStrings", "StopStrings", "substring_dfa"]


def _encode_strings(strings, what: str) -> list[bytes]:
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
    strings = _encode_strings(strings, "the strings")
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


class BannedStrings(DFAPotential):
    """The continuation must never contain any of ``strings`` (checked on bytes, across token
    boundaries): a token-level hard constraint.

    >>> from genppl import models
    >>> tok = models.CharTokenizer("$abe", eos_id=0)
    >>> ban = BannedStrings(["e"], tok)                    # a lipogram
    >>> ban.token_dfa.allowed[ban.token_dfa.start].tolist()
    [True, True, True, False]
    """

    def __init__(self, strings, tokenizer_or_lm):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        encoded = _encode_strings(strings, "banned strings")
        self.strings = tuple(s.decode(errors="replace") for s in encoded)
        search = substring_dfa(encoded)
        # completing a banned string is final: those transitions go to the dead state, and
        # every other state accepts
        dead = search.dead
        trans = np.where(search.accepting[search.trans], dead, search.trans).astype(np.int32)
        accepting = ~search.accepting
        accepting[dead] = False
        self.byte_dfa = ByteDFA(trans=trans, byte_class=search.byte_class, accepting=accepting,
                                start=search.start, dead=dead)
        super().__init__(TokenDFA.build(self.byte_dfa, token_bytes, eos_id, vocab_size))

    def __repr__(self) -> str:
        return f"BannedStrings({list(self.strings)!r})"


class StopStrings:
    """Stop generation right after the first occurrence of any of ``strings``.

    Per particle, a state of the strings' Aho–Corasick automaton; precomputed for every state s
    and token t: ``next_state[s, t]`` and ``stops[s, t]`` (reading t's bytes from s completes a
    string). EOS and tokens without bytes leave the state and never stop. Only generated text
    is searched (not the prompt). Give it to ``ppl.Program(..., stop=...)`` (a list of strings
    there builds one).

    >>> from genppl import models
    >>> stop = StopStrings(["\\n"], models.CharTokenizer("$a\\n", eos_id=0))
    >>> stop.stops[stop.start].tolist()
    [False, False, True]
    """

    def __init__(self, strings, tokenizer_or_lm):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        encoded = _encode_strings(strings, "stop strings")
        self.strings = tuple(s.decode(errors="replace") for s in encoded)
        dfa = substring_dfa(encoded)
        usable = np.array([i for i, b in enumerate(token_bytes) if b and i != eos_id], np.int64)
        runner = _TokenRunner(dfa, token_bytes, usable)
        states = np.arange(dfa.num_states)
        ends, hit = runner.run(states, hit=dfa.accepting)
        self.next_state = np.repeat(states[:, None].astype(np.int32), vocab_size, axis=1)
        self.next_state[:, runner.tokens] = ends
        self.stops = np.zeros((dfa.num_states, vocab_size), bool)
        self.stops[:, runner.tokens] = hit
        self.start, self.vocab_size, self.eos_id = dfa.start, vocab_size, eos_id
        self.byte_dfa = dfa
        self._device = (jnp.asarray(self.next_state), jnp.asarray(self.stops))

    def device_tables(self):
        """(next_state, stops) as JAX arrays."""
        return self._device

    def cut(self, text: str) -> str:
        """``text`` up to the end of the first occurrence of a stop string (unchanged if none)."""
        ends = [text.find(s) + len(s) for s in self.strings if s in text]
        return text[: min(ends)] if ends else text

    def __repr__(self) -> str:
        return f"StopStrings({list(self.strings)!r})"
