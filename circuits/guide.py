"""The HMM x DFA guide: exact p_HMM(constraint | prefix, next token) as a token-level twist.

Given an HMM (gamma, A, B) over the LM's vocabulary and a token DFA (delta, start, accepting F)
for a constraint, generation of at most T = ``max_new_tokens`` tokens, ending at the first EOS
(allowed after at least ``min_new_tokens`` tokens) or cut at T. Backward tables, independent
of the prefix (ALGORITHMS.md), with k the number of token slots still open:

    D_0(s, z) = 1[s in F]
    D_k(s, z) = sum_z' A[z, z'] ( B[z', EOS] 1[s in F] 1[T - k >= min]
                                  + sum_{v != EOS} B[z', v] D_{k-1}(delta(s, v), z') )

(the EOS term sums over every remaining length at which the sequence may end). With the
predictive forward message alpha_g(z) = p(z_g | x_<g) after g tokens, for every next token v

    psi(x_<g v) = p_HMM(constraint | x_<g, v)
                = sum_z alpha_g(z) B[z, v] D_{T-g-1}(delta(s, v), z) / sum_z alpha_g(z) B[z, v]

and psi(x_<g EOS) = 1[s in F] 1[g >= min]. :class:`HMMGuide` is a :class:`ppl.Potential`
whose increments are log psi(x_<g v) - log psi(x_<g) (psi of the empty prefix taken as 1),
the last one being the exact DFA check divided by psi: they telescope to
log 1[x satisfies the constraint and its length limits], so the target is
p_LM(x) * 1[constraint], whatever the HMM. With ``Program(proposal="optimal")`` the proposal
is p_LM(v) psi(x_<g v) renormalised: the Ctrl-G / GeLaTo sampler, with SMC weights on top.

The tables are computed once, in one jitted function, in O(|S| V h + T (|S|^2 h + |S| h^2))
(tokens are first aggregated per DFA transition, so the recursion never touches V).

>>> import jax
>>> from genppl import models, ppl
>>> from genppl.circuits import HMM, constraint_dfa
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=4)    # "$abc"
>>> hmm = HMM.random(jax.random.key(1), num_states=3, vocab_size=4)
>>> guide = HMMGuide(hmm, constraint_dfa(lm, keywords=["ab"], whole_word=False), max_new_tokens=4)
>>> program = ppl.Program(lm, [1], max_new_tokens=4, potential=guide)
>>> texts = constrained_sample(program, 16, jax.random.key(2))[0]
>>> all("ab" in t for t in texts)
True
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError, check_positive_int
from genppl.ppl.potential import Potential
from genppl.ppl.regex import TokenDFA

from .hmm import HMM, log_matmul

__all__ = ["HMMGuide", "backward_tables", "constrained_sample"]

#: the smallest psi given to a token from which the constraint can still be met
LOG_PSI_FLOOR = -80.0
#: at most this many token classes: one matmul per class; above it, one per successor state
MAX_CLASSES = 64


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _backward_tables(log_trans, log_emit, table, accepting, eos_id: int, horizon: int, min_new: int):
    num_states = table.shape[0]
    emit = jnp.exp(log_emit)  # [h, V]
    eos_emit = emit[:, eos_id]
    body_emit = emit.at[:, eos_id].set(0.0)
    # agg[s, s', z] = sum over non-EOS v with delta(s, v) = s' of B[z, v]
    agg = jax.vmap(lambda row: jax.ops.segment_sum(body_emit.T, row, num_segments=num_states))(table)
    trans_t = jnp.exp(log_trans).T
    acc = accepting.astype(emit.dtype)

    def step(prev, k):
        may_end = (horizon - k >= min_new).astype(emit.dtype)
        g = jnp.einsum("spz,pz->sz", agg, prev) + acc[:, None] * eos_emit[None, :] * may_end
        cur = g @ trans_t
        return cur, cur

    d0 = jnp.broadcast_to(acc[:, None], (num_states, emit.shape[0]))
    _, rest = jax.lax.scan(step, d0, jnp.arange(1, horizon + 1))
    return jnp.concatenate([d0[None], rest], 0)


def backward_tables(hmm: HMM, token_dfa: TokenDFA, max_new_tokens: int, min_new_tokens: int = 0) -> jax.Array:
    """D [T+1, S, h]: D[k, s, z] = p_HMM(the constraint holds at the end | DFA state s, the
    last emitted token's hidden state z, k token slots left)."""
    _check(hmm, token_dfa, max_new_tokens, min_new_tokens)
    return _backward_tables(hmm.log_trans, hmm.log_emit, jnp.asarray(token_dfa.table),
                            jnp.asarray(token_dfa.accepting), token_dfa.eos_id, int(max_new_tokens),
                            int(min_new_tokens))


def _check(hmm, token_dfa, max_new_tokens, min_new_tokens):
    if not isinstance(hmm, HMM):
        raise InputError(f"the guide needs a circuits.HMM, got {type(hmm).__name__}")
    if not isinstance(token_dfa, TokenDFA):
        raise InputError("the guide needs a ppl.TokenDFA (e.g. circuits.constraint_dfa(lm, keywords=[...])), "
                         f"got {type(token_dfa).__name__}")
    if token_dfa.table.shape[1] != hmm.vocab_size:
        raise InputError(f"the HMM has {hmm.vocab_size} tokens but the DFA {token_dfa.table.shape[1]}: "
                         "build both over the same LM vocabulary")
    check_positive_int(max_new_tokens, "max_new_tokens")
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, (int, np.integer)) \
            or not 0 <= min_new_tokens <= max_new_tokens:
        raise InputError(f"min_new_tokens must be an integer in [0, max_new_tokens], got {min_new_tokens!r}")


