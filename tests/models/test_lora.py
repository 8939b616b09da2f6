"""LoRA adapters, the twist head and GuidedLM on a tiny random Llama.

The GuidedLM must keep the base LM's logits unchanged and carry exactly the proposal LM's
logits and the head's twist row, through prefill, extension and resampling.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genppl import models
from genppl import ppl
from genppl.inference import variational
from genppl.inference.variational import Trainer
from genppl.models.interface import InputError
from tests.checkpoints import save_llama


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_lora")
    save_llama(path)
    return models.load(path)


def _perturbed(lora, seed=1):
    params = lora.init(jax.random.key(0))
    return jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.key(seed), x.shape), params)


def test_lora_starts_at_the_base_lm_and_merges_a_low_rank_update(lm):
    lora = models.LoRA(lm, rank=2, targets=("q_proj", "down_proj"))
    assert len(lora.shapes) == 2 * lm.config.num_layers
    same = lora.apply(lora.init(jax.random.key(0)))
    for a, b in zip(jax.tree.leaves(same.params), jax.tree.leaves(lm.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = _perturbed(lora)
    merged = lora.apply(params)
    leaves = dict((jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(merged.params)[0])
    base = dict((jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(lm.params)[0])
    for name, ab in params.items():
        want = np.asarray(base[name]) + np.asarray(ab["a"]) @ np.asarray(ab["b"]) / 2
        np.testing.assert_allclose(np.asarray(leaves[name]), want, rtol=1e-5, atol=1e-6)


def test_guided_lm_carries_the_proposal_and_twist_rows(lm):
    lora, head = models.LoRA(lm, rank=2), models.TwistHead(lm)
    adapted = lora.apply(_perturbed(lora))
    hp = jax.tree.map(lambda x: 0.1 * jax.random.normal(jax.random.key(2), x.shape), head.init(None))
    guided = models.GuidedLM(lm, proposal=adapted, twist=head.bind(hp))
    prompt = [lm.eos_id] + lm.tokenizer.encode("the")
    tokens = jnp.asarray([[5, 9, 11], [7, 7, 2]], jnp.int32)
    g = guided.prefill(prompt, 2, 4)

    def extend(guided, g, tokens):  # the per-token verbs are traceable; jit them as a kernel would
        for t in range(3):
            g = guided.extend(g, tokens[:, t])
        return models.LanguageModel.gather(g, jnp.array([1, 0]))  # resampling keeps rows together

    g = jax.jit(extend)(guided, g, tokens)
    # reference: full forward passes of the base and the adapted model over prompt + tokens
    full = jnp.concatenate([jnp.asarray([prompt, prompt]), tokens[jnp.array([1, 0])]], 1)
    positions = jnp.broadcast_to(jnp.arange(full.shape[1]), full.shape)

    def reference(lm, adapted):
        logits, _, hidden = lm.module(full, positions, None, return_hidden=True)
        return logits, hidden, adapted.module(full, positions, None)[0]

    logits, hidden, adapted_logits = jax.jit(reference)(lm, adapted)
    np.testing.assert_allclose(np.asarray(g.logits), np.asarray(logits[:, -1]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g.cache["prop_logits"]), np.asarray(adapted_logits[:, -1]),
                               rtol=1e-4, atol=1e-4)
    # the twist row is the head applied to the last hidden state
    want = np.asarray(hidden[:, -1]) @ np.asarray(hp["w"]) + np.asarray(hp["b"])
    np.testing.assert_allclose(np.asarray(g.cache["twist"]), want, rtol=1e-4, atol=1e-4)


def test_guided_lms_are_pytrees_whose_parameters_are_leaves(lm):
    lora, head = models.LoRA(lm, rank=2), models.TwistHead(lm)
    hp = head.init(None)
    guided = models.GuidedLM(lm, proposal=lora.apply(lora.init(jax.random.key(0))), twist=head.bind(hp))
    other = models.GuidedLM(lm, proposal=lora.apply(_perturbed(lora)),
                            twist=head.bind(jax.tree.map(lambda x: x + 1.0, hp)))
    assert jax.tree.structure(guided) == jax.tree.structure(other)  # same compiled programs
    assert any(x is hp["w"] for x in jax.tree.leaves(guided))
    rebuilt = jax.tree.unflatten(jax.tree.structure(guided), jax.tree.leaves(other))
    assert isinstance(rebuilt.twist, models.lora.HeadTwistRows) and rebuilt.twist.needs_hidden
    assert repr(rebuilt) == "GuidedLM(" + repr(lm) + ", proposal, twist=head)"


def _program(lm):
    return ppl.Program(lm, [lm.eos_id] + lm.tokenizer.encode("the"), 4,
                       potential=ppl.BannedTokens(list(range(10, 200))))


def test_exact_samples_of_a_transformer_are_refused(lm):
    program = _program(lm)
    guide = variational.Guide(proposal=models.LoRA(lm, rank=2))
    with pytest.raises(InputError, match="enumerated"):
        variational.exact_batch(program)
    with pytest.raises(InputError, match="enumerated"):
        Trainer(variational.forward_kl(guide, 4, source=variational.exact_samples), optax.adam(1e-2), program)


@pytest.mark.slow
def test_lora_proposal_trains(lm):
    program = _program(lm)
    guide = variational.Guide(proposal=models.LoRA(lm, rank=2))
    trainer = Trainer(variational.trajectory_balance(guide, 4), optax.adam(3e-2), program)
    state, history = trainer.fit(trainer.init(0), 3, progress=False)
    assert all(np.isfinite(r["loss"]) for r in history)
    changed = state.params["guide"]["proposal"]
    assert any(float(jnp.abs(ab["b"]).max()) > 0 for ab in changed.values())


def test_bad_adapter_inputs(lm):
    tab = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
    with pytest.raises(InputError, match="TransformerLM"):
        models.LoRA(tab)
    with pytest.raises(InputError, match="TransformerLM"):
        models.TwistHead(tab)
    with pytest.raises(InputError, match="no projection"):
        models.LoRA(lm, targets=("nonexistent",))
    lora = models.LoRA(lm, rank=2)
    other = models.LoRA(lm, rank=3).init(jax.random.key(0))
    with pytest.raises(InputError, match="shape"):
        lora.check(other)
