"""The genppl command end to end on a tiny random checkpoint: every method, and bad input."""

import json

import numpy as np
import pytest

from genppl import models
from genppl.cli.main import main
from tests.checkpoints import save_llama

SMALL = ["--n", "4", "--max-new-tokens", "12", "--json"]
SUMMARY = {"model", "method", "task", "prompts", "samples", "tokens", "seconds", "tokens_per_second",
           "accuracy", "majority_vote_accuracy", "examples"}
SMC_SUMMARY = SUMMARY | {"weighted_vote_accuracy", "log_z", "mean_ess", "final_ess", "resamplings",
                         "all_particles_dead", "resampler", "proposal", "alpha"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path, max_position_embeddings=512)  # room for the arithmetic prompts
    return str(path)


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_no_arguments_is_plain_sampling_on_the_bundled_model(checkpoint, monkeypatch, capsys):
    from genppl.cli.main import parse_args
    from genppl.tasks import arithmetic

    args = parse_args([])
    assert (args.method, args.task, args.problems, args.n, args.max_new_tokens) == ("sample", "arithmetic", 16, 8, 96)
    monkeypatch.setattr(models, "BUNDLED", checkpoint)  # the "bundled" model is the tiny one
    few = arithmetic.eval_problems  # and two of the 16 problems keep the test fast
    monkeypatch.setattr(arithmetic, "eval_problems", lambda n, *a, **k: few(2, *a, **k))
    assert main([]) == 0
    out = capsys.readouterr().out
    for field in ("method: sample", "prompts: 2", "accuracy:", "majority_vote_accuracy:", "tokens_per_second:"):
        assert field in out


# two problems fall in two prompt-length buckets (two compilations): one is enough for most
@pytest.mark.parametrize("method, problems", [("smc", 2), ("smc-steer", 1), ("pf", 1)])
def test_smc_methods_report_the_summary_fields(checkpoint, capsys, method, problems):
    summary = run_json(capsys, ["--model", checkpoint, "--method", method, "--problems", str(problems), *SMALL])
    assert SMC_SUMMARY <= set(summary)
    assert summary["method"] == method and summary["prompts"] == problems
    assert summary["samples"] == 4 * problems
    assert 0 < summary["tokens"] <= 4 * problems * 12 and summary["tokens_per_second"] > 0
    for name in ("accuracy", "majority_vote_accuracy", "weighted_vote_accuracy"):
        assert 0.0 <= summary[name] <= 1.0
    assert summary["log_z"] is None or summary["log_z"] <= 1e-4  # Z <= 1: phi is a 0/1 check or a reward <= 1
    assert 0 <= summary["mean_ess"] <= 4 and summary["resamplings"] >= 0
    assert len(summary["examples"]) == 3


def test_smc_options_and_free_prompt(checkpoint, capsys):
    summary = run_json(capsys, ["--model", checkpoint, "--method", "smc", "--prompt", "the cat",
                                "--n", "4", "--max-new-tokens", "8", "--resampler", "multinomial",
                                "--ess-threshold", "1.0", "--proposal", "prior", "--alpha", "2",
                                "--json"])
    assert summary["task"] == "prompt" and summary["prompts"] == 1
    assert summary["proposal"] == "prior" and summary["alpha"] == 2.0
    assert np.isfinite(summary["log_z"]) and "accuracy" not in summary


def test_ban_and_regex_constrain_every_particle(checkpoint, capsys):
    summary = run_json(capsys, ["--model", checkpoint, "--method", "smc", "--prompt", "the",
                                "--ban", "b", "--regex", "[a-d ]+\\.", "--n", "4",
                                "--max-new-tokens", "10", "--show", "4", "--json"])
    texts = [ex["completion"] for ex in summary["examples"]]
    assert len(texts) == 4 and all(set(t) <= set("acd .") for t in texts)


@pytest.mark.parametrize("argv, message", [
    (["--method", "smc", "--temperature", "0.5"], "--temperature applies to --method sample"),
    (["--method", "pf", "--task", "sentences"], "needs the arithmetic task"),
    (["--method", "smc", "--ess-threshold", "1.5"], "--ess-threshold must lie in [0, 1]"),
    (["--method", "smc", "--alpha", "0"], "--alpha must be a positive number"),
    (["--n", "0"], "--n must be a positive integer"),
    (["--ban", "e"], "add --method smc"),
    (["--method", "bogus"], "invalid choice"),
])
def test_bad_options_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "genppl: error:" in err and message in err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere"), "--method", "smc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genppl: error:") and "Traceback" not in err
