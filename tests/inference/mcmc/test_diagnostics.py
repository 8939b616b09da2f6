"""Acceptance rates of MH chains."""

import numpy as np

from genppl.inference.mcmc import diagnostics


def test_acceptance_rates():
    accepted = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 1]]], bool)  # [blocks, steps, chains]
    assert diagnostics.acceptance_per_block(accepted).tolist() == [0.75, 0.25]
    assert diagnostics.acceptance_rate(accepted) == 0.5
    assert diagnostics.acceptance_per_block(np.zeros((3, 0, 2), bool)).tolist() == [0.0, 0.0, 0.0]
    assert diagnostics.acceptance_rate(np.zeros((3, 0, 2), bool)) == 0.0