def _reachable(token_dfa: TokenDFA, horizon: int, min_new: int) -> np.ndarray:
    """[T+1, S] bool: from state s, with k token slots left, some token sequence ends accepted
    (the support of D_k(s, .) when the HMM gives every token and transition mass)."""
    body = np.delete(token_dfa.table, token_dfa.eos_id, axis=1)
    succ = [np.unique(row) for row in body]
    reach = np.zeros((horizon + 1, token_dfa.num_states), bool)
    reach[0] = token_dfa.accepting
    for k in range(1, horizon + 1):
        ends = token_dfa.accepting & (horizon - k >= min_new)
        reach[k] = ends | np.array([reach[k - 1][nxt].any() for nxt in succ])
    return reach


class HMMGuide(Potential):
    """Token-level twist p_HMM(constraint | x_<t, v) times the exact constraint (see module).

    hmm: a :class:`circuits.HMM` over the LM's vocabulary; token_dfa: a :class:`ppl.TokenDFA`
    over the same vocabulary (:func:`circuits.constraint_dfa`); max_new_tokens: T, the
    horizon (give the Program the same value; the target also limits the length to T);
    min_new_tokens: EOS is allowed only after that many tokens.

    Per particle state: ``alpha`` [h] log p(z_g | x_<g) (normalised forward message),
    ``dfa`` the DFA state, ``log_psi`` the current log psi(x_<g), and ``next`` [V] the row
    log psi(x_<g v) (computed once per token, in ``update``). Where float32 underflows, psi
    is floored at exp(LOG_PSI_FLOOR) for every token from which the DFA can still accept in
    time, so that no satisfiable continuation is ever ruled out.
    """

    token_level = True

    def __init__(self, hmm: HMM, token_dfa: TokenDFA, max_new_tokens: int, min_new_tokens: int = 0):
        _check(hmm, token_dfa, max_new_tokens, min_new_tokens)
        self.hmm = hmm.astype(jnp.result_type(float))
        self.token_dfa = token_dfa
        self.max_new_tokens, self.min_new_tokens = int(max_new_tokens), int(min_new_tokens)
        self.eos_id = token_dfa.eos_id
        self.tables = backward_tables(self.hmm, token_dfa, self.max_new_tokens, self.min_new_tokens)
        self._reach = jnp.asarray(_reachable(token_dfa, self.max_new_tokens, self.min_new_tokens))
        self._table = jnp.asarray(token_dfa.table)
        self._accepting = jnp.asarray(token_dfa.accepting)
        self._emit = jnp.exp(self.hmm.log_emit)
        # tokens that every DFA state maps alike form a class; with few classes the guide is
        # one [n, h] x [h, |class|] product per class (n h V in all), else a product per
        # distinct successor state (slot) of the particle's state
        columns, cls = np.unique(token_dfa.table, axis=1, return_inverse=True)
        cls = cls.reshape(-1)
        self._by_class = columns.shape[1] <= MAX_CLASSES
        if self._by_class:
            order = np.argsort(cls, kind="stable")
            self._class_next = jnp.asarray(columns.astype(np.int32))  # [S, C]
            self._bounds = tuple(int(b) for b in np.cumsum(np.bincount(cls, minlength=columns.shape[1])))
            self._emit_sorted = self._emit[:, order]
            self._unsort = jnp.asarray(np.argsort(order).astype(np.int32))
        else:
            rows = [np.unique(row, return_inverse=True) for row in token_dfa.table]
            width = max(len(u) for u, _ in rows)
            succ = np.full((len(rows), width), token_dfa.dead, np.int32)
            for i, (u, _) in enumerate(rows):
                succ[i, :len(u)] = u
            self._succ = jnp.asarray(succ)
            self._slot = jnp.asarray(np.stack([inv.reshape(-1) for _, inv in rows]).astype(np.int32))

    # ---- the pure computations --------------------------------------------------------------
    def _may_end(self, state, generated):
        return self._accepting[state] & (generated >= self.min_new_tokens)

    def log_psi_next(self, pstate, generated) -> jax.Array:
        """log psi(x_<g v) [n, V] for every next token v, given g = ``generated`` [n]."""
        alpha = jnp.exp(pstate["alpha"])  # [n, h]
        k = jnp.clip(self.max_new_tokens - generated - 1, 0, self.max_new_tokens)
        state = pstate["dfa"]
        if self._by_class:
            weighted = alpha[:, None, :] * self.tables[k[:, None], self._class_next[state]]  # [n, C, h]
            starts = (0,) + self._bounds[:-1]
            parts = [weighted[:, c] @ self._emit_sorted[:, lo:hi]
                     for c, (lo, hi) in enumerate(zip(starts, self._bounds)) if hi > lo]
            num = jnp.concatenate(parts, -1)[:, self._unsort]
        else:
            future = self.tables[k[:, None], self._succ[state]]  # [n, m, h]
            per_slot = jnp.einsum("nmz,zv->nmv", alpha[:, None, :] * future, self._emit)  # [n, m, V]
            num = jnp.take_along_axis(per_slot, self._slot[state][:, None, :], axis=1)[:, 0]
        den = alpha @ self._emit  # p(x_g = v | x_<g)
        log_psi = jnp.log(num) - jnp.log(jnp.where(den > 0, den, 1.0))
        # psi > 0 wherever the DFA can still accept in time, even if float32 underflowed or the
        # HMM gives the token no mass: any positive twist leaves the target exact
        possible = self._reach[k[:, None], self._table[state]]
        log_psi = jnp.where(possible, jnp.maximum(log_psi, LOG_PSI_FLOOR), -jnp.inf)
        log_psi = log_psi.at[:, self.eos_id].set(jnp.where(self._may_end(state, generated), 0.0, -jnp.inf))
        # past the horizon nothing but EOS may follow
        return jnp.where((generated >= self.max_new_tokens)[:, None] & (jnp.arange(den.shape[1]) != self.eos_id),
                         -jnp.inf, log_psi)

    # ---- the Potential contract ---------------------------------------------------------------
    def init(self, lm_state):
        n = lm_state.length.shape[0]
        self._check_vocab(lm_state)
        pstate = {"alpha": jnp.broadcast_to(self.hmm.log_init, (n, self.hmm.num_states)),
                  "dfa": jnp.full((n,), self.token_dfa.start, jnp.int32),
                  "log_psi": jnp.zeros((n,), self.tables.dtype)}
        return {**pstate, "next": self.log_psi_next(pstate, lm_state.num_generated)}

    def _check_vocab(self, lm_state):
        if lm_state.logits.shape[-1] != self.hmm.vocab_size:
            raise InputError(f"the guide was built for {self.hmm.vocab_size} tokens but the LM has "
                             f"{lm_state.logits.shape[-1]}")

    def logw_next(self, pstate, lm_state):
        cur = pstate["log_psi"]
        inc = pstate["next"] - jnp.where(jnp.isneginf(cur), 0.0, cur)[:, None]
        return jnp.where(jnp.isneginf(cur)[:, None], -jnp.inf, inc).astype(jnp.float32)

    def update(self, pstate, lm_state, token):
        # the chosen token's psi is read from the row that logw_next used, so the increments
        # telescope exactly; then the next row is computed once, here
        chosen = jnp.take_along_axis(pstate["next"], token[:, None], 1)[:, 0]
        log_psi = jnp.where(jnp.isneginf(pstate["log_psi"]), -jnp.inf, chosen)
        joint = pstate["alpha"] + self.hmm.log_emit.T[token]  # log p(z_g, x_g | x_<g)
        new_alpha = log_matmul(joint, self.hmm.log_trans)
        norm = jax.nn.logsumexp(new_alpha, -1, keepdims=True)
        new_alpha = jnp.where(jnp.isfinite(norm), new_alpha - norm, pstate["alpha"])
        new = {"alpha": new_alpha, "dfa": self._table[pstate["dfa"], token].astype(jnp.int32), "log_psi": log_psi}
        return {**new, "next": self.log_psi_next(new, lm_state.num_generated)}

    def logw_cap(self, pstate, lm_state):
        cur = pstate["log_psi"]
        ok = self._accepting[pstate["dfa"]] & (lm_state.num_generated >= self.min_new_tokens) & ~jnp.isneginf(cur)
        return jnp.where(ok, -cur, -jnp.inf).astype(jnp.float32)

    def __repr__(self) -> str:
        return (f"HMMGuide({self.hmm.num_states} hidden states x {self.token_dfa.num_states} DFA states, "
                f"T={self.max_new_tokens})")


