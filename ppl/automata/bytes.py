"""Deterministic automata over bytes: :class:`ByteDFA`, minimisation, and building one from a
full ``[S, 256]`` transition table.

A :class:`ByteDFA` reads UTF-8 bytes; bytes are first mapped to classes (bytes no transition
tells apart), so the table is ``[S, K]`` with ``K`` <= 256. State ``dead`` accepts nothing and
loops. Minimisation is Moore's partition refinement: start from the partition
{accepting, rejecting} and split blocks by the blocks of their successors until stable; the
blocks are the states of the minimal DFA. Byte classes whose columns then coincide merge.

>>> dfa = from_table(np.tile(np.arange(256) % 2, (2, 1)), [False, True], start=0, dead=0)
>>> dfa.matches(b"a"), dfa.matches(b"b")     # accepting: the last byte is odd
(True, False)
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["ByteDFA", "from_table", "minimize"]


@dataclasses.dataclass(frozen=True, eq=False)
class ByteDFA:
    """A DFA over bytes. Bytes are first mapped to classes (bytes no transition tells apart).

    trans: [S, K] int32 next state per (state, byte class); byte_class: [256] int32;
    accepting: [S] bool; start, dead: state ids (``dead`` accepts nothing and loops).
    """

    trans: np.ndarray
    byte_class: np.ndarray
    accepting: np.ndarray
    start: int
    dead: int

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    def step(self, state: int, byte: int) -> int:
        return int(self.trans[state, self.byte_class[byte]])

    def run(self, data: bytes, state: int | None = None) -> int:
        """State after reading ``data`` (from ``start`` unless given)."""
        state = self.start if state is None else state
        for b in data:
            state = int(self.trans[state, self.byte_class[b]])
        return state

    def matches(self, text) -> bool:
        """Whether the whole of ``text`` (str: its UTF-8 bytes) is in the language."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        return bool(self.accepting[self.run(data)])

    def live(self) -> np.ndarray:
        """[S] bool: states from which some byte string reaches an accepting state."""
        live = self.accepting.copy()
        while True:
            grown = live | live[self.trans].any(1)
            if (grown == live).all():
                return live
            live = grown

    def table(self) -> np.ndarray:
        """[S, 256] int32: next state per (state, byte), byte classes expanded."""
        return self.trans[:, self.byte_class]

    def __repr__(self) -> str:
        return f"ByteDFA({self.num_states} states, {self.trans.shape[1]} byte classes)"


def minimize(trans: np.ndarray, byte_class: np.ndarray, accepting: np.ndarray, start: int, dead: int) -> ByteDFA:
    """The minimal DFA of ``trans`` [S, K] over ``byte_class`` [256] -> K (Moore's partition
    refinement), with byte classes that no state tells apart merged."""
    block = accepting.astype(np.int64)
    count = len(np.unique(block))
    while True:
        signature = np.concatenate([block[:, None], block[trans]], axis=1)
        _, block = np.unique(signature, axis=0, return_inverse=True)
        block = block.reshape(-1)
        new_count = int(block.max()) + 1
        if new_count == count:
            break
        count = new_count
    # one representative per block
    rep = np.zeros(count, np.int64)
    rep[block[::-1]] = np.arange(len(block))[::-1]
    small = block[trans[rep]].astype(np.int32)
    # byte classes that no state tells apart become one
    _, column = np.unique(small.T, axis=0, return_inverse=True)
    column = column.reshape(-1)
    merged = np.zeros((count, int(column.max()) + 1), np.int32)
    merged[:, column] = small
    return ByteDFA(trans=merged, byte_class=column[byte_class].astype(np.int32),
                   accepting=accepting[rep].copy(), start=int(block[start]), dead=int(block[dead]))


def from_table(trans_by_byte, accepting, start: int, dead: int) -> ByteDFA:
    """The minimal :class:`ByteDFA` of a full table ``trans_by_byte`` [S, 256] (next state per
    state and byte), ``accepting`` [S] bool, a ``start`` state and a ``dead`` state."""
    return minimize(np.asarray(trans_by_byte).astype(np.int32), np.arange(256, dtype=np.int32),
                    np.asarray(accepting, bool), start=start, dead=dead)
