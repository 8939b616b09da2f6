"""Hard constraints: token-level potentials whose log phi is 0 or -inf, and stop strings.

* :class:`TokenMask`, :class:`BannedTokens`: a fixed set of tokens is allowed / banned;
* :class:`MinLength`, :class:`MaxLength`: limits on the number of generated tokens;
* :class:`TruncatedLM`: the top-k / top-p support of the LM, renormalised at every step
  (the truncated LM as an explicit target);
* :class:`DFAPotential`: the continuation is accepted by a :class:`~genppl.ppl.automata.TokenDFA`;
  :class:`Regex` (``re.fullmatch`` semantics) and :class:`BannedStrings` (never contains any
  of the strings, across token boundaries) are DFA potentials compiled from a pattern or
  from a list of strings (:mod:`genppl.ppl.automata` does the compiling);
* :class:`StopStrings`: not a potential but the stop-string tables of
  ``ppl.Program(..., stop=[...])``: a particle finishes right after the first occurrence of
  any of the strings (the transition changes, not the weight).

Every one of them is data: its tables are pytree leaves (JAX arrays) and only shapes and
kinds are static, so two regexes (or two banned-string lists, two stop-string lists) whose
tables have equal shapes share one compiled program. Descriptive attributes (the pattern,
the strings, the host-side automata) are dropped when flattening (``static_exclude``): they
serve ``repr`` and host code only.

A DFA potential keeps per particle its DFA state s [n]; with table delta, accepting set F and
live states L (from which some token sequence reaches F),

    log phi_next(s, v) = 0 if delta(s, v) in L else -inf      (v not EOS)
    log phi_next(s, EOS) = 0 if s in F else -inf,   log phi_cap(s) = 0 if s in F else -inf,

so the increments sum to log 1[x is accepted] over every finished sequence x.

>>> import jax
>>> from genppl import models, ppl
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)   # tokens "$abcd"
>>> regex = Regex("a(b|c)*", lm)                 # token level, over lm's tokenizer
>>> regex.table.shape[1] == lm.vocab_size
True
>>> no_ab = BannedStrings(["ab"], lm)            # "a" then "b" is banned, even as two tokens
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError
from genppl.models.sampling import Processing, process_logits

from .automata import (ByteDFA, TokenDFA, TokenRunner, avoid_strings_dfa, compile_regex, encode_strings,
                       substring_dfa, vocabulary)
from .fields import Fields
from .potential import Potential

__all__ = ["BannedStrings", "BannedTokens", "DFAPotential", "MaxLength", "MinLength", "Regex", "StopStrings",
           "TokenMask"]


def _show(value) -> str:
    """A leaf for ``repr``: its value when concrete, '?' when traced."""
    try:
        array = np.asarray(value)
    except Exception:  # a tracer
        return "?"
    return str(array.tolist())


class TokenMask(Potential):
    """Only tokens in ``allowed`` (a [V] bool mask or a list of ids) may be generated.

    EOS is governed by the mask too: leave it allowed unless finishing is forbidden.
    Leaf: ``allowed`` [V] bool.
    """

    token_level = True
    data_fields = ("allowed",)

    def __init__(self, allowed, vocab_size: int | None = None):
        allowed = np.asarray(allowed)
        if allowed.dtype != bool:
            if vocab_size is None:
                raise InputError("give vocab_size when the mask is a list of token ids")
            ids = allowed.astype(int).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                raise InputError(f"token ids must be in [0, {vocab_size}), got {ids.tolist()}")
            mask = np.zeros((vocab_size,), bool)
            mask[ids] = True
            allowed = mask
        if allowed.ndim != 1:
            raise InputError(f"the mask must be one row [V] of booleans, got shape {allowed.shape}")
        self.allowed = jnp.asarray(allowed)

    def logw_next(self, pstate, lm_state):
        row = jnp.where(self.allowed, 0.0, -jnp.inf).astype(jnp.float32)
        return jnp.broadcast_to(row, lm_state.logits.shape)

    def __repr__(self) -> str:
        try:
            return f"TokenMask({int(np.asarray(self.allowed).sum())}/{self.allowed.shape[0]} allowed)"
        except Exception:  # traced
            return f"TokenMask(?/{self.allowed.shape[0]} allowed)"


class BannedTokens(Potential):
    """These token ids may never be generated. Leaf: ``token_ids`` [k] int32."""

    token_level = True
    data_fields = ("token_ids",)

    def __init__(self, token_ids):
        ids = np.asarray(token_ids).reshape(-1)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"banned tokens must be integer token ids, got {token_ids!r}")
        if ids.size and ids.min() < 0:
            raise InputError(f"token ids must be non-negative, got {ids.tolist()}")
        self.token_ids = jnp.asarray(ids.astype(np.int32))

    def logw_next(self, pstate, lm_state):
        logw = jnp.zeros(lm_state.logits.shape, jnp.float32)
        return logw.at[:, self.token_ids].set(-jnp.inf)

    def __repr__(self) -> str:
        return f"BannedTokens({_show(self.token_ids)})"


def _count(n, what: str):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"{what} must be a non-negative integer, got {n!r}")
    return jnp.asarray(int(n), jnp.int32)


class MinLength(Potential):
    """At least ``n`` tokens before EOS (a sequence cut at the cap must also have them).

    Leaf: ``n`` (int32 scalar); static: ``eos_id``.
    """

    token_level = True
    data_fields = ("n",)

    def __init__(self, n: int, eos_id: int):
        self.n, self.eos_id = _count(n, "the minimum length"), int(eos_id)

    def logw_next(self, pstate, lm_state):
        short = lm_state.num_generated < self.n
        logw = jnp.zeros(lm_state.logits.shape, jnp.float32)
        return logw.at[:, self.eos_id].set(jnp.where(short, -jnp.inf, 0.0))

    def logw_cap(self, pstate, lm_state):
        return jnp.where(lm_state.num_generated < self.n, -jnp.inf, 0.0)

    def __repr__(self) -> str:
        return f"MinLength({_show(self.n)})"


class MaxLength(Potential):
    """At most ``n`` tokens before EOS: after ``n`` tokens only EOS is allowed.

    Leaf: ``n`` (int32 scalar); static: ``eos_id``.
    """

    token_level = True
    data_fields = ("n",)

    def __init__(self, n: int, eos_id: int):
        self.n, self.eos_id = _count(n, "the maximum length"), int(eos_id)

    def logw_next(self, pstate, lm_state):
        full = (lm_state.num_generated >= self.n)[:, None]
        is_eos = jnp.arange(lm_state.logits.shape[-1]) == self.eos_id
        return jnp.where(full & ~is_eos[None], -jnp.inf, 0.0)

    def logw_cap(self, pstate, lm_state):
        return jnp.where(lm_state.num_generated > self.n, -jnp.inf, 0.0)

    def __repr__(self) -> str:
        return f"MaxLength({_show(self.n)})"


# ---- DFA constraints -------------------------------------------------------------------------

class TruncatedLM(Potential):
    """The LM truncated by top-k / top-p, renormalised at every step, as the target:

        pi(x) = prod_t p(x_t | x_<t) 1[x_t in S_t] / p(S_t | x_<t),

    S_t the top-k / top-p set of the LM's next-token law. This is the explicit way to target
    a truncated LM; proposals are never truncated (:mod:`ppl.proposals`), since a proposal
    that cannot propose some tokens would make log Z_hat estimate a smaller normaliser.
    Increments: log 1[v in S_t] - log p(S_t | x_<t) for every next token v (a token-level
    potential), so with alpha = 1 the locally optimal proposal is the truncated LM itself and
    Z = 1.
    """

    token_level = True

    def __init__(self, top_k: int | None = None, top_p: float | None = None):
        if top_k is None and top_p is None:
            raise InputError("TruncatedLM needs top_k and/or top_p (without them it is the LM itself)")
        self.processing = Processing(top_k=top_k, top_p=top_p)

    def logw_next(self, pstate, lm_state):
        log_p = jax.nn.log_softmax(lm_state.logits.astype(jnp.float32), -1)
        log_truncated = process_logits(lm_state.logits, self.processing)
        return jnp.where(jnp.isneginf(log_truncated), -jnp.inf, log_truncated - log_p)

    def __repr__(self) -> str:
        return f"TruncatedLM(top_k={self.processing.top_k}, top_p={self.processing.top_p})"

class DFAPotential(Potential):
    """A hard token-level constraint from a :class:`~genppl.ppl.automata.TokenDFA`: per
    particle a DFA state [n] (see the module docstring for the increments).

    ``logw_next`` is one gather (0 where the token keeps the state live, -inf otherwise; the
    EOS column is 0 iff the state accepts); a sequence cut at the length cap must be accepting.

    Leaves: ``table`` [S, V] (int16 below 2**15 states, else int32) next state,
    ``allowed`` [S, V] bool, ``accepting`` [S] bool, ``start`` int32 scalar. Static: ``dead``
    (the token DFA's dead state, 0). ``token_dfa`` (the host-side automaton) is kept for host
    code and dropped when flattening.
    """

    token_level = True
    data_fields = ("table", "allowed", "accepting", "start")
    static_exclude = ("token_dfa",)

    def __init__(self, token_dfa: TokenDFA):
        if not isinstance(token_dfa, TokenDFA):
            raise InputError("DFAPotential needs a ppl.automata.TokenDFA (e.g. TokenDFA.build(dfa, "
                             f"token_bytes, eos_id)), got {type(token_dfa).__name__}")
        self.token_dfa = token_dfa
        small = token_dfa.num_states < 2**15
        self.table = jnp.asarray(token_dfa.table.astype(np.int16 if small else np.int32))
        self.allowed = jnp.asarray(token_dfa.allowed)
        self.accepting = jnp.asarray(token_dfa.accepting)
        self.start = jnp.asarray(token_dfa.start, jnp.int32)
        self.dead = int(token_dfa.dead)
        self.eos_ids = tuple(getattr(token_dfa, "eos_ids", (token_dfa.eos_id,)))

    @property
    def num_states(self) -> int:
        return int(self.table.shape[0])

    def init(self, lm_state):
        return jnp.full(lm_state.length.shape, self.start, jnp.int32)

    def logw_next(self, pstate, lm_state):
        allowed = self.allowed[pstate]
        vocab = lm_state.logits.shape[-1]
        if allowed.shape[1] != vocab:  # static shapes: a tokenizer smaller than the LM's rows
            if allowed.shape[1] > vocab:
                raise InputError(f"the constraint was built for {allowed.shape[1]} tokens but the LM has {vocab}")
            allowed = jnp.pad(allowed, ((0, 0), (0, vocab - allowed.shape[1])))
        return jnp.where(allowed, 0.0, -jnp.inf).astype(jnp.float32)

    def update(self, pstate, lm_state, token):
        size = self.table.shape[1]
        nxt = self.table[pstate, jnp.minimum(token, size - 1)]
        return jnp.where(token < size, nxt, self.dead).astype(jnp.int32)

    def logw_cap(self, pstate, lm_state):
        return jnp.where(self.accepting[pstate], 0.0, -jnp.inf).astype(jnp.float32)

    def log_potential(self, tokens, num_tokens, eos):
        """log phi of whole continuations, for kernels that score sequences (MH:
        ``mcmc.build_kernel(log_potential=p.log_potential)``, ``power_mcmc(...)``): tokens [n, L]
        of which the first ``num_tokens`` [n] are generated (EOS, when ``eos`` [n], among
        them); 0 if the DFA run over them accepts, -inf otherwise. Traceable."""
        size = self.table.shape[1]

        def step(state, column):
            j, token = column
            moving = (j < num_tokens) & (token < size) & ~jnp.isin(token, jnp.asarray(self.eos_ids))
            nxt = self.table[state, jnp.minimum(token, size - 1)].astype(jnp.int32)
            return jnp.where(moving, nxt, state), None

        start = jnp.full(tokens.shape[:1], self.start, jnp.int32)
        positions = jnp.arange(tokens.shape[1])
        state, _ = jax.lax.scan(step, start, (positions, jnp.asarray(tokens, jnp.int32).T))
        return jnp.where(self.accepting[state], 0.0, -jnp.inf).astype(jnp.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_states} states)"


class Regex(DFAPotential):
    """The continuation must match ``pattern`` in full (``re.fullmatch`` semantics, on the
    UTF-8 bytes of the text; supported syntax: :mod:`genppl.ppl.automata.syntax`).

    tokenizer_or_lm: a :class:`models.LanguageModel` (its tokenizer, vocabulary and EOS) or a
    tokenizer with ``token_bytes`` and ``eos_id``. ``unicode``: exact Unicode ``\\d \\w \\s``
    (by default they match ASCII only); ``max_states`` bounds the byte DFA.

    Host-only attributes (dropped when flattening): ``pattern``, ``byte_dfa``, ``token_dfa``.

    >>> import jax
    >>> from genppl import models, ppl
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)   # tokens "$abcd"
    >>> program = ppl.Program(lm, [1], max_new_tokens=4, potential=ppl.Regex("(ab)+c?", lm))
    >>> state = program.init(4)
    >>> for k in range(4):
    ...     state, logw = program.step(jax.random.key(k), state, ppl.proposals.locally_optimal())
    >>> all(t in ("ab", "abc", "abab") for t in program.finished_text(state))
    True
    """

    static_exclude = ("token_dfa", "pattern", "byte_dfa")

    def __init__(self, pattern: str, tokenizer_or_lm, *, unicode: bool = False, max_states: int = 10_000):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        self.pattern = pattern
        self.byte_dfa = compile_regex(pattern, unicode=unicode, max_states=max_states)
        super().__init__(TokenDFA.build(self.byte_dfa, token_bytes, eos_id, vocab_size))

    def __repr__(self) -> str:
        return f"Regex({getattr(self, 'pattern', '?')!r}, {self.num_states} states)"


class BannedStrings(DFAPotential):
    """The continuation must never contain any of ``strings`` (checked on bytes, across token
    boundaries): a token-level hard constraint
    (:func:`~genppl.ppl.automata.avoid_strings_dfa` lifted to the tokens).

    Host-only attributes (dropped when flattening): ``strings``, ``byte_dfa``, ``token_dfa``.

    >>> from genppl import models
    >>> tok = models.CharTokenizer("$abe", eos_id=0)
    >>> ban = BannedStrings(["e"], tok)                    # a lipogram
    >>> ban.token_dfa.allowed[ban.token_dfa.start].tolist()
    [True, True, True, False]
    """

    static_exclude = ("token_dfa", "strings", "byte_dfa")

    def __init__(self, strings, tokenizer_or_lm):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        encoded = encode_strings(strings, "banned strings")
        self.strings = tuple(s.decode(errors="replace") for s in encoded)
        self.byte_dfa = avoid_strings_dfa(encoded)
        super().__init__(TokenDFA.build(self.byte_dfa, token_bytes, eos_id, vocab_size))

    def __repr__(self) -> str:
        strings = getattr(self, "strings", None)
        return f"BannedStrings({list(strings)!r})" if strings is not None else \
            f"BannedStrings({self.num_states} states)"


# ---- stop strings ----------------------------------------------------------------------------
class StopStrings(Fields):
    """Stop generation right after the first occurrence of any of ``strings``.

    Per particle, a state of the strings' Aho–Corasick automaton
    (:func:`~genppl.ppl.automata.substring_dfa`); precomputed for every state s and token t:
    ``next_state[s, t]`` and ``stops[s, t]`` (reading t's bytes from s completes a string).
    EOS and tokens without bytes leave the state and never stop. Only generated text is
    searched (not the prompt). Give it to ``ppl.Program(..., stop=...)`` (a list of strings
    there builds one).

    A pytree. Leaves: ``next_state`` [S, V] int32, ``stops`` [S, V] bool, and the byte-level
    automaton ``byte_table`` [S, 256] int32, ``byte_accepting`` [S] bool (used by :meth:`cut`,
    host-side). Static: ``start`` (0), ``vocab_size``, ``eos_id``. ``strings`` and
    ``byte_dfa`` are for display and host code only: dropped when flattening, so two lists of
    stop strings with equal table shapes share one compiled program.

    >>> from genppl import models
    >>> stop = StopStrings(["\\n"], models.CharTokenizer("$a\\n", eos_id=0))
    >>> stop.stops[stop.start].tolist()
    [False, False, True]
    """

    data_fields = ("next_state", "stops", "byte_table", "byte_accepting")
    static_fields = ("start", "vocab_size", "eos_id")

    def __init__(self, strings, tokenizer_or_lm):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        encoded = encode_strings(strings, "stop strings")
        self.strings = tuple(s.decode(errors="replace") for s in encoded)
        dfa = substring_dfa(encoded)
        usable = np.array([i for i, b in enumerate(token_bytes) if b and i != eos_id], np.int64)
        runner = TokenRunner(dfa, token_bytes, usable)
        states = np.arange(dfa.num_states)
        ends, hit = runner.run(states, hit=dfa.accepting)
        next_state = np.repeat(states[:, None].astype(np.int32), vocab_size, axis=1)
        next_state[:, runner.tokens] = ends
        stops = np.zeros((dfa.num_states, vocab_size), bool)
        stops[:, runner.tokens] = hit
        self.byte_dfa: ByteDFA = dfa
        self.next_state, self.stops = jnp.asarray(next_state), jnp.asarray(stops)
        self.byte_table = jnp.asarray(dfa.table().astype(np.int32))
        self.byte_accepting = jnp.asarray(dfa.accepting)
        self.start, self.vocab_size, self.eos_id = int(dfa.start), int(vocab_size), int(eos_id)

    # ---- host side ----------------------------------------------------------------------
    def device_tables(self):
        """(next_state, stops) as JAX arrays."""
        return self.next_state, self.stops

    def cut(self, text: str) -> str:
        """``text`` up to the end of the first occurrence of a stop string (unchanged if none).

        Runs the byte automaton over the text's UTF-8 bytes (host-side, on concrete leaves);
        a stop string ends on a character boundary, so the cut is at one too."""
        data = text.encode()
        host = getattr(self, "byte_dfa", None)  # the host copy, when this object has it
        table, accepting = (host.table(), host.accepting) if host is not None else \
            (np.asarray(self.byte_table), np.asarray(self.byte_accepting))
        state = self.start
        for k, b in enumerate(data):
            state = table[state, b]
            if accepting[state]:
                return data[: k + 1].decode(errors="replace")
        return text

    def __repr__(self) -> str:
        strings = getattr(self, "strings", None)
        return f"StopStrings({list(strings)!r})" if strings is not None else \
            f"StopStrings({self.next_state.shape[0]} states)"
