"""The SMC result object: weights, votes, display, plots."""

import numpy as np
import pytest

from genppl import ppl
from genppl.inference import smc

from .enumeration import (BANNED, CAP, random_lm)


def test_result_object():
    lm = random_lm(17)
    program = ppl.Program(lm, [1], CAP, potential=BANNED)
    result = smc.run(program, 32, 0, ess_threshold=1.0)
    assert len(result.texts) == len(result.token_ids) == 32
    assert np.isclose(result.weights.sum(), 1.0)
    assert len(result.ess) == len(result.resampled) >= 1
    assert np.all((result.ess > 0) & (result.ess <= 32 + 1e-6))
    assert all(2 not in ids for ids in result.token_ids)
    votes = result.vote(lambda text: len(text))
    assert np.isclose(sum(votes.values()), 1.0) and list(votes.values()) == sorted(votes.values(), reverse=True)
    assert result.best_answer(len) == next(iter(votes))
    assert result.best() in result.texts
    assert np.isclose(sum(result.distribution().values()), 1.0)
    assert "log Z" in repr(result) and "<table>" in result._repr_html_()
    assert str(result.num_particles) in result.summary()


def test_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    lm = random_lm(18)
    result = smc.run(ppl.Program(lm, [1], CAP, potential=BANNED), 16, 0, ess_threshold=1.0)
    ax_ess, ax_w = result.plot()
    assert ax_ess.get_ylabel() == "ESS" and len(ax_w.patches) == 16


def test_genealogy_diagnostics():
    """Ancestors [steps, n]: step 1 resamples to (0, 0, 2, 2), step 2 keeps, step 3 resamples
    to (1, 1, 1, 3): the final particles descend from initial particles 0 and 2."""
    ancestors = np.array([[0, 1, 2, 3], [0, 0, 2, 2], [0, 1, 2, 3], [1, 1, 1, 3]])
    resampled = np.array([False, True, False, True])
    result = smc.SMCResult([[1]] * 4, ["a"] * 4, np.zeros(4), 0.0, np.array([4.0, 2.0, 3.0, 1.5]), resampled,
                           np.ones(4, bool), np.zeros(4), ancestors=ancestors)
    d = result.diagnostics()
    assert d["resampling_steps"] == [1, 3] and d["unique_ancestors"] == [2, 2]
    assert d["lineages"] == 2 and d["min_ess"] == 1.5 and d["final_ess"] == pytest.approx(4.0)


@pytest.mark.slow  # ~10 s: 64 compiled sweeps
def test_log_z_runs_spread():
    program = ppl.Program(random_lm(3), [1], CAP, potential=BANNED)
    runs = smc.log_z_runs(program, 8, 64, key=0)
    assert runs.shape == (64,) and np.all(np.isfinite(runs)) and 0 < np.var(runs) < 1
    result = smc.run(program, 8, 0, ess_threshold=1.0)
    assert 1 <= result.diagnostics()["lineages"] <= 8 and result.ancestors.shape == (len(result.ess), 8)
