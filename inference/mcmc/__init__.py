"""Metropolis–Hastings over LLM continuations, and blockwise power sampling of p(x)^alpha.

Building blocks (blackjax style, all public):

* :mod:`.kernel` — :func:`build_kernel` (move, proposal, log-potential: functions) returns a
  hashable :class:`MHKernel`, the pure step ``kernel(key, state, lm, alpha, cap) -> (state,
  info)``; :func:`log_acceptance` (the MH ratio), :func:`extend` (append proposal tokens with
  their per-token log p / log q), :func:`masked_sum`, :func:`tempered` (the proposal);
* :mod:`.moves` — where a step regenerates from: :func:`moves.suffix`,
  :func:`moves.independent`, :func:`moves.custom`;
* :mod:`.power` — :func:`power_mcmc`, the blockwise sampler, with :class:`RewardTilt` and
  :class:`PowerSamples`;
* :mod:`.rejuvenation` — :func:`rejuvenation`, MH steps as an SMC resample-move;
* :mod:`.program` — :func:`program_mh`, MH over any :class:`ppl.Program` (potentials, stop
  strings, steps, host-side rewards), and :func:`program_move`, its SMC resample-move;
* :mod:`.diagnostics` — acceptance rates, split R-hat, bulk and tail ESS;
* :mod:`.chains` — :func:`run_chains`: several particle-Gibbs or program-MH chains with their
  diagnostics, as a :class:`ChainResult` (SMC's results interface).

>>> import jax
>>> from genppl import models
>>> from genppl.inference import mcmc
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> out = mcmc.power_mcmc(lm, [1], 8, 3, key=0, alpha=4.0, block_size=1, num_mcmc=2,
...                       move=mcmc.moves.independent())
>>> len(out.texts)
8
"""

from . import diagnostics, moves
from .chains import ChainResult, run_chains
from .kernel import (MAX_ALPHA, Extension, MHInfo, MHKernel, MHState, Tempered, build_kernel, check_alpha, empty, extend,
                     log_acceptance, masked_sum, tempered)
from .power import PowerSamples, RewardTilt, blockwise, power_mcmc, to_samples
from .program import ProgramMH, ProgramMHInfo, ProgramMove, program_mh, program_move
from .rejuvenation import Rejuvenation, rejuvenation

__all__ = [
    "MAX_ALPHA", "Extension", "MHInfo", "MHKernel", "MHState", "PowerSamples", "Rejuvenation", "RewardTilt", "Tempered",
    "blockwise", "build_kernel", "check_alpha", "diagnostics", "empty", "extend", "log_acceptance", "masked_sum",
    "moves", "power_mcmc", "rejuvenation", "tempered", "to_samples",
    "ProgramMH", "ProgramMHInfo", "ProgramMove", "program_mh", "program_move", "ChainResult", "run_chains",
]
