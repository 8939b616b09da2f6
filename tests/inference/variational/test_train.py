"""The optax trainer: resume, divergence, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genppl import ppl
from genppl.inference import variational
from genppl.inference.variational import Trainer, TrainingError
from genppl.models.interface import InputError

from .shared import LM_GUIDE, POWER, TINY_GUIDE, TINY_PROGRAM


@pytest.fixture(scope="module")
def trainer():
    """One compiled ELBO trainer, shared by the checkpoint tests."""
    return Trainer(variational.elbo(TINY_GUIDE, 4), optax.adam(0.05), TINY_PROGRAM)


def test_resumed_training_reproduces_the_uninterrupted_losses(trainer, tmp_path):
    _, full = trainer.fit(trainer.init(0), 6, progress=False)
    path = tmp_path / "ckpt.npz"
    _, first = trainer.fit(trainer.init(0), 3, checkpoint=path, progress=False)
    state, second = trainer.fit(trainer.init(0), 6, checkpoint=path, progress=False)  # resumes at step 3
    assert [r["loss"] for r in first + second] == [r["loss"] for r in full]
    assert int(state.step) == 6 and int(Trainer.restore(path, state).step) == 6


def test_divergence_raises_and_keeps_the_last_good_checkpoint(trainer, tmp_path):
    path = tmp_path / "ckpt.npz"
    state, _ = trainer.fit(trainer.init(0), 2, checkpoint=path, progress=False)
    saved = Trainer.restore(path, state)
    bad = Trainer(trainer.objective, optax.adam(float("inf")), TINY_PROGRAM)  # same state layout
    with pytest.raises(TrainingError, match="diverged at step 2.*last good checkpoint \\(step 2\\)"):
        bad.fit(bad.init(0), 5, checkpoint=path, checkpoint_every=1, progress=False)
    kept = Trainer.restore(path, state)
    assert int(kept.step) == 2
    for a, b in zip(jax.tree.leaves(kept.params), jax.tree.leaves(saved.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_guide_parameters_load_from_a_checkpoint(trainer, tmp_path):
    path = tmp_path / "ckpt.npz"
    state, _ = trainer.fit(trainer.init(0), 1, checkpoint=path, progress=False)
    params = variational.load_guide_params(path, TINY_GUIDE)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params["guide"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(InputError, match="no checkpoint"):
        variational.load_guide_params(tmp_path / "missing.npz", TINY_GUIDE)


def test_bad_inputs_get_clear_errors(tmp_path):
    objective = variational.elbo(TINY_GUIDE, 4)
    trainer = Trainer(objective, optax.adam(0.1), TINY_PROGRAM)
    wrong = {"guide": {"proposal": {"logits": jnp.zeros((3, 3))}}}
    with pytest.raises(InputError, match="shape"):
        trainer.init(0, params=wrong)
    # a checkpoint saved for another model
    other = Trainer(variational.elbo(LM_GUIDE, 4), optax.adam(0.1), POWER)
    path = tmp_path / "other.npz"
    Trainer.save(path, other.init(0))
    with pytest.raises(InputError, match="shape"):
        trainer.fit(trainer.init(0), 2, checkpoint=path, progress=False)
    # objectives that need target samples
    with pytest.raises(InputError, match="weighted samples"):
        Trainer(variational.forward_kl(TINY_GUIDE, 4, source=None), optax.adam(0.1), TINY_PROGRAM)
    with pytest.raises(InputError, match="sampler"):
        variational.forward_kl(TINY_GUIDE, 4, source="smc")
    with pytest.raises(InputError, match="batch must be"):
        Trainer(variational.forward_kl(TINY_GUIDE, 4, source=None), optax.adam(0.1), TINY_PROGRAM, batch="exact")
    with pytest.raises(InputError, match="sequence-level"):
        Trainer(variational.subtrajectory_balance(TINY_GUIDE, 4), optax.adam(0.1),
                TINY_PROGRAM.replace(potential=ppl.SequenceScorer(lambda t, n, p: jnp.zeros(t.shape[0]))))
    with pytest.raises(InputError, match="twist"):
        variational.contrastive_twist(TINY_GUIDE)
    with pytest.raises(InputError, match="optax"):
        Trainer(objective, "adam", TINY_PROGRAM)
    with pytest.raises(InputError, match="step_delimiter"):
        Trainer(objective, optax.adam(0.1), ppl.Program(TINY_PROGRAM.lm, [1], 2, alpha=2.0, step_delimiter="a"))
    with pytest.raises(InputError):
        variational.Guide()


def corrupt_files(tmp_path, good):
    """Truncated, garbage, foreign and pickled versions of the file ``good``."""
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2], "garbage": b"not a zip file at all" * 10, "empty": b""}
    for name, content in files.items():
        (tmp_path / f"{name}.npz").write_bytes(content)
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"a": 1}], dtype=object))
    return sorted(tmp_path.glob("*.npz"))


def test_corrupt_checkpoints_give_one_error_naming_the_file(trainer, tmp_path):
    """Issue 11, case 9: no BadZipFile, EOFError, KeyError('meta') or pickle error escapes."""
    good = tmp_path / "good" / "ckpt.npz"
    good.parent.mkdir()
    state, _ = trainer.fit(trainer.init(0), 1, checkpoint=good, progress=False)
    for path in corrupt_files(tmp_path, good):
        with pytest.raises(InputError, match=f"{path.name}.*train one first"):
            variational.load_guide_params(path, TINY_GUIDE)
        with pytest.raises(InputError, match=f"{path.name}.*train one first"):
            Trainer.restore(path, state)
