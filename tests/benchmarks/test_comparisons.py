"""The comparisons' ``--quick`` paths run end to end on the bundled model and write their
table (between markers) and figure; slow: each compiles several programs (1-3 min of CPU)."""

import math

import pytest

from tests.benchmarks.test_testbed import load

SCRIPTS = {
    "compare_prm": ("compare-prm-quick", "prm_scaling_quick.png", "particle filter (PRM)"),
    "compare_power": ("compare-power-quick", "power_panel_quick.png", "Power-SMC"),
    "compare_amortised": ("compare-amortised-quick", "amortised_quick.png", "LoRA, trajectory balance"),
    "compare_ctrlg": ("compare-ctrlg-quick", "ctrlg_quick.png", "HMM x DFA guide (SMC)"),
}


@pytest.mark.slow  # 1-3 min each on 2 CPU cores: the whole --quick path of one comparison
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_quick_path_writes_its_table_and_figure(name, tmp_path):
    section, figure, row = SCRIPTS[name]
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    out = load(name).main(["--quick", "--results", str(results)])
    text = results.read_text()
    assert f"<!-- BEGIN {section} -->" in text and f"<!-- END {section} -->" in text
    assert f"| {row} |" in text and (tmp_path / "figures" / figure).stat().st_size > 0
    assert f"](figures/{figure})" in text and len(list((tmp_path / "figures").iterdir())) == 1  # its own figure only
    if name == "compare_prm":
        for (method, n), (ci, tokens) in out["rows"].items():
            assert 0.0 <= ci[1] <= ci[0] <= ci[2] <= 1.0 and tokens > 0, (method, n)
    elif name == "compare_ctrlg":
        guided = out["table"]["HMM x DFA guide (SMC)", 1]["success"]
        assert len(guided) == 2 and all(v in (0.0, 1.0) for v in guided)
    else:
        table = out["table"]
        assert all(0.0 <= v <= 1.0 for r in table.values() for v in r["accuracy"])
        if name == "compare_amortised":
            assert all(0.0 < v <= 1.0 + 1e-6 for r in table.values() for v in r["ess"])
            assert all(c["seconds"] > 0 for c in out["costs"].values())
        else:
            assert all(math.isfinite(v) for r in table.values() for v in r["log_p"])


@pytest.mark.slow  # trains two LoRAs for two steps and runs SMC with the bundled PRM (2.5 min on 2 cores)
def test_amortised_reward_target_trains_token_by_token_and_keeps_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    out = load("compare_amortised").main(["--quick", "--task", "chains", "--model", "reasoner", "--target", "reward",
                                          "--prm", "prm", "--steps", "2", "--problems", "2", "--n", "4",
                                          "--results", str(results)])
    text = results.read_text()
    assert "<!-- BEGIN compare-amortised-reward-quick -->" in text and "compare-amortised-quick" not in text
    assert (tmp_path / "figures" / "amortised_reward_quick.png").stat().st_size > 0
    assert all(0.0 < v <= 1.0 + 1e-6 for r in out["table"].values() for v in r["ess"])
