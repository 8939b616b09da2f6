"""Power sampling of pi(x) ∝ p(x)^alpha with SMC and with rollouts (the MH sampler is
:func:`inference.mcmc.power_mcmc`).

* :mod:`.smc` — :func:`power_smc` (Power-SMC: proposal softmax(alpha * logits), weights
  log sum_v p(v)^alpha that depend only on the prefix) and :class:`PowerProgram`, the
  program with an optional alpha ramp; runs through ``inference.smc.run``, so a
  rejuvenation move (``inference.mcmc.rejuvenation()``) or another resampler plug in;
* :mod:`.adaptive` — :func:`adaptive_power_smc`: the exponent of each token chosen by bisection
  on the conditional ESS (a pilot run), then fixed, so the weights stay exact;
* :mod:`.rollout` — :func:`power_rollout`: tokens drawn from the estimated next-token law
  p(v)^alpha zeta_hat(v), zeta estimated by rollouts (:func:`next_token_law`).

>>> import jax
>>> from genppl import models
>>> from genppl.inference import power
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> len(power.power_rollout(lm, [1], 4, 3, key=0, alpha=2.0).texts)
4
"""

from .adaptive import ScheduledPowerProgram, adaptive_power_smc
from .rollout import TokenLaw, next_token_law, power_rollout, sample_tokens
from .smc import PowerProgram, power_smc

__all__ = ["ScheduledPowerProgram", "adaptive_power_smc", "PowerProgram", "TokenLaw", "next_token_law", "power_rollout", "power_smc", "sample_tokens"]
