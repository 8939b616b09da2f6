"""The power-sampling methods of the genppl command, on a tiny random checkpoint."""

import json

import pytest

from genppl.cli.main import main, parse_args
from tests.checkpoints import save_llama


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_power")
    save_llama(path, max_position_embeddings=128)
    return str(path)


@pytest.mark.slow  # a transformer compile per method
@pytest.mark.parametrize("method, extra", [
    ("power-mh", ["--block-size", "3", "--num-mcmc", "2"]),
    pytest.param("power-smc", ["--rejuvenate", "1", "--ess-threshold", "1.0"], marks=pytest.mark.slow),
    pytest.param("power-rollout", ["--rollouts", "2", "--rollout-top-k", "2", "--horizon", "2"],
                 marks=pytest.mark.slow),
])
def test_power_methods_report_cost_and_texts(checkpoint, capsys, method, extra):
    assert main(["--model", checkpoint, "--method", method, "--prompt", "the cat", "--n", "2",
                 "--max-new-tokens", "6", "--json", *extra]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == method and summary["alpha"] == 4.0 and summary["samples"] == 2
    assert len(summary["examples"]) == 2
    # every method samples at least the tokens it returns
    assert summary["tokens_generated_per_sample"] * 2 >= summary["tokens"] > 0
    if method == "power-mh":
        assert 0.0 <= summary["acceptance"] <= 1.0
    if method == "power-smc":
        assert summary["log_z"] is None or summary["log_z"] <= 1e-4  # sum_x p^4 <= 1


def test_alpha_defaults():
    assert parse_args(["--method", "power-mh"]).alpha == 4.0
    assert parse_args(["--method", "smc"]).alpha == 1.0
    assert parse_args(["--method", "power-smc", "--alpha", "2"]).alpha == 2.0


@pytest.mark.parametrize("argv, message", [
    (["--method", "power-mh", "--block-size", "0"], "--block-size must be an integer >= 1"),
    (["--method", "power-mh", "--num-mcmc", "-1"], "--num-mcmc must be an integer >= 0"),
    (["--method", "power-smc", "--rejuvenate", "1", "--ramp-tokens", "4"], "needs a constant alpha"),
    (["--method", "power-mh", "--ban", "e"], "samples p^alpha alone"),
    (["--method", "power-rollout", "--temperature", "0.5"], "--temperature applies to --method sample"),
    (["--method", "power-mh", "--alpha", "0"], "--alpha must be a positive number"),
])
def test_bad_power_options_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
