"""SMC-steer (Lew et al. 2023): selection without replacement over every next token.

Every particle is expanded by *every* next token (child weight w_i p(v)^alpha phi(v), the
target increment of ``program.next_token_weights``), and n children are kept by
Fearnhead–Clifford selection (:func:`select_without_replacement`): the heaviest children are
kept with their own weights, the rest are drawn systematically with weight (their total) /
(slots left), so no child is chosen twice and E[new weight of each child] equals its weight —
the total weight is preserved exactly and log Z_hat stays unbiased. A finished particle has
one child, itself. Token-level programs only (no step delimiter).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from genppl.models.interface import InputError, map_particles
from genppl.ppl.program import Program

from .kernel import SMCInfo, SMCState, finish_step

__all__ = ["SteerKernel", "build_kernel", "select_without_replacement"]


@dataclasses.dataclass(frozen=True)
class SteerKernel:
    """``kernel(key, state, program) -> (state, info)``: one SMC-steer step."""

    @staticmethod
    def check(program: Program) -> None:
        """InputError unless ``program`` is token-level (SMC-steer expands every next token)."""
        if program.step_delimiter is not None:
            raise InputError("SMC-steer expands every next token, so it needs a token-level program: "
                             "remove step_delimiter or use smc.build_kernel()")

    def __call__(self, key, state: SMCState, program: Program) -> tuple[SMCState, SMCInfo]:
        self.check(program)  # static: raised while tracing, before anything runs
        parents, faulty = program.mark_faults(state.particles, ~state.particles.done)
        logw = jnp.where(faulty, -jnp.inf, state.logw)
        particles, logw, parent = expand_and_select(key, program, parents, logw)
        return finish_step(state, particles, logw, parent, jnp.ones((), bool), fault=parents.fault)


def build_kernel() -> SteerKernel:
    """The SMC-steer step (no resampler, no proposal: every child is enumerated)."""
    return SteerKernel()


def expand_and_select(key, program: Program, particles, logw):
    """Expand every particle by every token, keep n children. Returns (particles, logw, parents)."""
    n = logw.shape[0]
    logp, target = program.next_token_weights(particles)
    vocab = target.shape[1]
    done = particles.done
    # a finished particle has exactly one child: itself, in column 0
    own = jnp.where(jnp.arange(vocab) == 0, 0.0, -jnp.inf)
    child = logw[:, None] + jnp.where(done[:, None], own[None, :], target)
    child = jnp.where(jnp.isnan(child), -jnp.inf, child).reshape(-1)
    chosen, new_logw = select_without_replacement(key, child, n)

    parent, token = (chosen // vocab).astype(jnp.int32), (chosen % vocab).astype(jnp.int32)
    particles = map_particles(lambda x: x[parent], particles)
    moving = ~particles.done
    token = jnp.where(moving, token, program.lm.eos_id)
    log_p_token = logp[parent, token]
    start = particles.done
    new, inc, _ = program.append(particles, token, jnp.where(moving, new_logw, 0.0), log_p_token, moving)
    new, inc = program.boundary(new, inc, new.done & ~start)
    # `append` returns the move's weight for moving rows (with cap/boundary increments); the
    # finished rows keep their selected weight
    return new, jnp.where(moving, inc, new_logw), parent


def select_without_replacement(key, logw, n: int):
    """Fearnhead–Clifford selection of n of the candidates with log-weights ``logw`` [M].

    Returns (chosen [n] indices, their new log-weights [n]). The heaviest candidates (those
    with c * w >= 1, c solving sum_j min(1, c w_j) = n) are kept with their own weights; the
    rest are drawn systematically (in a random order) with weight (their total) / (slots
    left), so each is drawn at most once and E[new weight of j] = w_j. The total weight is
    preserved exactly. With fewer than n candidates of positive weight, each is split evenly
    over several slots.
    """
    if logw.shape[0] < n:  # fewer candidates than slots: pad with impossible ones
        logw = jnp.concatenate([logw, jnp.full((n - logw.shape[0],), -jnp.inf, logw.dtype)])
    total = jax.nn.logsumexp(logw)
    alive = jnp.isfinite(total)
    weights = jnp.exp(jnp.where(alive, logw - total, -jnp.inf))  # normalised
    size = weights.shape[0]

    top_w, top_idx = jax.lax.top_k(weights, n)
    num_positive = jnp.sum(weights > 0)
    # k kept deterministically: the first k with (n - k) W_(k+1) < tail mass beyond the top k
    tail = 1.0 - jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(top_w)[:-1]])
    below = (n - jnp.arange(n)) * top_w < tail
    keep = jnp.where(jnp.any(below), jnp.argmax(below), n)
    keep = jnp.minimum(keep, num_positive)
    slots = jnp.arange(n)

    # the top `keep` stay; n - keep are drawn systematically from the rest
    rest = weights.at[top_idx].set(jnp.where(slots < keep, 0.0, top_w))
    rest_mass = rest.sum()
    spacing = rest_mass / jnp.maximum(n - keep, 1)
    key_order, key_u = jax.random.split(key)
    points = (slots - keep + jax.random.uniform(key_u, ())) * spacing
    # a random order decorrelates the picks: identical parents would otherwise all give the
    # child at the same offset
    order = jax.random.permutation(key_order, size)
    cdf = jnp.cumsum(rest[order])
    points = jnp.minimum(points, cdf[-1] * (1 - 1e-6))
    drawn = order[jnp.minimum(jnp.searchsorted(cdf, points, side="right"), size - 1)]
    kept_slot = slots < keep
    chosen = jnp.where(kept_slot, top_idx, drawn)
    new_logw = jnp.where(kept_slot, logw[chosen], total + jnp.log(jnp.maximum(spacing, 1e-38)))

    # fewer live candidates than slots: split each one's weight over its copies
    few = num_positive < n
    m = jnp.maximum(num_positive, 1)
    owner = top_idx[slots % m]
    copies = n // m + ((slots % m) < (n % m))
    chosen = jnp.where(few, owner, chosen)
    new_logw = jnp.where(few, logw[owner] - jnp.log(copies.astype(jnp.float32)), new_logw)
    return chosen, jnp.where(alive, new_logw, -jnp.inf)


