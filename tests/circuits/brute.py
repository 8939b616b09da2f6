"""Brute-force answers for small HMMs (numpy, float64, sum over every hidden path)."""

import itertools

import numpy as np


def params(hmm):
    return tuple(np.exp(np.asarray(a, np.float64)) for a in (hmm.log_init, hmm.log_trans, hmm.log_emit))


def joint(hmm, seq):
    """p(x_1..x_m) summed over every hidden path z_1..z_m."""
    if not seq:
        return 1.0
    init, trans, emit = params(hmm)
    h = init.shape[0]
    total = 0.0
    for path in itertools.product(range(h), repeat=len(seq)):
        p = init[path[0]] * emit[path[0], seq[0]]
        for a, b, x in zip(path, path[1:], seq[1:]):
            p *= trans[a, b] * emit[b, x]
        total += p
    return total


def hidden_marginals(hmm, seq):
    """p(z_t = z | x) [m, h] by enumeration."""
    init, trans, emit = params(hmm)
    h = init.shape[0]
    out = np.zeros((len(seq), h))
    for path in itertools.product(range(h), repeat=len(seq)):
        p = init[path[0]] * emit[path[0], seq[0]]
        for a, b, x in zip(path, path[1:], seq[1:]):
            p *= trans[a, b] * emit[b, x]
        for t, z in enumerate(path):
            out[t, z] += p
    return out / out.sum(1, keepdims=True)


def finished_sequences(vocab, eos, cap, prefix=()):
    """Every continuation of ``prefix`` that ends with EOS or is cut at ``cap`` tokens."""
    symbols = [v for v in range(vocab) if v != eos]
    out = []
    room = cap - len(prefix)
    for depth in range(room + 1):
        for body in itertools.product(symbols, repeat=depth):
            seq = (*prefix, *body)
            out.append((*seq, eos) if depth < room else seq)
    return out
