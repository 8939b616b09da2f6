"""Results for the viz tests, built by hand: the viz package works on any object with the
result protocol (see genppl.viz), so these tests need no model and compile nothing."""

import numpy as np
import pytest


class FakeSMC:
    """An SMC-like result: 6 particles, 5 steps, resampling at steps 2 and 4."""

    def __init__(self):
        n, steps = 6, 5
        self.texts = [f"text {i}" for i in range(n)]
        self.ancestors = np.tile(np.arange(n), (steps, 1))
        self.ancestors[2] = [0, 0, 1, 1, 3, 3]
        self.ancestors[4] = [2, 2, 2, 4, 5, 5]
        self.resampled = np.array([False, False, True, False, True])
        self.step_log_weights = np.log(np.random.default_rng(0).uniform(0.1, 1.0, (steps, n)))
        self.step_log_weights[1, 5] = -np.inf
        self.log_weights = self.step_log_weights[-1].copy()
        self.log_weights[0] = -np.inf
        self.ess = np.array([6.0, 4.5, 5.5, 3.0, 5.0])
        self.log_z = -1.25

    def __repr__(self):
        return "<FakeSMC>"


class FakeMH:
    def __init__(self):
        rng = np.random.default_rng(1)
        self.texts = ["a", "b", "c"]
        self.trace_accepted = rng.uniform(size=(4, 3, 3)) < 0.4      # [blocks, N_MCMC, n]
        self.trace_log_target = np.cumsum(rng.normal(size=(4, 3, 3)), 1)


class FakeSamples:
    texts = ["a b", "c", "d e f", "g"]
    log_probs = np.array([-3.0, -1.0, -5.5, -2.0])
    num_tokens = np.array([3, 1, 6, 2])
    finished = np.array([True, True, False, True])

    def __repr__(self):
        return "Samples(n=4)"


class FakeEffects:
    tokens = [" the", " cat", " sat", "."]
    log_p = np.array([-1.0, -4.0, -2.5, -0.3])
    log_kept = np.array([0.0, -2.0, -0.1, -np.inf])


@pytest.fixture
def smc_result():
    return FakeSMC()


@pytest.fixture
def mh_result():
    return FakeMH()


@pytest.fixture
def samples():
    return FakeSamples()


@pytest.fixture
def history():
    from genppl import viz

    rows = [{"step": i, "loss": 1.0 / i, "log_z": -1.0} for i in range(1, 9)]
    for r in rows[3::4]:
        r["eval"] = {"elbo": -1.2, "smc_lower": -1.05, "smc_lower_se": 0.02, "ess": 0.5 + 0.05 * r["step"]}
    return viz.History(rows)
