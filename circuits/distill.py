"""Distil an HMM from a language model: sample, cluster, count, then EM.

Latent variable distillation (Liu et al. 2023), in the cheap form used here:

1. draw continuations of a prompt from the LM (:func:`models.sample`);
2. give every position t a feature of the LM's context there: the LM's next-token
   distribution p_LM(. | prompt, x_<t), as square roots (Hellinger geometry), randomly
   projected to ``feature_dim`` dimensions. It is the final hidden state seen through the
   output layer, so no change to the model code is needed;
3. cluster the features with k-means into ``num_states`` clusters: position t's cluster is
   its hidden state z_t;
4. initialise the HMM from the counts of (z_1), (z_t, z_{t+1}) and (z_t, x_t), and refine it
   with EM (:func:`circuits.hmm.fit`) on the same samples.

>>> import jax
>>> from genppl import models
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)
>>> hmm, info = distill_hmm(lm, [1], num_states=4, num_samples=256, max_new_tokens=4, key=jax.random.key(1),
...                     em_epochs=3)
>>> hmm.num_states, len(info["em_log_likelihood"])
(4, 3)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError, LanguageModel, check_positive_int
from genppl.models.sampling import sample as lm_sample

from .hmm import HMM, fit

__all__ = ["distill_hmm", "kmeans", "lm_features", "lm_samples"]


def lm_samples(lm: LanguageModel, prompt_ids, n: int, max_new_tokens: int, key, batch_size: int = 512):
    """n continuations of ``prompt_ids``: (tokens [n, T] int32, lengths [n], EOS included)."""
    check_positive_int(n, "n")
    tokens, lengths = [], []
    for start in range(0, n, batch_size):
        key, sub = jax.random.split(key)
        out = lm_sample(lm, prompt_ids, min(batch_size, n - start), max_new_tokens, sub)
        tokens.append(np.asarray(out.token_ids, np.int32))
        lengths.append(np.asarray(out.num_tokens, np.int32))
    return np.concatenate(tokens), np.concatenate(lengths)


@jax.jit
def _features(lm, state, tokens, projection):
    n, T = tokens.shape
    positions = state.length[:, None] + jnp.arange(T, dtype=jnp.int32)[None]
    logits, _ = lm._forward(state.cache, tokens, positions, jnp.ones(tokens.shape, bool))
    # position t's context is the prompt and x_<t: the logits before token t
    before = jnp.concatenate([state.logits[:, None], logits[:, :-1].astype(jnp.float32)], 1)
    roots = jnp.exp(0.5 * jax.nn.log_softmax(before, -1))
    return roots @ projection


def lm_features(lm: LanguageModel, prompt_ids, tokens, feature_dim: int = 32, key=None,
                batch_size: int = 256) -> np.ndarray:
    """[n, T, feature_dim]: sqrt p_LM(. | prompt, x_<t), randomly projected (see module)."""
    tokens = np.asarray(tokens, np.int32)
    key = jax.random.key(0) if key is None else key
    projection = jax.random.normal(key, (lm.vocab_size, feature_dim)) / np.sqrt(feature_dim)
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start:start + batch_size]
        state = lm.prefill(prompt_ids, chunk.shape[0], chunk.shape[1])
        out.append(np.asarray(_features(lm, state, jnp.asarray(chunk), projection)))
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _kmeans(points, key, k, iters):
    centers = points[jax.random.choice(key, points.shape[0], (k,), replace=False)]

    def assign(centers):
        d = (points**2).sum(1)[:, None] - 2 * points @ centers.T + (centers**2).sum(1)[None]
        return jnp.argmin(d, 1)

    def body(_, centers):
        labels = assign(centers)
        sums = jax.ops.segment_sum(points, labels, num_segments=k)
        counts = jax.ops.segment_sum(jnp.ones(points.shape[0]), labels, num_segments=k)
        # an empty cluster keeps its old centre
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centers)

    centers = jax.lax.fori_loop(0, iters, body, centers)
    return assign(centers), centers


def kmeans(points, k: int, key, iters: int = 20):
    """Lloyd's k-means from k random points. Returns (labels [N], centres [k, d])."""
    points = jnp.asarray(points, jnp.float32)
    check_positive_int(k, "k")
    if points.ndim != 2 or points.shape[0] < k:
        raise InputError(f"k-means needs [N, d] points with N >= k={k}, got shape {points.shape}")
    return _kmeans(points, key, int(k), int(iters))


def distill_hmm(lm: LanguageModel, prompt_ids, num_states: int, *, num_samples: int = 2048,
            max_new_tokens: int = 24, key=None, em_epochs: int = 10, batch_size: int | None = None,
            pseudocount: float = 1e-2, feature_dim: int = 32, kmeans_iters: int = 20):
    """An HMM with ``num_states`` hidden states fitted to the LM's continuations of a prompt.

    Returns (hmm, info) with info: ``tokens``, ``lengths`` (the samples), ``init_log_likelihood``
    (mean per sequence after the clustering initialisation) and ``em_log_likelihood`` (per epoch).
    """
    if not isinstance(lm, LanguageModel):
        raise InputError(f"distill_hmm needs a models.LanguageModel, got {type(lm).__name__}")
    check_positive_int(num_states, "num_states")
    check_positive_int(num_samples, "num_samples")
    key = jax.random.key(0) if key is None else key
    k_sample, k_proj, k_means, k_fit = jax.random.split(key, 4)
    tokens, lengths = lm_samples(lm, prompt_ids, num_samples, max_new_tokens, k_sample)
    feats = lm_features(lm, prompt_ids, tokens, feature_dim, k_proj)
    valid = np.arange(tokens.shape[1])[None] < lengths[:, None]
    if valid.sum() < num_states:
        raise InputError(f"only {valid.sum()} sampled tokens for {num_states} hidden states: draw more samples")
    labels, _ = kmeans(feats[valid], num_states, k_means, kmeans_iters)
    z = np.zeros(tokens.shape, np.int64)
    z[valid] = np.asarray(labels)
    hmm = _from_assignments(z, tokens, lengths, num_states, lm.vocab_size, pseudocount)
    from .hmm import log_likelihood

    init_ll = float(np.mean(np.asarray(log_likelihood(hmm, tokens, lengths))))
    hmm, history = fit(hmm, tokens, lengths, epochs=em_epochs, batch_size=batch_size, pseudocount=pseudocount,
                       key=k_fit)
    return hmm, {"tokens": tokens, "lengths": lengths, "init_log_likelihood": init_ll,
                 "em_log_likelihood": history}


def _from_assignments(z, tokens, lengths, h, vocab, pseudocount) -> HMM:
    valid = np.arange(tokens.shape[1])[None] < lengths[:, None]
    init = np.bincount(z[lengths > 0, 0], minlength=h).astype(np.float64)
    pair = valid[:, 1:]
    trans = np.zeros((h, h))
    np.add.at(trans, (z[:, :-1][pair], z[:, 1:][pair]), 1.0)
    emit = np.zeros((h, vocab))
    np.add.at(emit, (z[valid], tokens[valid]), 1.0)
    return HMM.from_counts(jnp.asarray(init, jnp.float32), jnp.asarray(trans, jnp.float32),
                           jnp.asarray(emit, jnp.float32), pseudocount)
