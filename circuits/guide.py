"""The HMM x DFA guide: exact p_HMM(constraint | prefix, next token) as a token-level twist.

Given an HMM (gamma, A, B) over the LM's vocabulary and a token DFA (delta, start, accepting F)
for a constraint, generation of at most T = ``max_new_tokens`` tokens, ending at the first EOS
(allowed after at least ``min_new_tokens`` tokens) or cut at T. Backward tables, independent
of the prefix, with k the number of token slots still open:

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
p_LM(x) * 1[constraint], whatever the HMM. With the locally optimal proposal
(:func:`ppl.proposals.locally_optimal`, the default of the kernels) the proposal is
p_LM(v) psi(x_<g v) renormalised: the Ctrl-G / GeLaTo sampler, with SMC weights on top.

Why D_k is right: p_HMM(constraint | x_<g v) sums, over the hidden state z of x_g and every
continuation, p(z | x_<g, v) times the probability that the continuation drives the DFA from
delta(s, v) to F within the k = T - g - 1 remaining slots; by the Markov property that is
D_k(delta(s, v), z), and p(z | x_<g, v) ∝ alpha_g(z) B[z, v]. D_k itself is the same sum one
token further: move z -> z' (A), then either emit EOS (B[z', EOS], allowed if s accepts and
the length is at least ``min``) or a token v' (B[z', v']) and continue from delta(s, v').

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
from genppl.ppl.automata import TokenDFA
from genppl.ppl.potential import Potential

from .hmm import HMM, log_matmul

__all__ = ["HMMGuide", "backward_tables", "constrained_sample", "reachable", "sample_loop"]

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
        raise InputError("the guide needs a ppl.automata.TokenDFA (e.g. circuits.constraint_dfa(lm, keywords=[...])), "
                         f"got {type(token_dfa).__name__}")
    if token_dfa.table.shape[1] != hmm.vocab_size:
        raise InputError(f"the HMM has {hmm.vocab_size} tokens but the DFA {token_dfa.table.shape[1]}: "
                         "build both over the same LM vocabulary")
    check_positive_int(max_new_tokens, "max_new_tokens")
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, (int, np.integer)) \
            or not 0 <= min_new_tokens <= max_new_tokens:
        raise InputError(f"min_new_tokens must be an integer in [0, max_new_tokens], got {min_new_tokens!r}")


def reachable(token_dfa: TokenDFA, horizon: int, min_new: int = 0) -> np.ndarray:
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

    hmm: a :class:`circuits.HMM` over the LM's vocabulary; token_dfa: a
    :class:`ppl.automata.TokenDFA` over the same vocabulary (:func:`circuits.constraint_dfa`);
    max_new_tokens: T, the horizon (give the Program the same value; the target also limits
    the length to T); min_new_tokens: EOS is allowed only after that many tokens;
    max_classes: at most this many token classes for the per-class computation (default
    ``MAX_CLASSES``).

    Per particle state: ``alpha`` [h] log p(z_g | x_<g) (normalised forward message),
    ``dfa`` the DFA state, ``log_psi`` the current log psi(x_<g), and ``next`` [V] the row
    log psi(x_<g v) (computed once per token, in ``update``). Where float32 underflows, psi
    is floored at exp(LOG_PSI_FLOOR) for every token from which the DFA can still accept in
    time, so that no satisfiable continuation is ever ruled out.

    A pytree. Leaves: ``hmm`` (the HMM, itself a pytree), ``tables`` [T+1, S, h] (D_k),
    ``reach`` [T+1, S] bool (:func:`reachable`), the DFA's ``table`` [S, V], ``accepting`` [S]
    and ``start``, ``emit`` [h, V] = B, and for the per-class computation ``class_next``
    [S, C], ``emit_sorted`` [h, V] (columns grouped by class), ``unsort`` [V] (else ``succ``
    [S, m] and ``slot`` [S, V]; the unused ones are None). Static: ``max_new_tokens``,
    ``min_new_tokens``, ``eos_id``, ``by_class`` and ``bounds``: the end of each token class
    in ``emit_sorted``, a tuple of C ints. ``bounds`` depends on the DFA (how many tokens each
    class holds), so two guides share one compiled program only if their DFAs split the
    vocabulary into classes of equal sizes; it is static because it fixes the shapes of the
    per-class matrix products. ``token_dfa`` (host-side) is dropped when flattening.
    """

    token_level = True
    data_fields = ("hmm", "tables", "reach", "table", "accepting", "start", "emit", "class_next", "emit_sorted",
                   "unsort", "succ", "slot")
    static_exclude = ("token_dfa",)

    def __init__(self, hmm: HMM, token_dfa: TokenDFA, max_new_tokens: int, min_new_tokens: int = 0,
                 max_classes: int | None = None):
        _check(hmm, token_dfa, max_new_tokens, min_new_tokens)
        self.hmm = hmm.astype(jnp.result_type(float))
        self.token_dfa = token_dfa
        self.max_new_tokens, self.min_new_tokens = int(max_new_tokens), int(min_new_tokens)
        self.eos_id = int(token_dfa.eos_id)
        self.tables = backward_tables(self.hmm, token_dfa, self.max_new_tokens, self.min_new_tokens)
        self.reach = jnp.asarray(reachable(token_dfa, self.max_new_tokens, self.min_new_tokens))
        self.table = jnp.asarray(token_dfa.table)
        self.accepting = jnp.asarray(token_dfa.accepting)
        self.start = jnp.asarray(token_dfa.start, jnp.int32)
        self.emit = jnp.exp(self.hmm.log_emit)
        # tokens that every DFA state maps alike form a class; with few classes the guide is
        # one [n, h] x [h, |class|] product per class (n h V in all), else a product per
        # distinct successor state (slot) of the particle's state
        columns, cls = np.unique(token_dfa.table, axis=1, return_inverse=True)
        cls = cls.reshape(-1)
        limit = MAX_CLASSES if max_classes is None else int(max_classes)
        self.by_class = bool(columns.shape[1] <= limit)
        self.class_next = self.emit_sorted = self.unsort = self.succ = self.slot = None
        self.bounds = None
        if self.by_class:
            order = np.argsort(cls, kind="stable")
            self.class_next = jnp.asarray(columns.astype(np.int32))  # [S, C]
            self.bounds = tuple(int(b) for b in np.cumsum(np.bincount(cls, minlength=columns.shape[1])))
            self.emit_sorted = self.emit[:, order]
            self.unsort = jnp.asarray(np.argsort(order).astype(np.int32))
        else:
            rows = [np.unique(row, return_inverse=True) for row in token_dfa.table]
            width = max(len(u) for u, _ in rows)
            succ = np.full((len(rows), width), token_dfa.dead, np.int32)
            for i, (u, _) in enumerate(rows):
                succ[i, :len(u)] = u
            self.succ = jnp.asarray(succ)
            self.slot = jnp.asarray(np.stack([inv.reshape(-1) for _, inv in rows]).astype(np.int32))

    # ---- the pure computations --------------------------------------------------------------
    def _may_end(self, state, generated):
        return self.accepting[state] & (generated >= self.min_new_tokens)

    def log_psi_next(self, pstate, generated) -> jax.Array:
        """log psi(x_<g v) [n, V] for every next token v, given g = ``generated`` [n]."""
        alpha = jnp.exp(pstate["alpha"])  # [n, h]
        k = jnp.clip(self.max_new_tokens - generated - 1, 0, self.max_new_tokens)
        state = pstate["dfa"]
        if self.by_class:
            weighted = alpha[:, None, :] * self.tables[k[:, None], self.class_next[state]]  # [n, C, h]
            starts = (0,) + self.bounds[:-1]
            parts = [weighted[:, c] @ self.emit_sorted[:, lo:hi]
                     for c, (lo, hi) in enumerate(zip(starts, self.bounds)) if hi > lo]
            num = jnp.concatenate(parts, -1)[:, self.unsort]
        else:
            future = self.tables[k[:, None], self.succ[state]]  # [n, m, h]
            per_slot = jnp.einsum("nmz,zv->nmv", alpha[:, None, :] * future, self.emit)  # [n, m, V]
            num = jnp.take_along_axis(per_slot, self.slot[state][:, None, :], axis=1)[:, 0]
        den = alpha @ self.emit  # p(x_g = v | x_<g)
        log_psi = jnp.log(num) - jnp.log(jnp.where(den > 0, den, 1.0))
        # psi > 0 wherever the DFA can still accept in time, even if float32 underflowed or the
        # HMM gives the token no mass: any positive twist leaves the target exact
        possible = self.reach[k[:, None], self.table[state]]
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
                  "dfa": jnp.full((n,), self.start, jnp.int32),
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
        new = {"alpha": new_alpha, "dfa": self.table[pstate["dfa"], token].astype(jnp.int32), "log_psi": log_psi}
        return {**new, "next": self.log_psi_next(new, lm_state.num_generated)}

    def logw_cap(self, pstate, lm_state):
        cur = pstate["log_psi"]
        ok = self.accepting[pstate["dfa"]] & (lm_state.num_generated >= self.min_new_tokens) & ~jnp.isneginf(cur)
        return jnp.where(ok, -cur, -jnp.inf).astype(jnp.float32)

    def __repr__(self) -> str:
        return (f"HMMGuide({self.hmm.num_states} hidden states x {self.table.shape[0]} DFA states, "
                f"T={self.max_new_tokens})")


