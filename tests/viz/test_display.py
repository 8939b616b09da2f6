"""Notebook displays: HTML tables with weights, log Z with its uncertainty, an inline figure;
the interactive genealogy (collapsible nodes; a particle shows its text and weight history)."""

import html
import re

import numpy as np

from genppl import viz


def test_weighted_results_html(smc_result):
    out = viz.results_html(smc_result, viz.figures.weight_traces)
    assert "<table>" in out and "<img src='data:image/png;base64," in out
    sd = viz.log_z_uncertainty(smc_result.ancestors, smc_result.log_weights)
    assert f"log Z = {smc_result.log_z:.4f} ± {sd:.4f}" in out
    w = viz.figures.normalised(smc_result.log_weights)
    for t, wi in zip(smc_result.texts, w):
        if wi > 0:
            assert f"<td style='text-align:left'>{wi:.3f}</td>" in out and html.escape(t) in out


def test_a_missing_figure_is_a_note_not_a_crash(samples):
    out = viz.results_html(type("R", (), {"texts": ["x"], "log_weights": np.zeros(1), "log_z": 0.0,
                                           "ancestors": None})(), viz.figures.genealogy)
    assert "no figure" in out and "log Z = 0.0000 ± 0.0000" in out
    out = viz.samples_html(samples)
    assert "not estimated" in out and out.count("<tr>") == 1 + len(samples.texts) and "<img" in out


def test_history_html(history):
    out = history._repr_html_()
    assert "log Z ≥ -1.0500 ± 0.0200" in out and "<img" in out and "History(8 steps" in out


def test_genealogy_view(smc_result):
    view = viz.genealogy_view(smc_result)
    tree = view.tree()
    # the initial particles with descendants at the end: 1 and 3 (ancestors hand-made in conftest)
    assert [node["first"] for node in tree] == [1, 3]
    leaves = sorted(p for node in tree for p in view.leaves(node))
    assert leaves == list(range(6))
    out = view._repr_html_()
    assert out.count("<details") == out.count("</details>") >= 6 + 2
    # clicking particle 4 shows its text and its weight history along its lineage
    block = re.search(r"<summary>particle 4: .*?</details>", out, re.S).group(0)
    assert "text 4" in block and "<svg" in block
    lineage = viz.lineage(smc_result.ancestors)[:, 4]
    expected = viz.figures.normalised(smc_result.step_log_weights)[np.arange(5), lineage[1:]]
    np.testing.assert_allclose(view.history(4), expected)
    assert " ".join(f"{w:.3g}" for w in expected) in block


def test_treescope_view(smc_result):
    view = viz.genealogy_view(smc_result)
    dicts = view.as_dicts()
    leaves = []

    def walk(node):
        if "particle" in node:
            leaves.append(node)
        for child in node.get("children", []):
            walk(child)

    for root in dicts:
        walk(root)
    assert sorted(leaf["text"] for leaf in leaves) == sorted(smc_result.texts)
    assert all(len(leaf["weight_history"]) == 5 for leaf in leaves)
    assert "treescope" in view.treescope()
