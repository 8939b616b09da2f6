"""cli.methods: the method table calls the library's public functions; every method end to end
on a tiny random checkpoint."""

import json
import types

import jax
import numpy as np
import pytest

from genppl import models
from genppl.cli import methods
from genppl.cli.config import OPTIONS, parse_args
from genppl.cli.main import main
from genppl.cli.methods import METHODS, Session, prepare, step_delimiter

SMALL = ["--n", "4", "--max-new-tokens", "12", "--json"]
SUMMARY = {"model", "method", "task", "prompts", "samples", "tokens", "seconds", "tokens_per_second",
           "accuracy", "majority_vote_accuracy", "examples"}
SMC_SUMMARY = SUMMARY | {"weighted_vote_accuracy", "log_z", "mean_ess", "final_ess", "resamplings",
                         "all_particles_dead", "resampler", "proposal", "alpha"}


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


# ---- the table, without running a model ----------------------------------------------------
def test_table_rows():
    assert list(METHODS) == ["sample", "smc", "smc-steer", "pf", "smc-guided", "power-mh", "power-smc",
                             "power-rollout", "pg", "pgas", "mh", "best-of-n", "beam", "self-consistency",
                             "power-smc-adaptive"]
    for name, row in METHODS.items():
        assert callable(row.run) and row.help and row.options <= set(OPTIONS), name
    assert {n for n, row in METHODS.items() if row.power} == {"power-mh", "power-smc", "power-rollout",
                                                              "power-smc-adaptive"}
    assert "learned" in METHODS["smc"].options and "alpha" not in METHODS["pf"].options


LIBRARY = {  # method -> (module path, public function it must call)
    "sample": ("genppl.models", "sample"),
    "smc": ("genppl.inference.smc", "run"),
    "smc-steer": ("genppl.inference.smc", "run"),
    "pf": ("genppl.inference.smc", "reward_particle_filter"),
    "smc-guided": ("genppl.inference.smc", "run"),
    "power-mh": ("genppl.inference.mcmc", "power_mcmc"),
    "power-smc": ("genppl.inference.power", "power_smc"),
    "power-rollout": ("genppl.inference.power", "power_rollout"),
    "pg": ("genppl.inference.mcmc", "run_chains"),
    "pgas": ("genppl.inference.mcmc", "run_chains"),
    "mh": ("genppl.inference.mcmc", "run_chains"),
    "best-of-n": ("genppl.inference.search", "best_of_n"),
    "beam": ("genppl.inference.search", "beam_search"),
    "self-consistency": ("genppl.inference.search", "self_consistency"),
    "power-smc-adaptive": ("genppl.inference.power", "adaptive_power_smc"),
}
ARGV = {"smc-guided": ["--keywords", "a"], "power-smc": ["--rejuvenate", "2"]}


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_calls_the_library_function(name, monkeypatch):
    import importlib

    from genppl import ppl
    from genppl.inference import mcmc, smc

    module, function = LIBRARY[name]
    calls, output = [], types.SimpleNamespace(method="SMC")
    monkeypatch.setattr(importlib.import_module(module), function,
                        lambda *a, **k: calls.append((a, k)) or output)
    config = parse_args(["--method", name, "--prompt", "x", *ARGV.get(name, [])] if name != "pf" else
                        ["--method", name, "--resampler", "stratified"])
    lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    session = Session(lm, config, step_delimiter="." if name == "pf" else None)
    session.guides[(1,)] = None  # smc-guided: a cached (trivial) guide, nothing distilled
    assert METHODS[name].run(session, [1], jax.random.key(0)) is output
    (args, kwargs) = calls[0]
    if function == "run":
        program, n = args[:2]
        assert isinstance(program, ppl.Program) and n == 8
        if name == "smc-steer":
            assert isinstance(kwargs["kernel"], smc.steer.SteerKernel)
        else:
            assert kwargs["resampling_fn"] is smc.systematic and kwargs["proposal"] == ppl.proposals.locally_optimal()
    elif name == "pf":
        from genppl.tasks import arithmetic

        assert args[2] is arithmetic.step_reward and kwargs["resampling_fn"] is smc.stratified
        assert (kwargs["step_delimiter"], kwargs["final"], kwargs["ess_threshold"]) == (".", True, 1.0)
        product = parse_args(["--method", name, "--pf-target", "product"])
        METHODS[name].run(Session(lm, product, step_delimiter="."), [1], jax.random.key(0))
        assert calls[-1][1]["final"] is False
    elif name == "power-smc":
        assert kwargs["move"] == mcmc.rejuvenation(2) and kwargs["alpha"] == 4.0
    elif name == "power-mh":
        assert kwargs["move"] == mcmc.moves.suffix() and kwargs["block_size"] == 16
    elif name in ("pg", "pgas"):
        program, kernel, chains, iterations = args[:4]
        assert isinstance(program, ppl.Program) and (chains, iterations) == (8, 8)
        assert kernel == smc.conditional.particle_gibbs(8, ppl.proposals.locally_optimal(), name == "pgas")
    elif name == "mh":
        assert args[1] == mcmc.program_mh(mcmc.moves.suffix(), ppl.proposals.locally_optimal())
    elif name == "power-smc-adaptive":
        assert kwargs["alpha"] == 4.0 and kwargs["target_ess"] == 0.5 and kwargs["resampling_fn"] is smc.systematic
    elif name in ("best-of-n", "beam", "self-consistency"):
        assert isinstance(args[0], ppl.Program) and args[1] == 8


