"""The LanguageModel verbs on a real transformer checkpoint."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.models import InputError, sample
from genppl.models.architectures import CheckpointError
from tests.checkpoints import save_llama


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    torch_model = save_llama(path)
    return path, torch_model


@pytest.fixture(scope="module")
def lm(checkpoint):
    return models.load(checkpoint[0])


def torch_logits(torch_model, ids):
    import torch

    with torch.no_grad():
        return torch_model(torch.tensor([ids])).logits[0].numpy()


def test_prefill_then_extend_matches_transformers(lm, checkpoint):
    prompt = [3, 17, 42, 5]
    cont = [7, 99, 250, 11, 64]
    state = lm.prefill(prompt, 2, len(cont))
    ref = torch_logits(checkpoint[1], prompt + cont)
    np.testing.assert_allclose(np.asarray(state.logits[0]), ref[len(prompt) - 1], atol=1e-4)
    for i, t in enumerate(cont):
        state = lm.extend(state, jnp.array([t, t]))
        np.testing.assert_allclose(np.asarray(state.logits[1]), ref[len(prompt) + i], atol=1e-4)


def test_batched_extension_equals_per_sequence_runs(lm):
    prompt = [1, 2, 3]
    conts = np.array([[5, 6, 7, 8], [9, 10, 11, 12], [100, 200, 300, 301]])
    batch = lm.prefill(prompt, 3, 4)
    for t in range(4):
        batch = lm.extend(batch, jnp.asarray(conts[:, t]))
    for i in range(3):
        single = lm.prefill(prompt, 1, 4)
        for t in range(4):
            single = lm.extend(single, jnp.asarray(conts[i : i + 1, t]))
        np.testing.assert_allclose(np.asarray(batch.logits[i]), np.asarray(single.logits[0]), atol=1e-5)


def test_inactive_particles_do_not_move(lm):
    state = lm.prefill([1, 2], 2, 3)
    moved = lm.extend(state, jnp.array([5, 5]), active=jnp.array([True, False]))
    assert moved.length.tolist() == [3, 2]
    np.testing.assert_array_equal(np.asarray(moved.logits[1]), np.asarray(state.logits[1]))


def test_score_equals_sum_of_step_log_probs(lm):
    prompt = [4, 8, 15]
    conts = np.array([[16, 23, 42, 0], [1, 1, 2, 3], [300, 301, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
    state = lm.prefill(prompt, 3, 4)
    logp = np.asarray(lm.score(state, conts, mask))
    for i in range(3):
        s = lm.prefill(prompt, 1, 4)
        total = 0.0
        for t in conts[i][mask[i]]:
            total += float(lm.log_probs(s)[0, t])
            s = lm.extend(s, jnp.array([t]))
        assert logp[i].sum() == pytest.approx(total, abs=1e-4)
    assert np.all(logp[~mask] == 0)


def test_advance_and_truncate_round_trip(lm):
    state = lm.prefill([1, 2, 3], 2, 6)
    grown, _ = lm.advance(state, jnp.array([[5, 6, 7], [8, 9, 10]]))
    back = lm.truncate(grown, jnp.array([4, 3]))
    ref = lm.extend(state, jnp.array([5, 0]), active=jnp.array([True, False]))
    np.testing.assert_allclose(np.asarray(back.logits), np.asarray(ref.logits), atol=1e-5)
    assert back.length.tolist() == [4, 3]


def test_decode_loop_compiles_once(lm):
    before = models.sampling.TRACE_COUNTS["generate"]
    for seed in range(3):
        out = sample(lm, [1, 2], 4, 8, jax.random.key(seed), temperature=0.7)
    assert models.sampling.TRACE_COUNTS["generate"] - before == 1
    assert out.token_ids.shape == (4, 8)


def test_bfloat16_load_runs(checkpoint):
    lm16 = models.load(checkpoint[0], dtype="bfloat16")
    out = sample(lm16, [1, 2], 2, 4, jax.random.key(0))
    assert np.all(np.isfinite(out.log_probs))


@pytest.mark.parametrize("n, max_new, prompt, message", [
    (0, 4, [1], "n (the number of particles) must be a positive integer"),
    (2, 0, [1], "max_new_tokens must be a positive integer"),
    (2, 4, [], "the prompt is empty"),
    (2, 40, list(range(1, 30)), "exceeds the model's context of 64 tokens"),
])
def test_bad_input(lm, n, max_new, prompt, message):
    with pytest.raises(InputError, match=re.escape(message)):
        lm.prefill(prompt, n, max_new)


def test_missing_directory_and_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist|not found|no such"):
        models.load(tmp_path / "nowhere")
    path = tmp_path / "no_tokenizer"
    save_llama(path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (path / f).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        models.load(path)


def test_unknown_dtype(checkpoint):
    with pytest.raises(CheckpointError, match="use 'float32' or 'bfloat16'"):
        models.load(checkpoint[0], dtype="float8")
