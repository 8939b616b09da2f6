"""SMC runs for variational inference: weighted target samples, and many log Z estimates.

* :func:`smc_samples`: the final weighted particles of one SMC sweep, a sampler with the
  signature ``(program, proposal, key, n) -> (tokens [n, L], log_weights [n])`` that the
  objectives take as ``source`` (pure and traceable, so it runs inside a jitted loss);
* :func:`smc_log_z`: log Z_hat and the final ESS / n of many independent sweeps, vmapped in one
  compiled call. E[Z_hat] = Z, so E[log Z_hat] <= log Z (Jensen): a stochastic lower bound.
"""

from __future__ import annotations

import jax
import numpy as np

from genppl.inference import smc
from genppl.models.interface import InputError, as_key, check_positive_int

from .trace import generated_tokens

__all__ = ["many_log_z", "smc_log_z", "smc_samples"]


def smc_samples(program, proposal, key, n: int, *, resampling_fn=smc.systematic, ess_threshold: float = 0.5):
    """Final particles of one SMC sweep with ``proposal``: (tokens [n, L], log-weights [n]).

    Self-normalised, the weights give a consistent estimate of expectations under the target.
    Pure and traceable (``n`` static); bind the keyword options with ``functools.partial``.
    """
    kernel = smc.build_kernel(resampling_fn, proposal, ess_threshold)
    final, _ = smc.sweep(kernel, program, smc.init(program, n), key)
    return generated_tokens(program, final.particles), final.logw


def many_log_z(kernel, program, state, keys):
    """log Z_hat [runs] and final ESS / n [runs] of one sweep per key from ``state``. Pure."""
    n = state.logw.shape[0]

    def one(key):
        final, _ = smc.sweep(kernel, program, state, key)
        return final.log_z, smc.ess(final.logw) / n

    return jax.vmap(one)(keys)


def smc_log_z(program, key, n: int, runs: int, *, kernel=None, **kernel_options):
    """log Z_hat [runs] and final ESS / n [runs] (float64 numpy) of ``runs`` independent SMC
    sweeps with ``n`` particles, in one compiled call (the kernel is static, the program
    traced: new parameters or prompts reuse it).

    kernel: from :func:`smc.build_kernel`; without one, ``kernel_options`` (``proposal``,
    ``resampling_fn``, ``ess_threshold``, ``move``) build it. ``ess_threshold=0.0`` never
    resamples: the final ESS is then the importance-sampling ESS of the proposal.
    """
    check_positive_int(n, "n")
    check_positive_int(runs, "runs")
    if kernel is None:
        kernel = smc.build_kernel(**kernel_options)
    elif kernel_options:
        raise InputError(f"give either kernel= or kernel options, not both (got {sorted(kernel_options)})")
    keys = jax.random.split(as_key(key), runs)
    log_z, final_ess = jax.jit(many_log_z, static_argnums=0)(kernel, program, smc.init(program, n), keys)
    return np.asarray(log_z, np.float64), np.asarray(final_ess, np.float64)
