"""models.prm: the process reward model's interface (shapes, batching and padding invariance,
checkpoint round trip read by transformers too, bad input)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.models.architectures import ArchConfig, CheckpointError, build_decoder


def tiny_prm(lm, seed=0, layers=1, marker=None):
    """A random PRM over ``lm``'s tokenizer (head weights large enough to spread the scores);
    with ``marker``, random likelihood weights as well."""
    from flax import nnx
    from transformers import LlamaConfig

    config = ArchConfig.from_hf(LlamaConfig(
        vocab_size=lm.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True,
        eos_token_id=lm.eos_id, bos_token_id=lm.eos_id, pad_token_id=lm.eos_id))
    prm = models.ProcessRewardModel.from_decoder(build_decoder(config, nnx.Rngs(seed)), config, lm.tokenizer,
                                                 key=seed, marker=marker)
    prm.head = {**prm.head, "w": prm.head["w"] * 100.0, "b": jnp.float32(0.3)}
    if marker is not None:
        prm.head["u"] = jnp.array([0.5, 1.0, 0.25], jnp.float32)
    return prm


@pytest.fixture(scope="module", params=["hidden", "likelihood"])
def prm(llama_lm, request):
    return tiny_prm(llama_lm, marker=(9, 4) if request.param == "likelihood" else None)


def test_likelihood_features_against_a_plain_loop():
    rng = np.random.default_rng(3)
    n, t, v, marker = 3, 14, 6, (2, 3)
    tokens = rng.integers(0, v, size=(n, t))
    tokens[0, 4:6], tokens[0, 9:11], tokens[1, 11:13] = marker, marker, marker  # two, one, none
    logits = rng.normal(size=(n, t, v)).astype(np.float32)
    got = np.asarray(models.prm.likelihood_features(jnp.asarray(logits), jnp.asarray(tokens), marker))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for i in range(n):
        start = None
        for s in range(t):
            if s >= 1 and tuple(tokens[i, s - 1:s + 1]) == marker:
                start, seen = s, []
                np.testing.assert_allclose(got[i, s], 0.0)
                continue
            if start is None:
                np.testing.assert_allclose(got[i, s], 0.0)
                continue
            seen.append(logp[i, s - 1, tokens[i, s]])
            np.testing.assert_allclose(got[i, s], [seen[-1], min(seen), sum(seen)], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    out = [list(rng.integers(1, 300, size=n)) for n in (5, 9, 3, 12)]  # row 3 fills width 12
    out[1][2:4] = out[3][1:3] = [9, 4]  # the likelihood PRM's marker: its features are live after it
    return out


def padded(rows, width, pad=0):
    out = np.full((len(rows), width), pad, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out



def test_incremental_state_reads_only_new_tokens_and_equals_the_full_pass(prm):
    """start + catch_up (the PRM's own KV cache, features carried across chunks and markers)
    give the logit of the full forward pass at every length, rows advancing unevenly."""
    rng = np.random.default_rng(5)
    cap, n, prompt = 40, 3, 6
    tokens = rng.integers(1, 300, size=(n, cap)).astype(np.int32)
    tokens[:, :prompt] = tokens[0, :prompt]  # one prompt shared by the rows
    tokens[:, prompt - 2:prompt] = [9, 4]  # the prompt ends with the marker (as "\nA:" does)
    tokens[1, 15:17] = tokens[2, 7:9] = [9, 4]  # a second marker inside a chunk / across chunks
    full = np.asarray(prm.token_logits(tokens))
    state = jax.jit(lambda t, p: prm.start(t, p, n))(jnp.asarray(tokens[0]), prompt)
    np.testing.assert_allclose(np.asarray(state["value"]), full[:, prompt - 1], rtol=1e-4, atol=1e-4)
    catch_up = jax.jit(prm.catch_up)
    for target in ([7, 6, 9], [18, 6, 10], [31, 25, 40], [31, 40, 40]):
        state = catch_up(state, jnp.asarray(tokens), jnp.asarray(target, jnp.int32))
        np.testing.assert_array_equal(np.asarray(state["length"]), target)
        np.testing.assert_allclose(np.asarray(state["value"]), full[np.arange(n), np.array(target) - 1],
                                   rtol=1e-4, atol=1e-4)

def test_shapes_and_range(prm, rows):
    tokens = padded(rows, 12)
    length = np.array([len(r) for r in rows], np.int32)
    assert prm.token_logits(tokens).shape == (4, 12)
    r = np.asarray(prm.rewards(tokens, length))
    assert r.shape == (4,) and np.all((r > 0) & (r < 1))
    assert np.std(r) > 1e-3  # the scores differ between rows: the test below can see a mix-up
    # logits(tokens, length) reads token_logits after the last token
    np.testing.assert_allclose(prm.logits(tokens, length),
                               np.asarray(prm.token_logits(tokens))[np.arange(4), length - 1], rtol=1e-6)
    if prm.marker is not None:  # the likelihood term acts after the marker only (rows 1 and 3)
        blind = models.ProcessRewardModel(prm.graphdef, prm.params, {**prm.head, "u": jnp.zeros(3)}, prm.config,
                                          prm.tokenizer, prm.marker)
        moved = np.abs(np.asarray(prm.logits(tokens, length)) - np.asarray(blind.logits(tokens, length))) > 1e-3
        assert moved.tolist() == [False, True, False, True]


def test_invariant_to_batching_and_padding(prm, rows):
    """Each row's score is the same alone, in any batch order, and with any pad length or pad id."""
    length = np.array([len(r) for r in rows], np.int32)
    ref = np.asarray(prm.logits(padded(rows, 12), length))
    for width, pad in ((12, 7), (20, 0)):
        np.testing.assert_allclose(prm.logits(padded(rows, width, pad), length), ref, atol=1e-5)
    for i in (0, 3):  # alone, unpadded
        r = rows[i]
        alone = prm.logits(padded([r], len(r)), np.array([len(r)], np.int32))
        np.testing.assert_allclose(alone, ref[i:i + 1], atol=1e-5)
    order = [2, 0, 3, 1]
    np.testing.assert_allclose(prm.logits(padded([rows[i] for i in order], 20), length[order]), ref[order], atol=1e-5)
    # and under jit, as a potential evaluates it
    jitted = jax.jit(lambda p, t, n: p.logits(t, n))
    np.testing.assert_allclose(jitted(prm, padded(rows, 12), length), ref, atol=1e-5)


@pytest.mark.slow  # another compiled shape; the helper is a thin wrapper of rewards()
def test_host_helper_scores_texts(prm, llama_lm):
    prefix = [llama_lm.eos_id] + llama_lm.tokenizer.encode("Q: 12 + 7")
    texts = [" = 19.", " = 18.", ""]
    r = prm.score_texts(prefix, texts)
    ids = [prefix + llama_lm.tokenizer.encode(t) for t in texts]
    np.testing.assert_allclose(r, prm.rewards(padded(ids, 30), np.array([len(i) for i in ids])), atol=1e-6)


@pytest.mark.slow  # imports torch and builds the transformers model (several seconds)
def test_checkpoint_round_trip_and_transformers_reads_it(prm, tmp_path):
    import torch
    import transformers

    prm.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    if prm.marker is not None:  # transformers reads the hidden-state part only (module docstring)
        back = models.load_prm(tmp_path)
        assert back.marker == prm.marker and np.array_equal(back.head["u"], prm.head["u"])
        np.testing.assert_allclose(back.token_logits(padded([[1, 9, 4, 20, 3]], 5)),
                                   prm.token_logits(padded([[1, 9, 4, 20, 3]], 5)), atol=1e-6)
        return
    assert config["architectures"] == ["LlamaForTokenClassification"] and len(config["id2label"]) == 1
    back = models.load_prm(tmp_path)
    tokens = padded([[1, 5, 9, 20, 3], [4, 4, 2]], 5)
    ours = np.asarray(prm.token_logits(tokens))
    np.testing.assert_allclose(back.token_logits(tokens), ours, atol=1e-6)
    assert back.tokenizer is not None and back.tokenizer.token_bytes == prm.tokenizer.token_bytes
    torch_model = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert type(torch_model).__name__ == "LlamaForTokenClassification"
    with torch.no_grad():
        theirs = torch_model(torch.tensor(tokens[:1], dtype=torch.long)).logits[0, :, 0].numpy()
    np.testing.assert_allclose(theirs, ours[0], atol=1e-4)


def test_bad_input(prm, tmp_path, llama_checkpoint):
    tokens = padded([[1, 2, 3]], 3)
    with pytest.raises(models.InputError, match="token ids must lie"):
        prm.logits(padded([[1, prm.vocab_size]], 2), np.array([2]))
    with pytest.raises(models.InputError, match=r"\[n, T\]"):
        prm.logits(np.array([1, 2, 3]), np.array([3]))
    with pytest.raises(models.InputError, match="integers"):
        prm.logits(tokens.astype(np.float32), np.array([3]))
    with pytest.raises(models.InputError, match="each length"):
        prm.logits(tokens, np.array([0]))
    with pytest.raises(models.InputError, match="each length"):
        prm.logits(tokens, np.array([4]))
    with pytest.raises(models.InputError, match="one per row"):
        prm.logits(tokens, np.array([3, 3]))
    with pytest.raises(models.InputError, match="exceed"):
        prm.token_logits(np.ones((1, prm.max_length + 1), np.int32))
    with pytest.raises(models.InputError, match="list of strings"):
        prm.score_texts([1], "one text")
    # a causal LM is not a PRM, and a PRM is not a causal LM
    with pytest.raises(CheckpointError, match="not a process reward model"):
        models.load_prm(llama_checkpoint[0])
    prm.save(tmp_path / "prm")
    with pytest.raises(CheckpointError, match="score"):
        models.load(tmp_path / "prm")
    with pytest.raises(CheckpointError, match="no config.json"):
        models.load_prm(tmp_path / "nothing")
    with pytest.raises(models.InputError, match="no bundled model"):
        models.bundled_path("nope")


@pytest.mark.slow  # loads the two bundled 12.7 MB checkpoints and compiles a forward pass
def test_bundled_reasoner_and_prm():
    for name in ("reasoner", "prm"):
        path = models.bundled_path(name)
        total = sum(f.stat().st_size for f in path.iterdir())
        assert total < 20 * 2 ** 20 and (path / "README.md").is_file()
    lm, prm = models.load("reasoner"), models.load_prm()
    assert prm.tokenizer.token_bytes == lm.tokenizer.token_bytes
    from genppl.tasks import multistep

    problem = multistep.problems("dev", 1)[0]
    prefix = [lm.eos_id] + lm.tokenizer.encode(multistep.prompt_text(problem))
    right, wrong = problem.solution, " Nobody has 0. The answer is -1."
    r = prm.score_texts(prefix, [right, wrong], lm.tokenizer)
    assert r.shape == (2,) and np.all((r > 0) & (r < 1))
