"""Exact MH transition matrices and blockwise laws by enumeration (numpy float64).

The exact transition matrix of the suffix-resampling kernel is built by enumerating every
position m and every regenerated suffix, with the *same* acceptance function the sampler
calls (``mcmc.log_acceptance`` with ``xp=numpy``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from genppl import models
from genppl.inference import mcmc

EOS = 0


def random_lm(seed, vocab=4, max_len=3):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=vocab, max_len=max_len, eos_id=EOS,
                                   eos_boost=0.3)


def _log_softmax(row):
    finite = row[np.isfinite(row)]
    top = finite.max()
    return row - (top + np.log(np.sum(np.exp(finite - top))))


def token_logs(lm, prefix, temperature):
    """(log p [V], log q [V]) after a prefix of non-EOS tokens."""
    row = np.asarray(lm.table, np.float64)[lm.code(prefix)]
    return row, _log_softmax(row / temperature)


def completions(lm, prefix, cap, temperature):
    """Every suffix that completes ``prefix`` up to EOS or ``cap`` tokens: (suffix, log p, log q)."""
    if len(prefix) == cap:
        return [((), 0.0, 0.0)]
    lp, lq = token_logs(lm, prefix, temperature)
    out = []
    for v in range(lm.vocab_size):
        if not np.isfinite(lq[v]):
            continue
        if v == lm.eos_id:
            out.append(((v,), lp[v], lq[v]))
        else:
            out += [((v, *s), lp[v] + a, lq[v] + b) for s, a, b in completions(lm, (*prefix, v), cap, temperature)]
    return out


def suffix_logs(lm, seq, m, temperature):
    lp_sum = lq_sum = 0.0
    for j in range(m, len(seq)):
        lp, lq = token_logs(lm, seq[:j], temperature)
        lp_sum, lq_sum = lp_sum + lp[seq[j]], lq_sum + lq[seq[j]]
    return lp_sum, lq_sum


def suffix_pick(m, n):
    """log P(m | x) of the uniform suffix move (n tokens)."""
    return -np.log(n) if 0 <= m < n else -np.inf


def independent_pick(m, n):
    return 0.0 if m == 0 else -np.inf


PICKS = {"suffix": suffix_pick, "independent": independent_pick}


def mh_matrix(lm, cap, alpha, temperature=None, move="suffix", log_phi=None, pick=None):
    """Exact MH transition matrix over every sequence of at most ``cap`` tokens (the stage
    target: ending with EOS within ``cap`` tokens, or exactly ``cap`` tokens).

    move: "suffix", "independent", or a function log P(m | n tokens). ``pick`` (any value)
    replaces the reverse position probability by the forward one (a deliberately wrong ratio)."""
    temperature = 1.0 / alpha if temperature is None else temperature
    log_phi = log_phi or (lambda s: 0.0)
    log_pick = PICKS[move] if isinstance(move, str) else move
    seqs, logp = lm.enumerate(cap)
    index = {s: i for i, s in enumerate(seqs)}
    kernel = np.zeros((len(seqs), len(seqs)))
    for i, x in enumerate(seqs):
        for m in range(max(len(x), 1)):
            pick_old = log_pick(m, len(x))
            if not np.isfinite(pick_old):
                continue
            lp_old, lq_old = suffix_logs(lm, x, m, temperature)
            for s, lp_new, lq_new in completions(lm, x[:m], cap, temperature):
                y = x[:m] + s
                pick_new = pick_old if pick is not None else log_pick(m, len(y))
                log_r = mcmc.log_acceptance(alpha, lp_new, lp_old, lq_new, lq_old, pick_new, pick_old,
                                            log_phi(y), log_phi(x), xp=np)
                kernel[i, index[y]] += np.exp(lq_new + pick_old) * min(1.0, np.exp(log_r))
        kernel[i, i] += 1.0 - kernel[i].sum()
    log_u = alpha * logp + np.array([log_phi(s) for s in seqs])
    pi = np.exp(log_u - np.logaddexp.reduce(log_u))
    return seqs, kernel, pi


def extension(lm, seqs_from, seqs_to, cap, temperature):
    """Exact block-extension kernel: EOS sequences stay, the others are extended to ``cap``."""
    index = {s: i for i, s in enumerate(seqs_to)}
    ext = np.zeros((len(seqs_from), len(seqs_to)))
    for i, x in enumerate(seqs_from):
        if x and x[-1] == EOS:
            ext[i, index[x]] = 1.0
            continue
        for s, _, lq in completions(lm, x, cap, temperature):
            ext[i, index[x + s]] += np.exp(lq)
    return ext


def blockwise_law(lm, max_new, block, num_mcmc, alpha):
    """Exact output law of blockwise power sampling, propagated block by block."""
    seqs, law = [()], np.ones(1)
    for k in range(-(-max_new // block)):
        cap = min((k + 1) * block, max_new)
        new_seqs, kernel, pi = mh_matrix(lm, cap, alpha)
        law = law @ extension(lm, seqs, new_seqs, cap, 1.0 / alpha)
        law = law @ np.linalg.matrix_power(kernel, num_mcmc)
        seqs = new_seqs
    return seqs, law, pi


def detailed_balance_residual(kernel, pi):
    flow = pi[:, None] * kernel
    return np.abs(flow - flow.T).max()


def chains_at(lm, seqs, width):
    """An LM state holding the sequences ``seqs`` (one per chain) after the prompt [1], and eos [n]."""
    n = len(seqs)
    state = lm.prefill([1], n, width)
    tokens = np.zeros((n, width), np.int32)
    mask = np.zeros((n, width), bool)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)], mask[i, :len(s)] = s, True
    lm_state, _ = jax.jit(lambda lm, s, t, m: lm.advance(s, t, m))(lm, state, jnp.asarray(tokens), jnp.asarray(mask))
    eos = jnp.asarray([bool(s) and s[-1] == EOS for s in seqs])
    return lm_state, eos
