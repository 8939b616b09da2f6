"""Checks of SMC's inputs at the public boundary (one place, shared by every entry point)."""

from __future__ import annotations

import numbers

from genppl.models.interface import InputError


def check_kernel_parts(resampling_fn, proposal, ess_threshold, move) -> None:
    if not callable(resampling_fn):
        raise InputError("resampling_fn must be a function (key, logw, n) -> ancestor indices, "
                         f"e.g. inference.smc.systematic; got {resampling_fn!r}")
    if not callable(proposal):
        raise InputError("proposal must be a function (program, state, target) -> (log q, log w), "
                         f"e.g. ppl.proposals.prior(); got {proposal!r}")
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, numbers.Real) \
            or not 0.0 <= ess_threshold <= 1.0:
        raise InputError(f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}")
    if move is not None and not callable(move):
        raise InputError("move must be a function (key, program, particles, step) -> particles, "
                         f"e.g. inference.mcmc.rejuvenation(); got {move!r}")

