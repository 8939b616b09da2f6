"""Hidden Markov models over token sequences, in JAX: likelihood, posteriors, EM, sampling.

An HMM has an initial law gamma [h], transitions A [h, h] (row z -> z') and emissions
B [h, V]. Sequences are batched as ``tokens`` [n, T] with ``lengths`` [n]: positions at or
past a row's length are ignored (a sequence that ended with EOS includes the EOS token, one
cut at the length cap does not).

Everything runs in log space: the forward pass multiplies the exponentiated, max-shifted
messages by the transition matrix (one matmul per step) and adds the shift back, so long
sequences never underflow and the inner loop is a dense matmul. Posterior expected counts
are the gradient of the log-likelihood with respect to the log-parameters (the classic
identity d log p(x) / d log A[z, z'] = E[#(z -> z') | x]), so EM needs no hand-written
backward pass.

>>> import jax
>>> hmm = HMM.random(jax.random.key(0), num_states=4, vocab_size=6)
>>> tokens, lengths = sample(hmm, jax.random.key(1), n=8, max_len=5, eos_id=0)
>>> ll = log_likelihood(hmm, tokens, lengths)
>>> ll.shape
(8,)
>>> hmm2, mean_ll = em_step(hmm, tokens, lengths)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genppl.models.interface import InputError, read_npz

__all__ = ["HMM", "em_step", "fit", "forward_messages", "log_likelihood", "log_matmul", "posteriors",
           "sample"]


@struct.dataclass
class HMM:
    """log_init [h], log_trans [h, h] (rows sum to 1), log_emit [h, V] (rows sum to 1)."""

    log_init: jax.Array
    log_trans: jax.Array
    log_emit: jax.Array

    @property
    def num_states(self) -> int:
        return int(self.log_init.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.log_emit.shape[1])

    @classmethod
    def random(cls, key, num_states: int, vocab_size: int, concentration: float = 1.0) -> "HMM":
        """Random parameters: each row's logits ~ N(0, 1 / concentration)."""
        _check_count(num_states, "num_states")
        _check_count(vocab_size, "vocab_size")
        k1, k2, k3 = jax.random.split(key, 3)
        scale = 1.0 / np.sqrt(concentration)
        return cls.from_logits(scale * jax.random.normal(k1, (num_states,)),
                               scale * jax.random.normal(k2, (num_states, num_states)),
                               scale * jax.random.normal(k3, (num_states, vocab_size)))

    @classmethod
    def from_logits(cls, init, trans, emit) -> "HMM":
        """Normalise unnormalised log-parameters (any float arrays of the right shapes)."""
        init, trans, emit = (jnp.asarray(a, jnp.result_type(float)) for a in (init, trans, emit))
        h = init.shape[0]
        if init.ndim != 1 or trans.shape != (h, h) or emit.ndim != 2 or emit.shape[0] != h:
            raise InputError(f"HMM shapes must be init [h], trans [h, h], emit [h, V]; got {init.shape}, "
                             f"{trans.shape}, {emit.shape}")
        return cls(jax.nn.log_softmax(init), jax.nn.log_softmax(trans, -1), jax.nn.log_softmax(emit, -1))

    @classmethod
    def from_counts(cls, init, trans, emit, pseudocount: float = 0.0) -> "HMM":
        """Maximum-likelihood parameters from expected counts (plus a pseudocount per entry)."""
        def norm(c):
            c = c + pseudocount
            return jnp.log(c) - jnp.log(c.sum(-1, keepdims=True))
        return cls(norm(init), norm(trans), norm(emit))

    def save(self, path) -> None:
        """Write the parameters to ``path`` (a ``.npz`` file)."""
        np.savez(path, log_init=np.asarray(self.log_init), log_trans=np.asarray(self.log_trans),
                 log_emit=np.asarray(self.log_emit))

    @classmethod
    def load(cls, path) -> "HMM":
        """Read parameters written by :meth:`save`."""
        arrays = read_npz(path, "HMM", "write one with HMM.save (or distil a new one)")
        missing = {"log_init", "log_trans", "log_emit"} - set(arrays)
        if missing:
            raise InputError(f"{path} is not an HMM file (no {', '.join(sorted(missing))}): write one with HMM.save")
        return cls(*(jnp.asarray(arrays[k]) for k in ("log_init", "log_trans", "log_emit")))

    def astype(self, dtype) -> "HMM":
        return HMM(*(jnp.asarray(a, dtype) for a in (self.log_init, self.log_trans, self.log_emit)))


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def log_matmul(log_a, log_m):
    """log(exp(log_a) @ exp(log_m)) computed stably with one matmul: [..., h] x [h, k]."""
    shift = jnp.max(log_a, -1, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    col = jnp.max(log_m, 0, keepdims=True)
    col = jnp.where(jnp.isfinite(col), col, 0.0)
    out = jnp.exp(log_a - shift) @ jnp.exp(log_m - col)
    return jnp.log(out) + shift + col


def _check_batch(hmm: HMM, tokens, lengths):
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
        raise InputError(f"tokens must be [n, T] token ids, got shape {tokens.shape}")
    if lengths is None:
        lengths = jnp.full(tokens.shape[:1], tokens.shape[1], jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if lengths.shape != tokens.shape[:1]:
        raise InputError(f"lengths must have shape [{tokens.shape[0]}], got {lengths.shape}")
    if not isinstance(tokens, jax.core.Tracer):
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= hmm.vocab_size):
            raise InputError(f"token ids must lie in [0, {hmm.vocab_size}) (the HMM's vocabulary)")
    return tokens, lengths


def _forward(hmm: HMM, tokens, lengths, shift=None):
    """(log p(x_1..x_len) [n], predictive messages log p(x_<t, z_t) [T, n, h]).

    shift [n, T, h], optional, is added to the log-emissions (its gradient at 0 is the
    posterior p(z_t | x))."""
    n, T = tokens.shape

    def step(carry, t):
        log_alpha = carry  # log p(x_<t, z_t = z)
        emit = hmm.log_emit.T[tokens[:, t]]  # [n, h]
        if shift is not None:
            emit = emit + shift[:, t]
        joint = log_alpha + emit  # log p(x_<=t, z_t)
        nxt = log_matmul(joint, hmm.log_trans)  # log p(x_<=t, z_{t+1})
        live = (t < lengths)[:, None]
        # past the end nothing is emitted: keep the joint so the last one holds log p(x)
        return jnp.where(live, nxt, log_alpha), (log_alpha, jnp.where(live, joint, -jnp.inf))

    start = jnp.broadcast_to(hmm.log_init, (n, hmm.num_states))
    _, (alphas, joints) = jax.lax.scan(step, start, jnp.arange(T))
    last = jnp.take_along_axis(joints, jnp.maximum(lengths - 1, 0)[None, :, None], 0)[0]
    ll = jnp.where(lengths > 0, jax.nn.logsumexp(last, -1), 0.0)
    return ll, alphas


@jax.jit
def _log_likelihood(hmm, tokens, lengths):
    return _forward(hmm, tokens, lengths)[0]


def log_likelihood(hmm: HMM, tokens, lengths=None) -> jax.Array:
    """log p(x) [n] of each sequence (its first ``lengths[i]`` tokens).

    >>> import jax
    >>> hmm = HMM.random(jax.random.key(0), 3, 4)
    >>> abs(float(jax.nn.logsumexp(log_likelihood(hmm, [[0], [1], [2], [3]])))) < 1e-6   # one token
    True
    """
    tokens, lengths = _check_batch(hmm, tokens, lengths)
    return _log_likelihood(hmm, tokens, lengths)


def forward_messages(hmm: HMM, tokens, lengths=None) -> jax.Array:
    """log p(x_<t, z_t) [n, T, h]: the predictive forward messages before each position."""
    tokens, lengths = _check_batch(hmm, tokens, lengths)
    return jnp.swapaxes(jax.jit(_forward)(hmm, tokens, lengths)[1], 0, 1)


def _counts(hmm: HMM, tokens, lengths, weights):
    """Expected sufficient statistics as gradients of sum_i w_i log p(x_i)."""
    def total(params):
        return jnp.sum(weights * _forward(params, tokens, lengths)[0])

    ll, grads = jax.value_and_grad(total)(hmm)
    return ll, grads


@jax.jit
def _posteriors(hmm, tokens, lengths):
    zero = jnp.zeros(tokens.shape + (hmm.num_states,), hmm.log_emit.dtype)
    return jax.grad(lambda shift: jnp.sum(_forward(hmm, tokens, lengths, shift)[0]))(zero)


def posteriors(hmm: HMM, tokens, lengths=None) -> jax.Array:
    """p(z_t = z | x) [n, T, h] (rows past a sequence's length are 0)."""
    tokens, lengths = _check_batch(hmm, tokens, lengths)
    return _posteriors(hmm, tokens, lengths)


@jax.jit
def _em_step(hmm, tokens, lengths, pseudocount):
    weights = jnp.ones(tokens.shape[:1], hmm.log_emit.dtype)
    ll, counts = _counts(hmm, tokens, lengths, weights)
    # the gradient with respect to a log-probability is its expected count
    new = HMM.from_counts(counts.log_init, counts.log_trans, counts.log_emit, pseudocount)
    return new, ll / tokens.shape[0], counts


def em_step(hmm: HMM, tokens, lengths=None, pseudocount: float = 0.0) -> tuple[HMM, jax.Array]:
    """One full-batch EM step. Returns (new HMM, mean log-likelihood under the *old* HMM).

    With ``pseudocount = 0`` this is exact EM and never lowers the likelihood; a positive
    pseudocount (a Dirichlet prior, MAP-EM) keeps every probability positive.
    """
    tokens, lengths = _check_batch(hmm, tokens, lengths)
    if not pseudocount >= 0:
        raise InputError(f"pseudocount must be >= 0, got {pseudocount!r}")
    new, ll, _ = _em_step(hmm, tokens, lengths, jnp.asarray(pseudocount, hmm.log_emit.dtype))
    return new, ll


@jax.jit
def _batch_counts(hmm, tokens, lengths):
    ll, counts = _counts(hmm, tokens, lengths, jnp.ones(tokens.shape[:1], hmm.log_emit.dtype))
    return ll, counts


def fit(hmm: HMM, tokens, lengths=None, *, epochs: int = 10, batch_size: int | None = None,
        pseudocount: float = 1e-3, step_size: float = 1.0, key=None, verbose: bool = False):
    """EM on a data set. Returns (HMM, list of mean log-likelihoods per epoch).

    batch_size None: full-batch EM (each epoch one exact EM step). Otherwise mini-batch
    (stochastic) EM: after each batch the parameters move towards that batch's EM solution,
    theta <- (1 - eta) theta + eta theta_batch, with ``eta = step_size``; the data are
    shuffled with ``key`` each epoch. The recorded likelihood is the mean over the epoch's
    batches under the parameters in force when each batch was seen.
    """
    tokens, lengths = _check_batch(hmm, tokens, lengths)
    _check_count(epochs, "epochs")
    n = tokens.shape[0]
    history = []
    if batch_size is None or batch_size >= n:
        for _ in range(epochs):
            hmm, ll = em_step(hmm, tokens, lengths, pseudocount)
            history.append(float(ll))
        return hmm, history
    _check_count(batch_size, "batch_size")
    if not 0.0 < step_size <= 1.0:
        raise InputError(f"step_size must be in (0, 1], got {step_size!r}")
    key = jax.random.key(0) if key is None else key
    num_batches = n // batch_size
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, n)
        total = 0.0
        for b in range(num_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            ll, counts = _batch_counts(hmm, tokens[idx], lengths[idx])
            target = HMM.from_counts(counts.log_init, counts.log_trans, counts.log_emit, pseudocount)
            hmm = _blend(hmm, target, step_size)
            total += float(ll) / batch_size
        history.append(total / num_batches)
    return hmm, history


@jax.jit
def _blend(old: HMM, new: HMM, eta):
    # a convex combination of two distributions, in log space
    return jax.tree.map(lambda a, b: jnp.logaddexp(jnp.log1p(-eta) + a, jnp.log(eta) + b), old, new)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _sample(hmm, key, n, max_len, eos_id):
    def step(carry, key):
        z, done = carry
        kx, kz = jax.random.split(key)
        x = jax.random.categorical(kx, hmm.log_emit[z], axis=-1).astype(jnp.int32)
        x = jnp.where(done, eos_id, x)
        z = jax.random.categorical(kz, hmm.log_trans[z], axis=-1)
        return (z, done | (x == eos_id)), (x, done)

    k0, key = jax.random.split(key)
    z0 = jax.random.categorical(k0, jnp.broadcast_to(hmm.log_init, (n, hmm.num_states)), axis=-1)
    _, (xs, was_done) = jax.lax.scan(step, (z0, jnp.zeros((n,), bool)), jax.random.split(key, max_len))
    lengths = jnp.sum(~was_done, 0).astype(jnp.int32)
    return xs.T, lengths


def sample(hmm: HMM, key, n: int, max_len: int, eos_id: int | None = None):
    """Draw n sequences of at most ``max_len`` tokens; each ends at its first ``eos_id`` (kept)
    or is cut at ``max_len``. Returns (tokens [n, max_len] padded with EOS, lengths [n])."""
    _check_count(n, "n")
    _check_count(max_len, "max_len")
    eos = -1 if eos_id is None else int(eos_id)
    return _sample(hmm, key, int(n), int(max_len), eos)
