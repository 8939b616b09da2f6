"""genppl --method smc-guided (HMM x DFA guide) on a tiny random checkpoint."""

import json

import jax
import pytest

from genppl import circuits
from genppl import models
from genppl.cli.main import main, parse_args
from tests.checkpoints import save_llama


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path)
    lm = models.load(str(path))
    hmm = circuits.HMM.random(jax.random.key(0), num_states=4, vocab_size=lm.vocab_size)
    hmm.save(path / "hmm.npz")
    return str(path)


@pytest.mark.slow
def test_smc_guided_keeps_every_particle_on_the_keywords(checkpoint, capsys):
    # a random HMM guides badly but exactly: no particle takes a token that makes the
    # constraint impossible in the tokens left, so every finished sentence uses "a"
    argv = ["--model", checkpoint, "--method", "smc-guided", "--task", "sentences", "--problems", "1",
            "--keywords", "a", "--hmm", f"{checkpoint}/hmm.npz", "--n", "4", "--max-new-tokens", "8",
            "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "smc-guided"
    assert summary["keywords_satisfied"] == 1.0
    assert summary["all_particles_dead"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--method", "smc", "--keywords", "dog"], "apply to --method smc-guided"),
    (["--method", "smc-guided"], "needs a constraint"),
    (["--method", "smc-guided", "--keywords", "dog", "--hmm", "/no/such.npz"], "no such file"),
    (["--method", "smc-guided", "--keywords", "dog", "--hmm-states", "0"], "--hmm-states"),
])
def test_smc_guided_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err
