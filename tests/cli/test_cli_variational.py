"""``genppl --method smc --learned PATH``: SMC with a LoRA proposal from a training checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genppl import models
from genppl.cli.main import main
from genppl.inference import variational as vi
from genppl.inference.variational_train import Trainer, TrainState
from tests.checkpoints import save_llama


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_vi")
    save_llama(path)
    lm = models.load(path)
    # a checkpoint as the trainer writes it (training itself is tested elsewhere)
    guide = vi.Guide(proposal=models.LoRA(lm, rank=2))
    params = jax.tree.map(lambda x: x + 0.1, guide.init(jax.random.key(0)))
    optimizer = optax.adam(1e-2)
    state = TrainState({"guide": params, "log_z": jnp.zeros(())}, optimizer.init(params), jnp.asarray(3),
                       jax.random.key(1))
    ckpt = path / "proposal.npz"
    Trainer.save(ckpt, state)
    return str(path), str(ckpt)


def test_smc_with_a_learned_proposal(trained, capsys):
    model, ckpt = trained
    argv = ["--model", model, "--method", "smc", "--prompt", "the", "--n", "4", "--max-new-tokens", "6",
            "--learned", ckpt, "--learned-rank", "2", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert np.isfinite(summary["log_z"]) and summary["samples"] == 4


def test_learned_proposal_bad_input(trained, capsys):
    model, ckpt = trained
    for argv in (["--method", "sample", "--learned", ckpt],
                 ["--method", "smc", "--learned", ckpt + ".missing"]):
        with pytest.raises(SystemExit) as err:
            main(["--model", model, "--prompt", "the"] + argv)
        assert err.value.code == 2
        assert "--learned" in capsys.readouterr().err
    # the wrong rank: a clear message naming the shapes
    from genppl.models.interface import InputError

    lm = models.load(model)
    with pytest.raises(InputError, match="rank"):
        from genppl.inference.variational_train import load_guide_params

        load_guide_params(ckpt, vi.Guide(proposal=models.LoRA(lm, rank=3)))


@pytest.mark.slow
def test_learned_proposal_example_trains_saves_and_resumes(trained, tmp_path):
    import importlib.util
    from pathlib import Path

    file = Path(__file__).resolve().parents[2] / "examples" / "learned_proposal.py"
    spec = importlib.util.spec_from_file_location("example_learned_proposal", file)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model, _ = trained
    ckpt = str(tmp_path / "proposal.npz")
    small = ["--model", model, "--n", "4", "--runs", "4", "--max-new-tokens", "6"]
    out = example.main(small + ["--steps", "2", "--save", ckpt])
    assert out["check"] and len(out["history"]) == 2
    again = example.main(small + ["--steps", "3", "--load", ckpt])  # resumes: one more step
    assert len(again["history"]) == 1 and again["check"]
