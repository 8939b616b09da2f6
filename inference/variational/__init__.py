"""Variational inference: learned proposals and twists for a :class:`ppl.Program`.

The target pi(x) ∝ p(x)^alpha phi(x) never changes; a :class:`Guide` adds a learned proposal
q_theta and/or a learned twist psi_theta, objectives fit theta, and bounds measure the result.
One job per module:

* :mod:`.guide`: :class:`Guide`, the log-q functions (:func:`tilted_target`,
  :func:`adapted_lm`) and the guide's proposal (:class:`LearnedProposal`);
* :mod:`.trace`: :func:`rollout` (samples from q) and :func:`trace` (teacher forcing);
* :mod:`.sampling`: :func:`smc_samples` (a sampler of weighted target samples) and
  :func:`smc_log_z` (many SMC log Z estimates in one vmapped call);
* :mod:`.exact`: enumeration on tabular models (:func:`exact_batch`, :func:`exact_samples`,
  :func:`exact_kl`);
* :mod:`.bounds`: ELBO, E[log Z_hat], EUBO and the KL bounds they imply;
* :mod:`.objectives`: ELBO, IWAE / MIWAE / CIWAE, forward KL, trajectory balance,
  sub-trajectory balance, contrastive twist learning;
* :mod:`.train`: :class:`Trainer` (optax, checkpoints, :class:`TrainingError`), :func:`fit`,
  :func:`load_guide_params`.

>>> import jax, optax
>>> from genppl import models, ppl
>>> from genppl.inference import smc, variational
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> program = ppl.Program(lm, [1], 2, potential=ppl.BannedTokens([2]), alpha=2.0)
>>> guide = variational.Guide(proposal=models.TabularAdapter(lm))
>>> params, _ = variational.fit(variational.trajectory_balance(guide, 8), program, optax.adam(0.05), 3,
...                             progress=False)
>>> result = smc.run(guide.program(params["guide"], program), 8, 0, proposal=guide.proposal_fn)
>>> result.weights.shape
(8,)
"""

from .bounds import bounds
from .exact import check_exact, enumerate_tokens, exact_batch, exact_kl, exact_samples
from .guide import Guide, LearnedProposal, adapted_lm, check_program, combine_rows, log_normalize, tilted_target, twist_rows
from .objectives import (
    ELBO, IWAE, ContrastiveTwist, ForwardKL, Objective, SubTrajectoryBalance, TrajectoryBalance, check_source, ciwae,
    contrastive_twist, elbo, forward_kl, iwae, loo_mean, miwae, subtrajectory_balance, trajectory_balance,
)
from .sampling import many_log_z, smc_log_z, smc_samples
from .trace import Trace, generated_tokens, rollout, trace
from .train import Trainer, TrainingError, TrainState, all_finite, fit, load_guide_params, read_checkpoint

__all__ = [
    # guide
    "Guide", "LearnedProposal", "adapted_lm", "check_program", "combine_rows", "log_normalize", "tilted_target",
    "twist_rows",
    # sampling and teacher forcing
    "Trace", "generated_tokens", "rollout", "trace", "many_log_z", "smc_log_z", "smc_samples",
    # exact answers and bounds
    "bounds", "check_exact", "enumerate_tokens", "exact_batch", "exact_kl", "exact_samples",
    # objectives
    "ELBO", "IWAE", "ContrastiveTwist", "ForwardKL", "Objective", "SubTrajectoryBalance", "TrajectoryBalance",
    "check_source", "ciwae", "contrastive_twist", "elbo", "forward_kl", "iwae", "loo_mean", "miwae",
    "subtrajectory_balance", "trajectory_balance",
    # training
    "Trainer", "TrainingError", "TrainState", "all_finite", "fit", "load_guide_params", "read_checkpoint",
]
