"""Bounds on log Z and on the KL divergences between a guide's q and the target pi.

With importance weights w(x) = pi_unnorm(x) / q(x) and Z = sum_x pi_unnorm(x):

* ELBO = E_q[log w] = log Z - KL(q||pi) <= log Z;
* E[log Z_hat_SMC] <= log Z (Jensen on the unbiased Z_hat of SMC with the guide);
* EUBO = E_pi[log w] = log Z + KL(pi||q) >= log Z (needs exact target samples);

so KL(q||pi) <= EUBO - ELBO and KL(pi||q) <= EUBO - max(ELBO, E[log Z_hat]).

With ``upper=True`` the conditional-SMC upper bound of :func:`inference.smc.log_z_bounds` is
added (E[log Z_hat_CSMC] >= log Z for references drawn from pi; from the exact batch when given,
else by weight from a large SMC run with the guide: then approximate), and
``bidirectional_kl`` = csmc_upper - smc_lower, the symmetrised KL between SMC's particle
system with the guide and its extended target (0 when the guide is exact).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import as_key, check_positive_int

from .. import smc
from .sampling import smc_log_z
from .trace import rollout, trace

__all__ = ["bounds"]


def bounds(guide, params, program, key, n: int = 64, runs: int = 16, exact=None, upper: bool = False) -> dict:
    """Bounds on log Z and on the KL divergences between q and pi.

    * ``elbo``: E_q[log w] <= log Z (n importance samples from q);
    * ``smc_lower``: mean over ``runs`` of log Z_hat of SMC with the learned guide and n
      particles (E[log Z_hat] <= log Z), with its standard error ``smc_lower_se``;
    * ``eubo``: E_pi[log w] >= log Z, from exact samples (``exact``: a batch from
      :func:`exact_batch`, used as an exact expectation); None where they do not exist;
    * ``kl_q_pi <= eubo - elbo`` and ``kl_pi_q <= eubo - max(elbo, smc_lower)``.
    Also ``ess``: mean final ESS / n of the SMC runs, and ``log_z_var``: Var(log Z_hat).
    ``upper=True`` adds ``csmc_upper`` (with ``csmc_upper_se``, ``csmc_exact_references``) and
    ``bidirectional_kl`` (see the module docstring).
    """
    check_positive_int(n, "n")
    check_positive_int(runs, "runs")
    k1, k2 = jax.random.split(as_key(key))
    guided, proposal = guide.program(params, program), guide.proposal_fn
    logw = np.asarray(jax.jit(rollout, static_argnums=(2, 3))(guided, k1, n, proposal)[1], np.float64)
    log_z, final_ess = smc_log_z(guided, k2, n, runs, proposal=proposal)
    out = {"elbo": float(np.mean(logw)) if np.all(np.isfinite(logw)) else -math.inf,
           "smc_lower": float(np.mean(log_z)), "smc_lower_se": float(np.std(log_z, ddof=1) / np.sqrt(runs)),
           "log_z_var": float(np.var(log_z, ddof=1)), "ess": float(np.mean(final_ess)), "eubo": None}
    if exact is not None:
        tr = jax.jit(trace, static_argnums=2)(guided, exact["tokens"], proposal)
        logw_pi = np.asarray(tr.log_target_total - tr.log_q_total, np.float64)
        pi = np.exp(np.asarray(exact["log_weights"], np.float64))
        with np.errstate(invalid="ignore"):
            out["eubo"] = float(np.sum(np.where(pi > 0, pi * logw_pi, 0.0)))
        out["kl_q_pi"] = out["eubo"] - out["elbo"]
        out["kl_pi_q"] = out["eubo"] - max(out["elbo"], out["smc_lower"])
    if upper:
        references = None
        if exact is not None:  # exact draws from pi: the upper bound is then exact too
            pi = np.exp(np.asarray(exact["log_weights"], np.float64))
            rows = np.asarray(jax.random.choice(jax.random.fold_in(k2, 1), len(pi), (runs,), p=jnp.asarray(pi / pi.sum())))
            tokens = np.asarray(exact["tokens"])
            eos = program.lm.eos_id
            references = [list(tokens[r][:list(tokens[r]).index(eos) + 1] if eos in list(tokens[r]) else tokens[r])
                          for r in rows]
        b = smc.log_z_bounds(guided, n, jax.random.fold_in(k2, 2), runs=runs, proposal=proposal, references=references)
        out.update(csmc_upper=b.upper, csmc_upper_se=b.upper_se, csmc_exact_references=b.exact_references,
                   bidirectional_kl=b.upper - out["smc_lower"])
    return out
