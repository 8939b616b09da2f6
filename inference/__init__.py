"""Inference kernels over :class:`ppl.Program`: sequential Monte Carlo and its variants.

>>> import jax
>>> from genppl import models, ppl, inference
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
>>> result = inference.smc(program, 32, jax.random.key(1))
>>> result.weights.shape
(32,)
"""

from .particle_filter import reward_particle_filter
from .resampling import RESAMPLERS, ess, log_mean_exp, multinomial, residual, stratified, systematic
from .results import SMCResult
from .sequential_mc import SMCState, init, smc, step
from .mcmc import MHConfig, MHState, PowerSamples, RewardTilt, power_mcmc
from .power import MHMove, PowerProgram, power_rollout, power_smc

__all__ = [
    "RESAMPLERS", "SMCResult", "SMCState", "ess", "init", "log_mean_exp", "multinomial",
    "residual", "reward_particle_filter", "smc", "step", "stratified", "systematic",
    "MHConfig", "MHMove", "MHState", "PowerProgram", "PowerSamples", "RewardTilt", "power_mcmc",
    "power_rollout", "power_smc",
]

# variational inference: learned proposals and twists (inference.variational*)
from . import variational, variational_objectives, variational_train
from .variational import Guide
from .variational_train import Trainer, TrainingError

__all__ += ["Guide", "Trainer", "TrainingError", "variational", "variational_objectives", "variational_train"]
