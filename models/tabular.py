"""An exact tabular language model, small enough to enumerate every sequence.

The next-token distribution is an explicit table indexed by the whole generated prefix
(the prompt is context only). Prefixes are sequences of non-EOS tokens of length
0..max_len-1; a prefix of length ``max_len`` only allows EOS, which is where generation is
cut. Tests use :meth:`TabularLM.enumerate` to compute exact targets and normalising constants.
"""

from __future__ import annotations

import itertools
import string

import jax
import jax.numpy as jnp
import numpy as np

from .interface import InputError, LanguageModel
from .tokenizer import CharTokenizer

#: advance() unrolls up to this many tokens per call (longer blocks use a scan)
_UNROLL = 8


@jax.tree_util.register_pytree_node_class
class TabularLM(LanguageModel):
    """Explicit next-token tables over a vocabulary of ``vocab_size`` tokens (EOS included).

    table: [num_prefixes, V] log-probabilities; row ``code(prefix)`` is p(. | prefix).
    Use :meth:`random` to draw one, :meth:`enumerate` to list every finished sequence.
    """

    def __init__(self, table, vocab_size: int, eos_id: int, max_len: int):
        self.table = table
        self.vocab_size = int(vocab_size)
        self.eos_id = int(eos_id)
        self.max_len = int(max_len)
        self.max_length = None
        self.tokenizer = CharTokenizer(_alphabet(vocab_size, eos_id), eos_id)

    # pytree: the table is the only leaf
    def tree_flatten(self):
        return (self.table,), (self.vocab_size, self.eos_id, self.max_len)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    @property
    def num_symbols(self) -> int:
        """Number of non-EOS tokens."""
        return self.vocab_size - 1

    @staticmethod
    def num_prefixes(vocab_size: int, max_len: int) -> int:
        k = vocab_size - 1
        return sum(k**depth for depth in range(max_len + 1))

    @classmethod
    def random(cls, key, vocab_size: int = 4, max_len: int = 4, eos_id: int = 0,
               concentration: float = 1.0, eos_boost: float = 0.0) -> "TabularLM":
        """Random next-token tables: logits ~ N(0, concentration^-1), EOS shifted by eos_boost."""
        if vocab_size < 2:
            raise InputError("a tabular LM needs vocab_size >= 2 (at least one token besides EOS)")
        if max_len < 1:
            raise InputError("max_len must be at least 1")
        rows = cls.num_prefixes(vocab_size, max_len)
        if rows > 2_000_000:
            raise InputError(f"{rows} prefixes is too many to tabulate: lower vocab_size or max_len")
        logits = jax.random.normal(key, (rows, vocab_size)) / np.sqrt(concentration)
        logits = logits.at[:, eos_id].add(eos_boost)
        table = jax.nn.log_softmax(logits, axis=-1)
        table = table.at[-(vocab_size - 1) ** max_len:].set(_eos_only(vocab_size, eos_id))
        return cls(table, vocab_size, eos_id, max_len)

    # ---- prefix codes: offset(depth) + base-(V-1) number of the symbols -----------------
    def _offset(self, depth):
        k = self.num_symbols
        return (k**depth - 1) // (k - 1) if k > 1 else depth

    def _symbol(self, token):
        return jnp.where(token > self.eos_id, token - 1, token)

    def code(self, prefix) -> int:
        """Row index of a prefix (a sequence of non-EOS tokens)."""
        depth, local = len(prefix), 0
        for t in prefix:
            local = local * self.num_symbols + (t - 1 if t > self.eos_id else t)
        return int(self._offset(depth) + local)

    # ---- LanguageModel primitives -------------------------------------------------------
    def _initial(self, prompt, prompt_length, capacity):
        # like a KV cache, the cache is positional: the prefix code and depth after each
        # position, so truncation rewinds it. Prompt positions hold depth -1 (the empty prefix).
        in_prompt = jnp.arange(capacity) < prompt_length
        cache = {"code": jnp.zeros((1, capacity), jnp.int32),
                 "depth": jnp.where(in_prompt, -1, 0).astype(jnp.int32)[None]}
        return self.table[0], cache

    def _forward(self, cache, tokens, positions, mask):
        rows = jnp.arange(tokens.shape[0])
        sink = self._offset(self.max_len)  # an EOS-only row: finished or at the length cap

        def one(cache, inputs):
            token, pos, real = inputs
            code = cache["code"][rows, pos - 1]
            depth = jnp.maximum(cache["depth"][rows, pos - 1], 0)
            local = (code - self._offset(depth)) * self.num_symbols + self._symbol(token)
            next_code = jnp.where((token == self.eos_id) | (depth >= self.max_len), sink,
                                  self._offset(depth + 1) + local)
            next_depth = jnp.minimum(depth + 1, self.max_len)
            # a prompt token fed again (after truncation) is context, not part of the prefix
            is_prompt = cache["depth"][rows, jnp.minimum(pos, cache["depth"].shape[1] - 1)] < 0
            next_code = jnp.where(is_prompt, 0, next_code)
            next_depth = jnp.where(is_prompt, -1, next_depth)
            pos = jnp.where(real, pos, cache["code"].shape[1])  # masked: dropped
            cache = {"code": cache["code"].at[rows, pos].set(next_code, mode="drop"),
                     "depth": cache["depth"].at[rows, pos].set(next_depth, mode="drop")}
            return cache, self.table[next_code]

        if tokens.shape[1] <= _UNROLL:
            # a Python loop, not a scan: called eagerly (``lm.extend`` outside jit), a scan would
            # be re-traced and re-compiled on every call; unrolled, each op's compilation is reused
            outs = []
            for t in range(tokens.shape[1]):
                cache, row = one(cache, (tokens[:, t], positions[:, t], mask[:, t]))
                outs.append(row)
            return jnp.stack(outs, axis=1), cache
        cache, logits = jax.lax.scan(one, cache, (tokens.T, positions.T, mask.T))
        return jnp.swapaxes(logits, 0, 1), cache

    # ---- exact answers ------------------------------------------------------------------
    def log_prob(self, seq) -> float:
        """log p(seq) of a continuation (ending in EOS, or of length max_new_tokens)."""
        table = np.asarray(self.table, np.float64)
        total, prefix = 0.0, []
        for t in seq:
            total += table[self.code(prefix), t]
            if t == self.eos_id:
                break
            prefix.append(t)
        return total

    def enumerate(self, max_new_tokens: int | None = None):
        """Every finished continuation and its exact log-probability (float64).

        A continuation ends with EOS, or is cut at ``max_new_tokens`` tokens (default: the
        table's ``max_len``). Returns (list of token tuples, np.ndarray of log-probs).
        """
        cap = self.max_len if max_new_tokens is None else int(max_new_tokens)
        if cap > self.max_len:
            raise InputError(f"max_new_tokens={cap} exceeds the table's max_len={self.max_len}")
        table = np.asarray(self.table, np.float64)
        symbols = [t for t in range(self.vocab_size) if t != self.eos_id]
        seqs, logps = [], []
        for depth in range(cap + 1):
            for prefix in itertools.product(symbols, repeat=depth):
                lp = sum(table[self.code(prefix[:i]), t] for i, t in enumerate(prefix))
                if depth < cap:
                    seqs.append((*prefix, self.eos_id))
                    logps.append(lp + table[self.code(prefix), self.eos_id])
                else:
                    seqs.append(prefix)
                    logps.append(lp)
        return seqs, np.array(logps)

    def __repr__(self) -> str:
        return f"TabularLM(vocab_size={self.vocab_size}, eos_id={self.eos_id}, max_len={self.max_len})"


def _eos_only(vocab_size, eos_id):
    return jnp.full((vocab_size,), -jnp.inf).at[eos_id].set(0.0)


def _alphabet(vocab_size, eos_id):
    letters = list(string.ascii_lowercase + string.ascii_uppercase + string.digits)
    if vocab_size > len(letters):
        letters += [chr(0x100 + i) for i in range(vocab_size - len(letters))]
    letters = letters[: vocab_size - 1]
    letters.insert(eos_id, "$")
    return "".join(letters)

