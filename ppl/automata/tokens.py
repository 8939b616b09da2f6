"""Byte DFAs lifted to a tokenizer's tokens (:class:`TokenDFA`), and the vocabulary helper.

Lifting runs every token's bytes from every byte-DFA state reachable at a token boundary
(breadth first from the start), giving ``table[state, token] -> next state``. A state is
*live* when some token sequence reaches an accepting state from it (a backward search over
the token table: "live" means "can still finish by tokens", which can be stricter than by
bytes); every state that is not live is merged into one dead state, id 0. EOS leaves the
state unchanged; tokens with no bytes (specials, padding rows) lead to the dead state.

>>> from genppl import models
>>> from genppl.ppl.automata import compile_regex
>>> tok = models.CharTokenizer("$ab", eos_id=0)
>>> tdfa = TokenDFA.build(compile_regex("ab*"), tok.token_bytes, eos_id=0)
>>> tdfa.allowed[tdfa.start].tolist()   # EOS no, 'a' yes, 'b' no
[False, True, False]
"""

from __future__ import annotations

import numpy as np

from genppl.models.interface import InputError

from .bytes import ByteDFA

__all__ = ["TokenDFA", "TokenRunner", "vocabulary"]


def vocabulary(tokenizer_or_lm) -> tuple[list[bytes], int, int]:
    """(token_bytes padded to the vocabulary size, vocab_size, eos_id) of an LM or tokenizer."""
    if hasattr(tokenizer_or_lm, "tokenizer") and hasattr(tokenizer_or_lm, "vocab_size"):
        tok, vocab_size, eos_id = tokenizer_or_lm.tokenizer, tokenizer_or_lm.vocab_size, tokenizer_or_lm.eos_id
    elif hasattr(tokenizer_or_lm, "token_bytes"):
        tok = tokenizer_or_lm
        vocab_size = getattr(tok, "vocab_size", None) or len(tok.token_bytes)
        eos_id = getattr(tok, "eos_id", None)
    else:
        raise InputError("give a models.LanguageModel or a tokenizer with token_bytes (e.g. lm.tokenizer), "
                         f"got {type(tokenizer_or_lm).__name__}")
    token_bytes = [bytes(b) for b in tok.token_bytes]
    vocab_size = int(vocab_size)
    if eos_id is None or not 0 <= int(eos_id) < vocab_size:
        raise InputError(f"the tokenizer needs an EOS id in [0, {vocab_size}), got {eos_id!r}")
    if len(token_bytes) > vocab_size:
        raise InputError(f"the tokenizer has {len(token_bytes)} tokens but the vocabulary only {vocab_size}")
    return token_bytes + [b""] * (vocab_size - len(token_bytes)), vocab_size, int(eos_id)


class TokenRunner:
    """Runs every usable token's bytes through a byte DFA from many states at once.

    Tokens are sorted by length, longest first, so that at byte position j the tokens still
    running are a prefix of the sorted list: the work is (states) x (total token bytes).
    """

    def __init__(self, dfa: ByteDFA, token_bytes, usable: np.ndarray):
        lengths = np.array([len(token_bytes[i]) for i in usable], np.int64)
        order = np.argsort(-lengths, kind="stable")
        self.tokens = usable[order]  # token ids in run order
        lengths = lengths[order]
        width = int(lengths.max()) if len(lengths) else 0
        classes = np.zeros((len(self.tokens), width), np.int32)
        for k, t in enumerate(self.tokens):
            data = np.frombuffer(token_bytes[t], np.uint8)
            classes[k, : len(data)] = dfa.byte_class[data]
        self.classes = classes
        self.running = [int((lengths > j).sum()) for j in range(width)]
        self.trans = dfa.trans

    def run(self, states: np.ndarray, hit: np.ndarray | None = None):
        """End states [len(states), T] (and, given ``hit`` [S] bool, whether a hit state was
        entered after any byte) for the tokens in ``self.tokens`` order."""
        cur = np.repeat(np.asarray(states, np.int32)[:, None], len(self.tokens), axis=1)
        seen = np.zeros(cur.shape, bool) if hit is not None else None
        for j, a in enumerate(self.running):
            nxt = self.trans[cur[:, :a], self.classes[None, :a, j]]
            cur[:, :a] = nxt
            if seen is not None:
                seen[:, :a] |= hit[nxt]
        return cur, seen


