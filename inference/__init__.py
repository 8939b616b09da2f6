"""Inference kernels over :class:`ppl.Program` targets, one package per algorithm.

* :mod:`inference.smc` — sequential Monte Carlo: ``smc.init`` / ``smc.build_kernel`` (a pure
  ``kernel(key, state, program) -> (state, info)`` from a resampler, a proposal and a move),
  the SMC-steer kernel (``smc.steer``), the step-level reward particle filter, ``smc.run``.
* :mod:`inference.mcmc` — Metropolis–Hastings over suffixes with moves as functions
  (``mcmc.moves``), blockwise power sampling ``mcmc.power_mcmc``, and ``mcmc.rejuvenation``,
  MH steps as an SMC resample-move.
* :mod:`inference.power` — Power-SMC (``power.power_smc``) and rollout power sampling
  (``power.power_rollout``) for p(x)^alpha.
* :mod:`inference.variational` — learned proposals and twists: guides, objectives (ELBO,
  IWAE family, forward KL, trajectory balance, contrastive twists), the optax ``Trainer``,
  bounds on log Z.
* :mod:`inference.search` — search baselines with SMC's results interface: best-of-N,
  beam search (tokens or steps), self-consistency.
* :mod:`inference.records` — run records: ``save(result, path)`` / ``load(path)`` (also
  ``result.save(path)``) and ``replay(record)``, which reruns and checks bit-identical output;
  :mod:`inference.progress` (the same module as :mod:`models.progress`) — progress bars for
  compiled sweeps, which run as a few chunks of one compiled program.

>>> import jax
>>> from genppl import models, ppl, inference
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
>>> result = inference.smc.run(program, 32, jax.random.key(1))
>>> result.weights.shape
(32,)
"""

from genppl.models import progress  # one module under both names: setting progress.CHUNKS here sets it there

from . import mcmc, power, records, search, smc, variational
from .records import load, replay, save

__all__ = ["load", "mcmc", "power", "progress", "records", "replay", "save", "search", "smc", "variational"]
