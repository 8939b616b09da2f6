"""Circuit structures: an HMM unrolled over T positions, random binary trees (RAT-SPN
style), and Chow–Liu trees learned from data.

>>> import jax
>>> c = random_binary_tree(6, num_categories=3, num_units=4, num_repetitions=2, key=jax.random.key(0))
>>> c.num_vars
6
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError, check_positive_int

from .hmm import HMM
from .layers import Circuit, Input, Product, Sum

__all__ = ["chow_liu_tree", "hmm_circuit", "random_binary_tree"]


def hmm_circuit(hmm_or_states, length: int, vocab_size: int | None = None):
    """An HMM over ``length`` categorical variables as a circuit: the chain
    F_t = B_t ⊙ (A F_{t+1}), root = gamma^T F_1 (Hadamard products, sums over states).

    Give an :class:`circuits.HMM` to get (circuit, params) holding its parameters (copied
    to every position: the circuit's parameters are untied), or a number of hidden states
    and ``vocab_size`` for the structure alone.
    """
    check_positive_int(length, "length")
    if isinstance(hmm_or_states, HMM):
        h, vocab = hmm_or_states.num_states, hmm_or_states.vocab_size
    else:
        h, vocab = check_positive_int(hmm_or_states, "the number of hidden states"), vocab_size
        check_positive_int(vocab, "vocab_size")
    blocks = []
    nxt = None
    for t in reversed(range(length)):
        blocks.append(Input(t, h, vocab))
        emit = len(blocks) - 1
        if nxt is None:
            cur = emit
        else:
            blocks.append(Sum((nxt,), h))  # unit z: sum_z' A[z, z'] F_{t+1}[z']
            blocks.append(Product((emit, len(blocks) - 1), "hadamard"))
            cur = len(blocks) - 1
        nxt = cur
    blocks.append(Sum((nxt,), 1))
    circuit = Circuit(blocks, length)
    if not isinstance(hmm_or_states, HMM):
        return circuit
    params = []
    for b in circuit.blocks:
        if isinstance(b, Input):
            params.append(hmm_or_states.log_emit)
        elif isinstance(b, Sum):
            params.append(hmm_or_states.log_init[None] if b.size == 1 else hmm_or_states.log_trans)
        else:
            params.append(None)
    return circuit, tuple(params)


def random_binary_tree(num_vars: int, num_categories: int | None = 2, num_units: int = 4,
                       num_repetitions: int = 1, key=None) -> Circuit:
    """RAT-SPN-style: each repetition splits the variables at random into halves down to
    single variables; a region is num_units sums over the Kronecker product of its halves;
    the root mixes every repetition's top units. ``num_categories=None``: Gaussian inputs."""
    check_positive_int(num_vars, "num_vars")
    check_positive_int(num_units, "num_units")
    check_positive_int(num_repetitions, "num_repetitions")
    rng = np.random.default_rng(0 if key is None else np.asarray(jax.random.key_data(key)).ravel()[-1])
    blocks, tops = [], []

    def build(vars_):
        if len(vars_) == 1:
            blocks.append(Input(int(vars_[0]), num_units, num_categories))
            return len(blocks) - 1
        half = len(vars_) // 2
        left, right = build(vars_[:half]), build(vars_[half:])
        blocks.append(Product((left, right), "kronecker"))
        blocks.append(Sum((len(blocks) - 1,), num_units))
        return len(blocks) - 1

    for _ in range(num_repetitions):
        tops.append(build(rng.permutation(num_vars)))
    blocks.append(Sum(tuple(tops), 1))
    return Circuit(blocks, num_vars)


def chow_liu_tree(x, num_categories: int, pseudocount: float = 1.0, root: int = 0):
    """The Chow–Liu tree of fully observed categorical data x [N, D] (maximum spanning tree
    of the pairwise empirical mutual information), with its conditional tables estimated
    with ``pseudocount``, as a deterministic circuit: returns (circuit, params, parent list).

    Per variable v: an indicator input block (frozen), and unit j of F_v is
    [x_v = j] * prod_{children c} sum_k P(x_c = k | x_v = j) F_c[k].
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"Chow–Liu needs fully observed data [N, D], got shape {x.shape}")
    n, d = x.shape
    k = int(num_categories)
    if np.any(x != np.round(x)) or x.min() < 0 or x.max() >= k:
        raise InputError(f"Chow–Liu data must be integers in [0, {k})")
    x = x.astype(np.int64)
    single = np.stack([np.bincount(x[:, v], minlength=k) for v in range(d)]).astype(float) + pseudocount
    single /= single.sum(1, keepdims=True)
    pair = np.zeros((d, d, k, k))
    for a in range(d):
        for b in range(d):
            np.add.at(pair[a, b], (x[:, a], x[:, b]), 1.0)
    pair = (pair + pseudocount / k) / (n + pseudocount * k)
    mi = np.einsum("abij,abij->ab", pair, np.log(pair) - np.log(single[:, None, :, None] * single[None, :, None, :]))
    # Prim's maximum spanning tree from the root
    parent = [-1] * d
    in_tree, best, best_from = {root}, mi[root].copy(), np.full(d, root)
    for _ in range(d - 1):
        cand = [v for v in range(d) if v not in in_tree]
        v = max(cand, key=lambda u: best[u])
        parent[v] = int(best_from[v])
        in_tree.add(v)
        for u in range(d):
            if u not in in_tree and mi[v, u] > best[u]:
                best[u], best_from[u] = mi[v, u], v
    children = {v: [c for c in range(d) if parent[c] == v] for v in range(d)}
    blocks, params, top = [], [], {}
    eye = jnp.where(jnp.eye(k, dtype=bool), 0.0, -jnp.inf)

    def build(v):
        kids = []
        for c in children[v]:
            build(c)
            joint = np.zeros((k, k))
            np.add.at(joint, (x[:, v], x[:, c]), 1.0)
            cpt = (joint + pseudocount) / (joint + pseudocount).sum(1, keepdims=True)  # P(x_c | x_v)
            blocks.append(Sum((top[c],), k))
            params.append(jnp.log(jnp.asarray(cpt)))
            kids.append(len(blocks) - 1)
        blocks.append(Input(v, k, k, frozen=True))
        params.append(eye)
        if kids:
            blocks.append(Product((len(blocks) - 1, *kids), "hadamard"))
            params.append(None)
        top[v] = len(blocks) - 1

    build(root)
    counts = np.bincount(x[:, root], minlength=k) + pseudocount
    blocks.append(Sum((top[root],), 1))
    params.append(jnp.log(jnp.asarray(counts / counts.sum()))[None])
    return Circuit(blocks, d), tuple(params), parent
