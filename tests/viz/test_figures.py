"""Every figure type renders to a non-empty PNG with the Agg backend and has the expected axes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.image import imread

from genppl import viz


def check_png(fig, path, titles, xlabels):
    """The saved PNG is a real picture (not blank), and the axes are the expected ones."""
    assert fig is not None and path.stat().st_size > 5_000
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.02, "the picture is blank"
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_xlabel() for ax in axes] == xlabels
    for ax, title in zip(axes, titles):
        assert title in ax.get_title()


def test_genealogy(smc_result, tmp_path):
    fig = viz.figures.genealogy(smc_result, tmp_path / "g.png")
    check_png(fig, tmp_path / "g.png", ["genealogy"], ["step"])
    ax = fig.axes[0]
    steps, n = smc_result.ancestors.shape
    assert len(ax.collections[0].get_segments()) == steps * n          # one segment per particle per step
    assert len(ax.patches) == int(smc_result.resampled.sum())          # one shaded band per resampling
    colours = ax.collections[0].get_colors()
    dead = viz.surviving(smc_result.ancestors, np.isfinite(smc_result.log_weights))
    assert sum(c[3] > 0.5 for c in colours) == int(dead[1:].sum())    # dark: lineages of weighted particles


def test_weight_traces(smc_result, tmp_path):
    fig = viz.figures.weight_traces(smc_result, tmp_path / "w.png")
    check_png(fig, tmp_path / "w.png", ["effective sample size", "log-weights"], ["step", "step"])
    ess_line = fig.axes[0].lines[0]
    np.testing.assert_allclose(ess_line.get_ydata(), smc_result.ess)


def test_token_logprobs(tmp_path):
    from tests.viz.conftest import FakeEffects

    fx = FakeEffects()
    fig = viz.figures.token_logprobs(fx, tmp_path / "t.png")
    check_png(fig, tmp_path / "t.png", ["per-token log-probabilities"], [""])
    assert len(fig.axes[0].patches) == len(fx.tokens)                # one bar per token


def test_mh_traces(mh_result, tmp_path):
    fig = viz.figures.mh_traces(mh_result, tmp_path / "m.png")
    check_png(fig, tmp_path / "m.png", ["MH acceptance", "log target"], ["block", "MH step"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, mh_result.trace_accepted.reshape(4, -1).mean(1))
    traces = [ln for ln in fig.axes[1].lines if len(ln.get_xdata()) == 12]  # 4 blocks x 3 moves
    assert len(traces) == 3                                               # one trace per chain


def test_training_curves(history, tmp_path):
    fig = history.plot(tmp_path / "v.png")
    check_png(fig, tmp_path / "v.png", ["training loss", "ESS"], ["step", "step"])
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.7, 0.9])


def test_sample_stats(samples, tmp_path):
    fig = viz.figures.sample_stats(samples, tmp_path / "s.png")
    check_png(fig, tmp_path / "s.png", ["log-probability", "length"], ["log p(x | prompt)", "tokens"])


def test_a_result_without_a_genealogy_says_so():
    class Plain:
        texts, log_weights, ancestors = ["a"], np.zeros(1), None

    with pytest.raises(ValueError, match="no ancestors"):
        viz.figures.genealogy(Plain())
