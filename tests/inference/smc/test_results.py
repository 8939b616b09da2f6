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
