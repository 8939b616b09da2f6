"""Fixtures shared by the CLI tests: one tiny random Llama checkpoint (room for the arithmetic
prompts), an HMM file for smc-guided and a LoRA training checkpoint for --learned."""

import jax
import jax.numpy as jnp
import optax
import pytest

from genppl import circuits, models
from tests.checkpoints import save_llama


@pytest.fixture(scope="package")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_cli")
    save_llama(path, max_position_embeddings=512)
    return str(path)


@pytest.fixture(scope="package")
def lm(checkpoint):
    return models.load(checkpoint)


@pytest.fixture(scope="package")
def hmm_file(checkpoint, lm, tmp_path_factory):
    hmm = circuits.HMM.random(jax.random.key(0), num_states=4, vocab_size=lm.vocab_size)
    path = tmp_path_factory.mktemp("hmm") / "hmm.npz"
    hmm.save(path)
    return str(path)


@pytest.fixture(scope="package")
def learned_checkpoint(lm, tmp_path_factory):
    """A checkpoint as the trainer writes it, for a rank-2 LoRA proposal (training itself is
    tested elsewhere)."""
    from genppl.inference import variational as vi

    guide = vi.Guide(proposal=models.LoRA(lm, rank=2))
    params = jax.tree.map(lambda x: x + 0.1, guide.init(jax.random.key(0)))
    optimizer = optax.adam(1e-2)
    state = vi.TrainState({"guide": params, "log_z": jnp.zeros(())}, optimizer.init(params), jnp.asarray(3),
                          jax.random.key(1))
    ckpt = tmp_path_factory.mktemp("learned") / "proposal.npz"
    vi.Trainer.save(ckpt, state)
    return str(ckpt)
