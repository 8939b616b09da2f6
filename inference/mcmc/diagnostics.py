"""Diagnostics of MH chains: acceptance rates from the per-step ``accepted`` flags.

>>> import numpy as np
>>> accepted = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 1]]], bool)  # [blocks, steps, chains]
>>> acceptance_per_block(accepted).tolist()
[0.75, 0.25]
>>> acceptance_per_block(np.zeros((3, 0, 2), bool)).tolist()  # no MH step
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["acceptance_per_block", "acceptance_rate"]


def acceptance_rate(accepted) -> float:
    """Fraction of accepted MH proposals over every step and chain (0.0 when there were none)."""
    accepted = np.asarray(accepted)
    return float(accepted.mean()) if accepted.size else 0.0


def acceptance_per_block(accepted) -> np.ndarray:
    """[blocks] acceptance rate of each block from ``accepted`` [blocks, N_MCMC, n] (0 where a
    block ran no MH step)."""
    accepted = np.asarray(accepted)
    if not accepted.size:
        return np.zeros((accepted.shape[0],))
    return accepted.reshape(accepted.shape[0], -1).mean(axis=1)
