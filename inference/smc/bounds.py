"""Two-sided bounds on log Z for any program: the SMC lower bound and the conditional-SMC
upper bound, and the bidirectional divergence estimate they give.

For a program with target gamma(x) = p(x)^alpha phi(x), Z = sum_x gamma(x), and an SMC run
with proposal q and N particles:

* E[log Z_hat_SMC] <= log Z, since E[Z_hat_SMC] = Z (Jensen);
* E[log Z_hat_CSMC(x*)] >= log Z when the reference x* ~ pi, since E[1 / Z_hat_CSMC] = 1 / Z
  (conditional SMC samples the particle system from the extended target whose density
  ratio to SMC's law is Z_hat / Z).

The gap  E[log Z_hat_CSMC] - E[log Z_hat_SMC] = KL(Q || P) + KL(P || Q)  is the symmetrised KL
divergence between the law Q of SMC's particle system and the extended target P (the law of
conditional SMC's system with its reference marked): with N = 1 and no resampling it is
exactly KL(q || pi) + KL(pi || q) of the proposal's sequence law. It shrinks to 0 as the
proposal (or N) makes SMC exact, so it measures a proposal's quality from both sides.

On a real model exact references rarely exist: ``references=None`` draws them by weight from
one large SMC run with ``reference_particles`` particles (approximately exact; the upper bound
is then approximate too), or pass finished sequences from an exact sampler or long
particle-Gibbs chains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError, as_key, check_positive_int
from genppl.ppl.program import Program
from genppl.ppl.proposals import locally_optimal

from .conditional import build_kernel as build_conditional, conditional_sweep
from .kernel import build_kernel, init, sweep
from .resampling import multinomial

__all__ = ["LogZBounds", "log_z_bounds", "log_z_runs"]


@dataclasses.dataclass
class LogZBounds:
    """lower / upper: means over runs of log Z_hat of SMC and of conditional SMC; *_se their
    standard errors; gap = upper - lower (the symmetrised KL estimate, see the module);
    lower_runs / upper_runs: per-run values; log_z_var: Var(log Z_hat_SMC) across runs;
    exact_references: whether the references were exact samples (given by the caller)."""

    lower: float
    lower_se: float
    upper: float
    upper_se: float
    lower_runs: np.ndarray
    upper_runs: np.ndarray
    num_particles: int
    exact_references: bool

    @property
    def gap(self) -> float:
        return self.upper - self.lower

    @property
    def log_z_var(self) -> float:
        return float(np.var(self.lower_runs, ddof=1)) if len(self.lower_runs) > 1 else math.nan

    def __repr__(self) -> str:
        kind = "exact" if self.exact_references else "approximate (SMC-drawn)"
        return (f"<LogZBounds N={self.num_particles}: {self.lower:.4f} ± {self.lower_se:.4f} <= log Z <= "
                f"{self.upper:.4f} ± {self.upper_se:.4f} ({kind} references); bidirectional KL estimate "
                f"{self.gap:.4f}>")


def smc_log_zs(kernel, program, state, keys):
    """log Z_hat of independent SMC sweeps from ``state``, one per key (traceable)."""
    return jax.vmap(lambda k: sweep(kernel, program, state, k)[0].log_z)(keys)


def csmc_log_zs(kernel, program, references, lengths, n: int, keys):
    """log Z_hat of conditional SMC sweeps, one per (reference, length, key) (traceable)."""
    return jax.vmap(lambda r, l, k: conditional_sweep(kernel, program, r, l, n, k)[0].log_z)(references, lengths, keys)


smc_log_zs_jit = jax.jit(smc_log_zs, static_argnums=0)
sweep_jit = jax.jit(sweep, static_argnums=0)
csmc_log_zs_jit = jax.jit(csmc_log_zs, static_argnums=(0, 4))


def draw_references(program: Program, count: int, key, particles: int = 256, proposal=None):
    """``count`` finished sequences drawn by weight from one SMC run with ``particles``
    particles: (ids [count, L], lengths [count]). Approximately pi-distributed."""
    k_run, k_pick = jax.random.split(key)
    kernel = build_kernel(proposal=proposal)
    state, _ = sweep_jit(kernel, program, init(program, particles), k_run)
    if not bool(jnp.isfinite(jax.nn.logsumexp(state.logw))):
        raise InputError("every SMC particle was ruled out while drawing references: no continuation satisfies "
                         "the constraints within max_new_tokens (log Z = -inf), so there is no upper bound to compute")
    idx = multinomial(k_pick, state.logw, count)
    lm_state = state.particles.lm
    return lm_state.generated_ids(program.max_new_tokens)[idx], lm_state.num_generated[idx]


def log_z_bounds(program: Program, n: int, key=0, *, runs: int = 16, proposal: Callable | None = None,
                 references=None, reference_particles: int = 256) -> LogZBounds:
    """Lower and upper bounds on log Z (``runs`` SMC and ``runs`` conditional-SMC runs with
    ``n`` particles and ``proposal``, default locally optimal); see the module docstring.

    references: None (drawn by weight from an SMC run with ``reference_particles``
    particles), or a list of ``runs`` finished continuations (generated ids) drawn from pi.

    >>> import jax
    >>> from genppl import models, ppl
    >>> from genppl.inference import smc
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = ppl.Program(lm, [1], 3, alpha=2.0)
    >>> b = smc.log_z_bounds(program, 4, key=0, runs=8, proposal=ppl.proposals.prior())
    >>> bool(b.lower <= b.upper)
    True
    """
    if not isinstance(program, Program):
        raise InputError(f"log_z_bounds needs a ppl.Program, got {type(program).__name__}")
    check_positive_int(n, "n (the number of particles)")
    check_positive_int(runs, "runs")
    proposal = locally_optimal() if proposal is None else proposal
    k_low, k_ref, k_up = jax.random.split(as_key(key), 3)
    width = program.max_new_tokens
    if references is None:
        ids, lengths = draw_references(program, runs, k_ref, reference_particles, proposal)
        exact = False
    else:
        refs = [list(map(int, r)) for r in references]
        if len(refs) != runs:
            raise InputError(f"give one reference per run: {runs} runs but {len(refs)} references")
        if any(not r or len(r) > width for r in refs):
            raise InputError(f"each reference needs 1 to max_new_tokens={width} generated ids")
        ids = jnp.asarray([r + [0] * (width - len(r)) for r in refs], jnp.int32)
        lengths = jnp.asarray([len(r) for r in refs], jnp.int32)
        exact = True
    # SMC resampling like conditional SMC: multinomial, whenever the weights are unequal
    lower = np.asarray(smc_log_zs_jit(build_kernel(multinomial, proposal, 1.0), program, init(program, n),
                                      jax.random.split(k_low, runs)), np.float64)
    upper = np.asarray(csmc_log_zs_jit(build_conditional(proposal), program, ids, lengths, n,
                                       jax.random.split(k_up, runs)), np.float64)

    def se(x):
        return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else math.nan

    return LogZBounds(float(np.mean(lower)), se(lower), float(np.mean(upper)), se(upper), lower, upper, n, exact)


def log_z_runs(program: Program, n: int, runs: int, key=0, **kernel_options) -> np.ndarray:
    """log Z_hat of ``runs`` independent SMC runs with ``n`` particles (one compiled, vmapped
    call; ``kernel_options`` as for :func:`smc.build_kernel`): their variance is the standard
    diagnostic of an SMC configuration (Var(log Z_hat) ~ 1 or below for a useful estimate)."""
    check_positive_int(n, "n (the number of particles)")
    check_positive_int(runs, "runs")
    kernel = build_kernel(**kernel_options)
    keys = jax.random.split(as_key(key), runs)
    return np.asarray(smc_log_zs_jit(kernel, program, init(program, n), keys), np.float64)