@functools.partial(jax.jit, static_argnums=(2,))
def _sample_loop(program, state, steps, key):
    def body(i, carry):
        state, logw, key = carry
        key, sub = jax.random.split(key)
        state, inc = program.step(sub, state)
        return state, logw + inc, key

    logw = jnp.zeros(state.done.shape, jnp.float32)
    state, logw, _ = jax.lax.fori_loop(0, steps, body, (state, logw, key))
    return state, logw


def constrained_sample(program, n: int, key):
    """Sample n continuations from ``program`` by its proposal alone (no resampling): with an
    :class:`HMMGuide` and ``proposal="optimal"`` this is the standalone guided sampler.

    Returns (texts, token ids, log importance weights [n] towards the program's target,
    log p_LM [n]). Weights are -inf for particles that hit a dead end.
    """
    from genppl.ppl.program import Program

    if not isinstance(program, Program):
        raise InputError(f"constrained_sample needs a ppl.Program, got {type(program).__name__}")
    check_positive_int(n, "n")
    state = program.init(n)
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    state, logw = _sample_loop(program.replace(prompt_ids=(0,)), state, program.max_new_tokens, key)
    return (program.finished_text(state), state.lm.generated(), np.asarray(logw, np.float64),
            np.asarray(state.log_p, np.float64))