def sample_loop(program, state, key, proposal, steps: int):
    """``steps`` transitions of ``program`` from ``state``, each drawn from ``proposal`` (no
    resampling); returns (state, summed log-weights [n]). Pure and traceable: jit it with
    ``proposal`` and ``steps`` static (:func:`constrained_sample` does)."""
    def body(i, carry):
        state, logw, key = carry
        key, sub = jax.random.split(key)
        state, inc = program.step(sub, state, proposal)
        return state, logw + inc, key

    logw = jnp.zeros(state.done.shape, jnp.float32)
    state, logw, _ = jax.lax.fori_loop(0, steps, body, (state, logw, key))
    return state, logw


def constrained_sample(program, n: int, key, proposal=None):
    """Sample n continuations from ``program`` by a proposal alone (no resampling): with an
    :class:`HMMGuide` and the locally optimal proposal (the default,
    :func:`ppl.proposals.locally_optimal`) this is the standalone guided sampler.

    The program is a traced argument of one compiled loop (``max_new_tokens`` transitions of
    :meth:`ppl.Program.step`: a token each, plus the sequence-level increments of any
    boundary), so programs that differ only in their data (prompt, tables, HMM) share it.

    Returns (texts, token ids, log importance weights [n] towards the program's target,
    log p_LM [n]). Weights are -inf for particles that hit a dead end.
    """
    from genppl.ppl import proposals
    from genppl.ppl.program import Program

    if not isinstance(program, Program):
        raise InputError(f"constrained_sample needs a ppl.Program, got {type(program).__name__}")
    check_positive_int(n, "n")
    proposal = proposals.locally_optimal() if proposal is None else proposal
    if not callable(proposal):
        raise InputError(f"proposal must be a function (program, state, target) -> (log q, log w), e.g. "
                         f"ppl.proposals.prior(); got {proposal!r}")
    state = program.init(n)
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    run = jax.jit(sample_loop, static_argnames=("proposal", "steps"))
    state, logw = run(program, state, key, proposal=proposal, steps=program.max_new_tokens)
    return (program.finished_text(state), state.lm.generated(), np.asarray(logw, np.float64),
            np.asarray(state.log_p, np.float64))
