"""cli.main: the default job, the summary (text and --json), and library errors as one line."""

import pytest

from genppl import models
from genppl.cli import methods
from genppl.cli.config import parse_args
from genppl.cli.main import error_line, jobs, main, power_cost


def test_no_arguments_is_plain_sampling_on_the_bundled_model(checkpoint, monkeypatch, capsys):
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


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere"), "--method", "smc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genppl: error:") and "Traceback" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("error", ["NonFiniteLogitsError", "CheckpointError", "InputError"])
def test_library_input_errors_are_one_line_and_exit_2(checkpoint, monkeypatch, capsys, error):
    from genppl.models import interface
    from genppl.models.architectures import config as architectures

    cls = getattr(interface, error, None) or getattr(architectures, error)
    assert issubclass(cls, interface.InputError)

    def fail(session, prompt_ids, key):
        raise cls("something broke\n  at step 3, particles [0 1]\n  likely cause: a broken checkpoint")

    monkeypatch.setitem(methods.METHODS, "sample", methods.METHODS["sample"].__class__(
        fail, "fails", methods.METHODS["sample"].options))
    assert main(["--model", checkpoint, "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert err == ("genppl: error: something broke at step 3, particles [0 1] likely cause: a broken "
                   "checkpoint\n")


def test_error_line():
    assert error_line(ValueError("a\nb")) == "genppl: error: a b"
    assert error_line(OSError()) == "genppl: error: OSError"


def test_jobs_and_scorers():
    from genppl.tasks import arithmetic

    arith = jobs(parse_args(["--problems", "3"]))
    assert [text for text, _ in arith] == [arithmetic.prompt_text(p) for p in arithmetic.eval_problems(3)]
    problem = arithmetic.eval_problems(1)[0]
    score = arith[0][1]
    assert score([problem.solution], None) == {"accuracy": 1.0, "majority_vote_accuracy": 1.0}
    assert score([problem.solution, ""], [0.0, 1.0])["weighted_vote_accuracy"] == 0.0
    sentences = jobs(parse_args(["--method", "smc-guided", "--task", "sentences", "--problems", "2",
                                 "--keywords", "dog", "--hmm-states", "2"]))
    assert len(sentences) == 2 and sentences[0][0] == "S:"
    assert sentences[0][1](["the dog runs."], None) == {"well_formed": 1.0, "keywords_satisfied": 1.0}
    assert jobs(parse_args(["--prompt", "hi"])) == [("hi", None)]


def test_power_cost():
    import numpy as np

    class Samples:
        tokens_generated = np.array([4, 6])
        acceptance = np.array([0.5, 1.0])

    class Weighted:
        ess = np.ones(5)

    assert power_cost(Samples()) == {"tokens_generated_per_sample": 5.0, "acceptance": 0.75}
    assert power_cost(Weighted()) == {"tokens_generated_per_sample": 5.0}


@pytest.mark.parametrize("method, extra", [
    ("sample", []),
    ("smc", []),
    pytest.param("smc-steer", [], marks=pytest.mark.slow),
    pytest.param("power-mh", ["--block-size", "2"], marks=pytest.mark.slow),
    pytest.param("power-smc", [], marks=pytest.mark.slow),
    pytest.param("power-rollout", ["--rollouts", "1", "--rollout-top-k", "2", "--horizon", "1"],
                 marks=pytest.mark.slow),
])
def test_nonfinite_logits_are_one_line_and_exit_2(lm, monkeypatch, capsys, method, extra):
    """A model whose logits turn NaN (a broken checkpoint) is reported as such, not as a
    constraint that killed every particle."""
    from tests.models.faults import FaultyLM

    prompt_length = len(methods.encode_prompt(lm, "the"))
    monkeypatch.setattr(models, "load", lambda *a, **k: FaultyLM(lm, step=1, particle=None,
                                                                  prompt_length=prompt_length))
    assert main(["--method", method, "--prompt", "the", "--n", "2", "--max-new-tokens", "4", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genppl: error:") and err.count("\n") == 1
    assert "NaN" in err and "ruled out by the constraints" not in err


def test_task_prompts_run_in_calls_of_many_prompts(checkpoint, monkeypatch, capsys):
    """Issue 12: the evaluation over a task calls the method once per chunk of up to
    PROMPTS_PER_CALL prompts (a batch of prompts, one compiled call), not once per prompt."""
    import json

    import numpy as np

    from genppl.cli import main as cli_main

    calls = []

    def fake(prompts):
        return models.Samples(np.zeros((2, 3), np.int32), np.array([3, 3]), np.array([True, True]),
                              np.zeros(2), ["1 + 1 = 2", "x"], prompt=str(prompts))

    def recorder(session, prompt_ids, key):
        batch = models.batch.is_prompt_batch(prompt_ids)
        calls.append(len(prompt_ids) if batch else 1)
        return models.batch.Batch(fake(p) for p in prompt_ids) if batch else fake(prompt_ids)

    monkeypatch.setitem(methods.METHODS, "sample", methods.METHODS["sample"].__class__(
        recorder, "records", methods.METHODS["sample"].options))
    summary = None
    for per_call, expected in ((64, [5]), (2, [2, 2, 1])):
        monkeypatch.setattr(cli_main, "PROMPTS_PER_CALL", per_call)
        calls.clear()
        assert main(["--model", checkpoint, "--problems", "5", "--n", "2", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert calls == expected and summary["prompts"] == 5 and summary["samples"] == 10


# slow: a CLI run plus its replay from the record (model load, two compiled sweeps: ~8 s);
# save/load/replay itself is in the default suite (tests/inference/test_records.py)
@pytest.mark.slow
def test_record_writes_a_run_that_replays(checkpoint, tmp_path, capsys):
    import json

    from genppl import inference

    path = tmp_path / "run.npz"
    argv = ["--model", checkpoint, "--method", "smc", "--prompt", "ab", "--n", "2", "--max-new-tokens", "4",
            "--ban", "e", "--record", str(path), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == [str(path)]
    record = inference.load(path)
    assert record.config["recipe"] == "genppl.cli.main:replay_recipe" and record.config["args"]["prompt"] == "ab"
    again = inference.replay(record)                       # rebuilds model, session and run from the record
    assert again.texts == record.texts