def test_prepare_builds_the_potential_once(lm):
    from genppl import ppl

    smc = prepare(parse_args(["--method", "smc"]), lm)
    assert isinstance(smc.potential, ppl.StepVerifier) and smc.step_delimiter == step_delimiter(lm, ". ")
    pf = prepare(parse_args(["--method", "pf"]), lm)
    assert pf.potential is None and pf.step_delimiter == smc.step_delimiter  # the reward comes from pf itself
    steer = prepare(parse_args(["--method", "smc-steer", "--prompt", "a", "--ban", "b"]), lm)
    assert isinstance(steer.potential, ppl.BannedStrings) and steer.step_delimiter is None
    assert prepare(parse_args([]), lm).potential is None
    with pytest.raises(models.InputError, match="step delimiter"):
        step_delimiter(lm, "\x00\x01")


# ---- end to end on the tiny checkpoint -----------------------------------------------------
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


@pytest.mark.slow  # two schema/grammar lifts and SMC compiles (~25 s)
def test_grammar_and_json_schema_files(checkpoint, capsys, tmp_path):
    import re

    grammar = tmp_path / "g.lark"
    grammar.write_text('start: " " WORD (" " WORD)~0..2 "."\nWORD: /[a-d]{1,3}/\n')
    summary = run_json(capsys, ["--model", checkpoint, "--method", "smc", "--prompt", "the", "--grammar",
                                str(grammar), "--n", "4", "--max-new-tokens", "16", "--show", "4", "--json"])
    texts = [ex["completion"] for ex in summary["examples"]]
    assert texts and all(re.fullmatch(r" [a-d]{1,3}( [a-d]{1,3}){0,2}\.", t) for t in texts)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"enum": ["x", "y"]}},
                                  "required": ["a"], "additionalProperties": False}))
    summary = run_json(capsys, ["--model", checkpoint, "--method", "smc", "--prompt", "the", "--json-schema",
                                str(schema), "--n", "4", "--max-new-tokens", "16", "--show", "4", "--json"])
    texts = [ex["completion"] for ex in summary["examples"]]
    assert texts and all(json.loads(t)["a"] in ("x", "y") for t in texts)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "string", "format": "email"}')
    assert main(["--model", checkpoint, "--method", "smc", "--prompt", "the", "--json-schema", str(bad)]) == 2
    assert "unsupported JSON Schema keyword 'format' at #" in capsys.readouterr().err


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


@pytest.mark.slow
def test_smc_guided_keeps_every_particle_on_the_keywords(checkpoint, hmm_file, capsys):
    # a random HMM guides badly but exactly: no particle takes a token that makes the
    # constraint impossible in the tokens left, so every finished sentence uses "a"
    argv = ["--model", checkpoint, "--method", "smc-guided", "--task", "sentences", "--problems", "1",
            "--keywords", "a", "--hmm", hmm_file, "--n", "4", "--max-new-tokens", "8",
            "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "smc-guided"
    assert summary["keywords_satisfied"] == 1.0
    assert summary["all_particles_dead"] == 0


def test_smc_guided_caches_one_guide_per_prompt(lm, hmm_file):
    config = parse_args(["--method", "smc-guided", "--task", "sentences", "--keywords", "a", "--hmm", hmm_file,
                         "--max-new-tokens", "8"])
    session = prepare(config, lm)
    first = methods.guided_potential(session, [1, 2])
    assert methods.guided_potential(session, [1, 2]) is first and list(session.guides) == [(1, 2)]


# ---- --learned -------------------------------------------------------------------------------
def test_smc_with_a_learned_proposal(checkpoint, learned_checkpoint, capsys):
    argv = ["--model", checkpoint, "--method", "smc", "--prompt", "the", "--n", "4", "--max-new-tokens", "6",
            "--learned", learned_checkpoint, "--learned-rank", "2", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert np.isfinite(summary["log_z"]) and summary["samples"] == 4
    assert summary["proposal"] == f"learned ({learned_checkpoint})"


def test_learned_proposal_bad_input(checkpoint, learned_checkpoint, lm, capsys, tmp_path):
    model, ckpt = checkpoint, learned_checkpoint
    for argv in (["--method", "sample", "--learned", ckpt],
                 ["--method", "smc", "--learned", ckpt + ".missing"]):
        with pytest.raises(SystemExit) as err:
            main(["--model", model, "--prompt", "the"] + argv)
        assert err.value.code == 2
        assert "--learned" in capsys.readouterr().err
    # the wrong rank: a clear message naming the shapes
    from genppl.inference import variational as vi
    from genppl.models.interface import InputError

    with pytest.raises(InputError, match="rank"):
        vi.load_guide_params(ckpt, vi.Guide(proposal=models.LoRA(lm, rank=3)))
    # and through the command: one line, exit code 2
    assert main(["--model", model, "--method", "smc", "--prompt", "the", "--learned", ckpt,
                 "--learned-rank", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genppl: error:") and "rank" in err and err.count("\n") == 1
    # a corrupt checkpoint: one line naming the file
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"garbage")
    assert main(["--model", model, "--method", "smc", "--prompt", "the", "--learned", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genppl: error:") and str(bad) in err and err.count("\n") == 1


@pytest.mark.slow
def test_learned_proposal_example_trains_saves_and_resumes(checkpoint, tmp_path):
    import importlib.util
    from pathlib import Path

    file = Path(__file__).resolve().parents[2] / "examples" / "learned_proposal.py"
    spec = importlib.util.spec_from_file_location("example_learned_proposal", file)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    ckpt = str(tmp_path / "proposal.npz")
    small = ["--model", checkpoint, "--n", "4", "--runs", "4", "--max-new-tokens", "6"]
    out = example.main(small + ["--steps", "2", "--save", ckpt])
    assert out["check"] and len(out["history"]) == 2
    again = example.main(small + ["--steps", "3", "--load", ckpt])  # resumes: one more step
    assert len(again["history"]) == 1 and again["check"]
