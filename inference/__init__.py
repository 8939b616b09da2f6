"""Inference kernels over :class:`ppl.Program` targets, one package per algorithm.

* :mod:`inference.smc`: sequential Monte Carlo (resamplers, kernels built from functions,
  SMC-steer, the step-level reward particle filter), ``smc.run``.

>>> import jax
>>> from genppl import models, ppl, inference
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
>>> result = inference.smc.run(program, 32, jax.random.key(1))
>>> result.weights.shape
(32,)
"""

from . import smc

__all__ = ["smc"]
