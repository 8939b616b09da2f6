"""Island resampling: k independent SMC runs side by side, one per group of n / k particles.

The n particles are split into k contiguous islands of m = n / k (on a mesh: one island per
device of the data axis, so resampling never moves a particle between devices). Each island is
a complete SMC of its own: it decides to resample from its OWN effective sample size
(ESS_j < threshold * m), draws its m ancestors from its own weights with its own key (the
base resampler applied to the island's log-weights), and after resampling sets its weights to
their own log-mean-exp. Island j's estimate is

    Z_hat_j = (1/m) sum_{i in island j} exp(logw_i)        (after the last step)

and it is unbiased, E[Z_hat_j] = Z, being an ordinary SMC estimate. The islands' random
draws are independent, so the overall estimate

    Z_hat = (1/k) sum_j Z_hat_j,   i.e.  log Z_hat = log-mean-exp_j log Z_hat_j
          = log( (1/n) sum_i exp(logw_i) )

is unbiased too (a mean of unbiased estimates), and the weighted particles of all islands
together estimate the target: E[(1/n) sum_i exp(logw_i) f(x_i)] = Z E_pi[f] for every f, island
by island. This is exactly what the kernel's usual formula gives, so results, log Z and the
genealogy (global particle indices) need no special handling. The price is variance: an island
of m particles degenerates faster than one population of n (no particle can replace a dead
island's), so Var(Z_hat) is larger than under global resampling with the same n; the gain is
that no particle crosses a device (the two-level scheme, which resamples whole islands by their
Z_hat_j, is not offered).

``island_resampling(resampling_fn, k)`` is a resampler with the usual signature whose ``islands``
attribute tells :class:`~inference.smc.kernel.SMCKernel` to take those per-island decisions.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError, check_positive_int, map_particles

from .resampling import ess, log_mean_exp

__all__ = ["IslandResampler", "check_islands", "island_flags", "island_resampling", "reset_weights"]


@dataclasses.dataclass(frozen=True)
class IslandResampler:
    """``(key, logw [n], n) -> ancestors [n]``: ``resampling_fn`` within each of ``islands``
    contiguous groups (ancestor of a particle of island j lies in island j); island j uses the
    key ``jax.random.split(key, islands)[j]``."""

    resampling_fn: Callable
    islands: int

    @property
    def __name__(self) -> str:  # for the run's description
        return f"island {getattr(self.resampling_fn, '__name__', repr(self.resampling_fn))} x{self.islands}"

    def __call__(self, key, logw, n: int):
        k = self.islands
        m = n // k
        keys = jax.random.split(key, k)
        local = jax.vmap(lambda kk, lw: self.resampling_fn(kk, lw, m))(keys, logw.reshape(k, m))
        return (local.astype(jnp.int32) + (jnp.arange(k, dtype=jnp.int32) * m)[:, None]).reshape(n)

    def gather(self, particles, ancestors):
        """``particles[ancestors]`` island by island: each island's rows are taken from its own
        block (a gather batched over the island axis, which XLA keeps on each device)."""
        k = self.islands

        def take(x):
            n = x.shape[0]
            blocks = x.reshape((k, n // k) + x.shape[1:])
            local = (ancestors - (jnp.arange(k, dtype=jnp.int32) * (n // k)).repeat(n // k)).reshape(k, n // k)
            return jax.vmap(lambda b, i: b[i])(blocks, local).reshape(x.shape)

        return map_particles(take, particles)


def island_resampling(resampling_fn: Callable, k: int) -> IslandResampler:
    """``resampling_fn`` applied within each of ``k`` islands (see the module docstring);
    ``k = 1`` is ``resampling_fn`` itself."""
    k = check_positive_int(k, "k (the number of islands)")
    if not callable(resampling_fn):
        raise InputError(f"resampling_fn must be a function (key, logw, n) -> ancestors, got {resampling_fn!r}")
    if isinstance(resampling_fn, IslandResampler):
        raise InputError("resampling_fn is already an island resampler: give its base resampler")
    return resampling_fn if k == 1 else IslandResampler(resampling_fn, k)


def island_flags(logw, threshold: float, k: int):
    """[k] bool: which islands resample (their own ESS below ``threshold * m``, and some weight
    finite)."""
    m = logw.shape[0] // k
    blocks = logw.reshape(k, m)
    return jax.vmap(lambda lw: (ess(lw) < threshold * m) & jnp.isfinite(jax.nn.logsumexp(lw)))(blocks)


def reset_weights(logw, flags):
    """After resampling: each island in ``flags`` [k] gets its log-mean-exp as every weight
    (its Z_hat_j is kept), the others keep their weights."""
    k = flags.shape[0]
    blocks = logw.reshape(k, -1)
    mean = log_mean_exp(blocks)[:, None]
    return jnp.where(flags[:, None], jnp.broadcast_to(mean, blocks.shape), blocks).reshape(logw.shape)


def check_islands(n: int, k: int) -> None:
    """:class:`InputError` unless n particles split into k islands of equal size."""
    if n % k:
        raise InputError(f"{n} particles do not split into {k} islands of equal size: use a multiple of {k} "
                         "particles (island resampling puts n / k particles on each device of the data axis)")
