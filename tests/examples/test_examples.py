"""Every example runs end to end on a tiny random checkpoint and its own check holds."""

import importlib.util
import re
from pathlib import Path

import pytest

from tests.checkpoints import save_llama

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path, max_position_embeddings=512)  # room for the arithmetic prompts
    return str(path)


def test_avoid_letter(model, capsys):
    out = load("avoid_letter").main(["--model", model, "--n", "4", "--max-new-tokens", "12"])
    assert out["check"] and len(out["texts"]) == 4
    assert all("e" not in t and "E" not in t for t in out["texts"])
    assert "check (no text contains E or e): ok" in capsys.readouterr().out


def test_regex_answer(model):
    # a random model writes long numbers: a shorter format than the default fits the token budget
    pattern = r"( \d [-+*] \d = \d{1,2}\.){1,2} The answer is \d{1,2}\."
    out = load("regex_answer").main(["--model", model, "--n", "8", "--max-new-tokens", "40",
                                     "--pattern", pattern])
    assert out["check"] and out["live"], "some particle should finish the format within 40 tokens"
    assert all(re.fullmatch(pattern, t) for t in out["live"])
    assert out["answer"] is not None


def test_keyword_sentence(model):
    out = load("keyword_sentence").main(["--model", model, "--n", "8", "--max-new-tokens", "12",
                                         "--bonus", "8"])
    assert out["check"] and out["n"] == 8
    assert out["satisfied"] >= out["live"] > 0  # the twist finds the keywords even on a random model
    assert out["best"] is not None and all(k in out["best"] for k in out["keywords"])


def test_arithmetic_verifier(model):
    out = load("arithmetic_verifier").main(["--model", model, "--problems", "2", "--n", "4",
                                            "--max-new-tokens", "16"])
    assert out["check"] and out["problems"] == 2 and len(out["rows"]) == 2
    for name in ("smc_weighted_vote_accuracy", "smc_accuracy", "sampling_accuracy",
                 "sampling_majority_vote_accuracy"):
        assert 0.0 <= out[name] <= 1.0


@pytest.mark.slow  # distils an HMM from the bundled model (about 25 s)
def test_keyword_guided():
    out = load("keyword_guided").main(["--n", "8", "--hmm-samples", "512", "--em-epochs", "2"])
    guided = next(r for r in out["rows"] if r["method"] == "SMC, HMM guide")
    assert guided["satisfied"] == 1.0 and guided["live"] > 0
    assert all(k in out["best"] for k in out["keywords"])


@pytest.mark.slow  # ~2 min: eleven methods, each compiled once
def test_kernels_compared(model, capsys):
    out = load("kernels_compared").main(["--model", model, "--n", "4", "--max-new-tokens", "6", "--iterations", "4"])
    assert out["check"] and out["plain_tokens"] > 0 and len(out["rows"]) == 11
    assert "check (every method ran and spent tokens): ok" in capsys.readouterr().out
@pytest.mark.slow  # a schema lifted to the tokenizer and one SMC sweep on the random model: ~15 s
def test_json_extraction(model):
    out = load("json_extraction").main(["--model", model, "--n", "8", "--max-new-tokens", "100", "--max-items", "1"])
    mod = load("json_extraction")
    assert out["check"] and all(mod.valid(t, 1) for t in out["live"])
    assert out["live"], "some particle should finish a document within 100 tokens"


@pytest.mark.slow  # a grammar lifted to the tokenizer and one SMC sweep on the random model: ~15 s
def test_grammar(model):
    out = load("grammar").main(["--model", model, "--n", "8", "--max-new-tokens", "100", "--steps", "1"])
    assert out["check"] and out["live"], "some particle should finish within 100 tokens"
    assert all(t.endswith(".") and " The answer is " in t for t in out["live"])


@pytest.mark.slow  # three SMC sweeps of the random Llama, two on a mesh of the 8 test devices (~40 s)
def test_sharded_smc(model, capsys):
    out = load("sharded_smc").main(["--model", model, "--n", "8", "--max-new-tokens", "8"])
    assert out["devices"] == 8 and out["check"]
    assert out["global"].layout.mesh_shape == {"data": 8, "model": 1}
    assert out["island"].layout.bytes_moved == 0
    assert "check (the mesh with global resampling gives the one-device tokens and log Z): ok" in capsys.readouterr().out
@pytest.mark.slow  # three methods, each compiled once per prompt bucket, on the random model (~30 s)
def test_prm_search(model):
    out = load("prm_search").main(["--model", model, "--problems", "2", "--n", "4", "--max-new-tokens", "24"])
    assert out["check"] and out["problems"] == 2 and len(out["accuracy"]) == 3


@pytest.mark.slow  # four samplers of p^alpha or temperature 1/alpha (~40 s)
def test_power_vs_temperature(model):
    out = load("power_vs_temperature").main(["--model", model, "--problems", "1", "--n", "2",
                                             "--max-new-tokens", "16"])
    assert out["check"] and len(out["rows"]) == 4
    assert all(1.0 <= r["distinct"] <= 2.0 for r in out["rows"].values())


@pytest.mark.slow  # compiles a LoRA training step and two SMC sweeps (~40 s)
def test_amortised_proposal(model):
    out = load("amortised_proposal").main(["--model", model, "--steps", "2", "--samples", "2", "--n", "4",
                                           "--problems", "1", "--max-new-tokens", "8"])
    assert out["check"] and set(out["ess"]) == {"base (locally optimal)", "learned LoRA"}


@pytest.mark.slow  # distils a small HMM, then eight SMC sweeps (~40 s)
def test_keyword_constraints(model):
    out = load("keyword_constraints").main(["--model", model, "--n", "4", "--max-new-tokens", "10",
                                            "--hmm-states", "4", "--hmm-samples", "64"])
    assert out["check"] and len(out["rows"]) == 12
