"""Sequential Monte Carlo over :class:`ppl.Program` targets, built from functions.

Building blocks (blackjax style): :func:`init` and :func:`build_kernel` (a pure
``kernel(key, state, program) -> (state, info)``), resamplers with one signature
``(key, logw, n) -> ancestors``, the SMC-steer selection kernel (:mod:`.steer`), the pure
:func:`sweep` loop, and :func:`run`, which jits the sweep and returns an :class:`SMCResult`.

>>> import jax
>>> from genppl import models, ppl
>>> from genppl.inference import smc
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
>>> kernel = smc.build_kernel(smc.residual, ppl.proposals.prior(), ess_threshold=1.0)
>>> state = smc.init(program, 8)
>>> state, info = kernel(jax.random.key(1), state, program)
>>> info.ancestors.shape
(8,)
"""

from . import conditional, islands, replay, resampling, steer
from .islands import IslandResampler, island_resampling
from .bounds import LogZBounds, log_z_bounds, log_z_runs
from .kernel import SMCInfo, SMCKernel, SMCState, build_kernel, finish_step, init, sweep, sweep_steps
from .particle_filter import reward_particle_filter
from .resampling import ess, log_mean_exp, multinomial, residual, stratified, systematic
from .results import SMCResult
from .run import run

__all__ = [
    "SMCInfo", "SMCKernel", "SMCResult", "SMCState", "build_kernel", "ess", "finish_step", "init",
    "log_mean_exp", "multinomial", "residual", "resampling", "reward_particle_filter", "run",
    "steer", "stratified", "sweep", "sweep_steps", "systematic", "conditional", "replay", "islands", "IslandResampler",
    "island_resampling", "LogZBounds", "log_z_bounds", "log_z_runs",
]