class TokenDFA:
    """A byte DFA lifted to tokens: ``table[state, token] -> next state``.

    Only states reachable at token boundaries are kept, and every state from which no token
    sequence reaches an accepting state is merged into one ``dead`` state (so "live" means
    "can still finish by tokens", not only by bytes). EOS leaves the state unchanged; tokens
    with no bytes (specials, padding rows) lead to ``dead``.

    table [S, V] int32; accepting [S] bool; live [S] bool; allowed [S, V] bool: the token is
    possible from the state (its next state is live; the EOS column: the state accepts);
    byte_state [S]: the byte-DFA state each state stands for (``dead``: the byte DFA's dead).

    >>> from genppl.ppl.automata import compile_regex
    >>> tdfa = TokenDFA.build(compile_regex("ab|b"), [b"", b"a", b"b", b"ab"], eos_id=0)
    >>> tdfa.run([1, 2]) == tdfa.run([3]), bool(tdfa.accepting[tdfa.run([3])])
    (True, True)
    """

    def __init__(self, table, accepting, live, start: int, dead: int, eos_id, byte_state=None):
        self.table = table
        self.byte_state = byte_state
        self.accepting = accepting
        self.live = live
        self.eos_ids = _eos_list(eos_id)
        self.start, self.dead, self.eos_id = int(start), int(dead), self.eos_ids[0]
        allowed = live[table]
        allowed[:, list(self.eos_ids)] = accepting[:, None]
        self.allowed = allowed

    @property
    def num_states(self) -> int:
        return int(self.table.shape[0])

    @classmethod
    def build(cls, dfa: ByteDFA, token_bytes, eos_id: int, vocab_size: int | None = None,
              max_entries: int = 200_000_000) -> "TokenDFA":
        """Lift ``dfa`` to the vocabulary ``token_bytes`` (bytes of each token id).

        ``eos_id``: one id, or a list of ids that all end a sequence (the first is the main one).
        max_entries bounds states x vocabulary (the table's size) with a clear error.
        """
        vocab_size = len(token_bytes) if vocab_size is None else int(vocab_size)
        token_bytes = list(token_bytes) + [b""] * (vocab_size - len(token_bytes))
        eos_ids = _eos_list(eos_id)
        usable = np.array([i for i, b in enumerate(token_bytes) if b and i not in eos_ids], np.int64)
        runner = TokenRunner(dfa, token_bytes, usable)

        # breadth-first over DFA states reachable at token boundaries, in batches
        order = [dfa.dead] + ([dfa.start] if dfa.start != dfa.dead else [])
        found = set(order)
        rows = {dfa.dead: np.full(len(usable), dfa.dead, np.int32)}  # dead stays dead
        frontier = order[1:]
        batch = max(1, 4_000_000 // max(1, len(usable)))
        while frontier:
            todo, frontier = frontier[:batch], frontier[batch:]
            ends, _ = runner.run(np.array(todo))
            for s, row in zip(todo, ends):
                rows[s] = row
            for s in np.unique(ends):
                if int(s) not in found:
                    found.add(int(s))
                    order.append(int(s))
                    frontier.append(int(s))
            if len(order) * vocab_size > max_entries:
                raise InputError(f"the token table would exceed {max_entries} entries ({len(order)}+ states x "
                                 f"{vocab_size} tokens): simplify the constraint")

        # compact ids over the reachable states
        remap = np.full(dfa.num_states, -1, np.int64)
        remap[order] = np.arange(len(order))
        num = len(order)
        table = np.zeros((num, vocab_size), np.int32)  # column default: dead (id 0)
        for s in order:
            table[remap[s], runner.tokens] = remap[rows[s]]
        table[:, list(eos_ids)] = np.arange(num)[:, None]
        accepting = dfa.accepting[order]

        live = _reaches(table, accepting)
        live[0] = False
        # merge every non-live state into the dead state 0, keep live ones in order
        new_id = np.zeros(num, np.int32)
        keep = np.flatnonzero(live)
        new_id[keep] = np.arange(1, len(keep) + 1)
        table = new_id[table[np.concatenate([[0], keep])]]
        table[0] = 0
        start = int(new_id[remap[dfa.start]])
        accepting = np.concatenate([[False], accepting[keep]])
        live = np.concatenate([[False], np.ones(len(keep), bool)])
        byte_state = np.concatenate([[dfa.dead], np.asarray(order)[keep]]).astype(np.int32)
        return cls(table, accepting, live, start=start, dead=0, eos_id=eos_ids, byte_state=byte_state)

    def run(self, tokens, state: int | None = None) -> int:
        state = self.start if state is None else state
        for t in tokens:
            state = int(self.table[state, int(t)])
        return state

    def __repr__(self) -> str:
        return f"TokenDFA({self.num_states} states x {self.table.shape[1]} tokens)"


def _eos_list(eos_id) -> tuple[int, ...]:
    """``eos_id`` (an int or a non-empty list of ints) as a tuple of ints, main id first."""
    ids = (int(eos_id),) if np.ndim(eos_id) == 0 else tuple(int(i) for i in eos_id)
    if not ids:
        raise InputError("give at least one EOS id")
    return ids


def _reaches(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """[S] bool: states from which a token path reaches an accepting state (backward search
    over the distinct successor pairs)."""
    num, vocab = table.shape
    preds: list[set] = [set() for _ in range(num)]
    chunk = max(1, 4_000_000 // vocab)
    for lo in range(0, num, chunk):
        block = table[lo: lo + chunk]
        for k, row in enumerate(block):
            marks = np.zeros(num, bool)
            marks[row] = True
            for t in np.flatnonzero(marks):
                preds[t].add(lo + k)
    live = accepting.copy()
    stack = list(np.flatnonzero(live))
    while stack:
        for p in preds[stack.pop()]:
            if not live[p]:
                live[p] = True
                stack.append(p)
    return live

