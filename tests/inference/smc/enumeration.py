"""Exact answers and unbiasedness checks for SMC tests on small tabular LMs.

Two exact identities of SMC are checked over many independent runs r = 1..R:

* E[Z_hat] = Z (the log Z estimator is unbiased on the natural scale);
* E[(1/n) sum_i w_i 1{x_i = x}] = Z pi(x) (the unnormalised particle measure is unbiased),

each as a z-test whose standard error comes from the R runs themselves. With R = 400 runs
and the spreads seen here (sd of Z_hat / Z about 0.2-0.5), a 3-standard-error test detects a
relative bias of Z_hat of about 3-8 %.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from genppl import models, ppl
from genppl.inference import smc

VOCAB, CAP, EOS = 5, 4, 0
RUNS = 400


def random_lm(seed, vocab=VOCAB, cap=CAP):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=vocab, max_len=cap, eos_id=EOS,
                                   eos_boost=0.5)


def count_ones(tokens, length, prompt_length):
    pos = jnp.arange(tokens.shape[1])[None, :]
    inside = (pos >= prompt_length[:, None]) & (pos < length[:, None])
    return 0.7 * jnp.sum(inside & (tokens == 1), axis=1).astype(jnp.float32)


# one instance each, so that programs built from them share compiled sweeps
BANNED = ppl.BannedTokens([2])
MIN2 = ppl.MinLength(2, EOS)
SOFT = ppl.SequenceScorer(count_ones)
TARGET = BANNED * MIN2 * SOFT


def log_phi(seq):
    body = [t for t in seq if t != EOS]
    if 2 in body or len(body) < 2:
        return -math.inf
    return 0.7 * body.count(1)


def exact(lm, alpha=1.0, log_phi=log_phi, cap=CAP):
    """(sequences, exact target probabilities, log Z, LM probabilities) by enumeration."""
    seqs, logp = lm.enumerate(cap)
    logu = np.array([alpha * lp + log_phi(s) for s, lp in zip(seqs, logp)])
    log_z = np.logaddexp.reduce(logu)
    return seqs, np.exp(logu - log_z), log_z, np.exp(logp)


PROPOSALS = {"prior": ppl.proposals.prior(), "optimal": ppl.proposals.locally_optimal()}


@functools.partial(jax.jit, static_argnums=0)
def sweeps(kernel, program, state, keys):
    """Independent SMC sweeps, one per key, in one compiled program."""
    return jax.vmap(lambda k: smc.sweep(kernel, program, state, k)[0])(keys)


def run_many(program, n, runs=RUNS, resampling_fn=smc.systematic, ess_threshold=0.5,
             proposal="optimal", kernel=None, seed=0):
    """R independent sweeps in one vmapped program: (log Z_hat [R], logw [R, n], seqs)."""
    if kernel is None:
        kernel = smc.build_kernel(resampling_fn, PROPOSALS[proposal], ess_threshold)
    state = smc.init(program, n)
    keys = jax.random.split(jax.random.key(seed), runs)
    out = sweeps(kernel, program, state, keys)
    logw = np.asarray(out.logw, np.float64)
    tokens, length, start = (np.asarray(a) for a in
                             (out.particles.lm.tokens, out.particles.lm.length, out.particles.lm.prompt_length))
    seqs = [[tuple(int(t) for t in tokens[r, i, start[r, i]:length[r, i]]) for i in range(n)]
            for r in range(runs)]
    log_z = np.logaddexp.reduce(logw, axis=1) - np.log(n)
    return log_z, logw, seqs


def assert_unbiased_z(log_z_hat, log_z):
    z_hat = np.exp(log_z_hat - log_z)  # ratio to the exact Z: its mean must be 1
    se = z_hat.std(ddof=1) / np.sqrt(len(z_hat))
    assert np.all(np.isfinite(log_z_hat) | np.isneginf(log_z_hat)), "NaN in log Z_hat"
    assert abs(z_hat.mean() - 1.0) < 3 * se, \
        f"mean Z_hat / Z = {z_hat.mean():.4f}, {abs(z_hat.mean() - 1) / se:.1f} standard errors from 1"


def assert_unbiased_measure(logw, seqs, support, pi, log_z, prior, z=4.0):
    """Each (1/n) sum_i w_i 1{x_i = x} / Z averages to pi(x), within z standard errors."""
    index = {s: k for k, s in enumerate(support)}
    runs, n = logw.shape
    a = np.zeros((runs, len(support)))
    w = np.exp(logw - log_z)
    for r in range(runs):
        for i in range(n):
            if w[r, i] > 0:
                assert seqs[r][i] in index, f"particle {seqs[r][i]} outside the target's support"
                a[r, index[seqs[r][i]]] += w[r, i] / n
    # sequences that are rare under the target or the LM (the bootstrap proposal) are pooled
    # into one bin: an empirical standard error needs many hits
    common = np.minimum(pi, prior) * runs * n >= 30
    a = np.concatenate([a[:, common], a[:, ~common].sum(1, keepdims=True)], 1)
    pi = np.concatenate([pi[common], [pi[~common].sum()]])
    names = [s for s, c in zip(support, common) if c] + ["rare"]
    mean, se = a.mean(0), a.std(0, ddof=1) / np.sqrt(runs)
    # an empirical standard error is no smaller than an ideal sampler's binomial one unless the
    # bin was (almost) never hit, where it reads 0: a bin of mass pi expected under 16 hits in
    # runs * n ideal draws may stay empty without evidence of bias
    se = np.maximum(se, np.sqrt(np.clip(pi * (1 - pi), 0.0, None) / (runs * n)))
    ok = np.abs(mean - pi) <= z * se + 1e-9
    assert ok.all(), (f"estimated posterior off at {[names[k] for k in np.flatnonzero(~ok)]}: "
                      f"{mean[~ok]} vs exact {pi[~ok]} (se {se[~ok]})")
    assert np.isclose(mean.sum(), 1.0, atol=4 * np.sqrt((a.sum(1).var(ddof=1)) / runs))
