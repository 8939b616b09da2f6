"""Flax NNX decoders against transformers (PyTorch) on tiny random checkpoints made on the spot.

For each architecture: logits parity (float32, no cache), cached incremental decoding equals the
full pass, per-row positions equal per-row runs, a bfloat16 load stays close to float32, and
save_checkpoint round-trips through transformers' AutoModelForCausalLM. Then the CheckpointError
cases, each with the text of its message.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from genppl.models.architectures import (  # noqa: E402
    SUPPORTED_ARCHITECTURES,
    ArchConfig,
    CheckpointError,
    build_decoder,
    init_cache,
    load_checkpoint,
    rope_inv_freq,
    save_checkpoint,
)

V, B, L = 128, 3, 20
TOL = 1e-4
COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)

# name -> (transformers config class name, kwargs)
ARCHS = {
    "gpt2": ("GPT2Config", dict(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                bos_token_id=1, eos_token_id=2)),
    # Llama-3.1 style rope scaling; original context 16 so every frequency band (kept, smoothed, divided) occurs
    "llama3": ("LlamaConfig", dict(COMMON, rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16))),
    # tied embeddings, biases everywhere, linear rope scaling, eos given as a list
    "llama_tied_linear": ("LlamaConfig", dict(COMMON, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                              eos_token_id=[2, 3],
                                              rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.0))),
    # qkv bias, tied embeddings, sliding window on the second layer only
    "qwen2": ("Qwen2Config", dict(COMMON, tie_word_embeddings=True, use_sliding_window=True, sliding_window=5,
                                  max_window_layers=1)),
    # explicit head_dim != hidden / heads, per-head q/k RMSNorm
    "qwen3": ("Qwen3Config", dict(COMMON, head_dim=32)),
    # sliding window shorter than the sequence
    "mistral": ("MistralConfig", dict(COMMON, sliding_window=6)),
    # fused qkv_proj / gate_up_proj, partial rotary
    "phi3": ("Phi3Config", dict(COMMON, partial_rotary_factor=0.5, pad_token_id=0, original_max_position_embeddings=64)),
}


def make_torch_model(name, seed=0):
    cls_name, kwargs = ARCHS[name]
    config = getattr(transformers, cls_name)(**json.loads(json.dumps(kwargs)))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: perturb them so their mapping is tested
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


def torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def arange_positions(b, n, start=0):
    return jnp.broadcast_to(jnp.arange(start, start + n, dtype=jnp.int32), (b, n))


def random_tokens(seed, shape):
    return np.random.RandomState(seed).randint(0, V, shape).astype(np.int32)


def jitted(decoder):
    """Forward with the module split and merged inside jit, as the library's callers do."""
    graphdef, state = nnx.split(decoder)

    @jax.jit
    def forward(state, tokens, positions, cache):
        return nnx.merge(graphdef, state)(tokens, positions, cache)

    return lambda tokens, positions, cache=None: forward(state, tokens, positions, cache)


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request, tmp_path_factory):
    name = request.param
    path = tmp_path_factory.mktemp(name)
    model = make_torch_model(name)
    model.save_pretrained(str(path))
    decoder, config = load_checkpoint(path)
    return dict(name=name, path=path, torch=model, decoder=decoder, config=config, forward=jitted(decoder))


# ---------------------------------------------------------------------------------- per architecture
def test_logits_match_transformers(arch):
    tokens = random_tokens(1, (B, L))
    ours, cache = arch["forward"](tokens, arange_positions(B, L))
    assert cache is None and ours.dtype == jnp.float32 and ours.shape == (B, L, V)
    diff = np.abs(np.asarray(ours) - torch_logits(arch["torch"], tokens)).max()
    print(f"{arch['name']}: max |logit diff| vs transformers = {diff:.2e}")
    assert diff <= TOL


def test_cached_incremental_decoding_equals_full_pass(arch):
    config, forward = arch["config"], arch["forward"]
    tokens = random_tokens(2, (B, L))
    full, _ = forward(tokens, arange_positions(B, L))
    prefix = 7
    cache = init_cache(config, B, 32, jnp.float32)
    assert all(leaf.shape[0] == B for leaf in jax.tree.leaves(cache))
    step_logits, cache = forward(tokens[:, :prefix], arange_positions(B, prefix), cache)
    pieces = [step_logits]
    for t in range(prefix, L):
        logits, cache = forward(tokens[:, t:t + 1], arange_positions(B, 1, t), cache)
        pieces.append(logits)
    incremental = np.concatenate([np.asarray(p) for p in pieces], axis=1)
    assert np.abs(incremental - np.asarray(full)).max() <= TOL


def test_rows_at_different_positions_equal_per_row_runs(arch):
    """Rows of different lengths share one cache batch; stale entries past a row's length are harmless."""
    config, forward = arch["config"], arch["forward"]
    lengths = np.array([4, 9, 13])
    total = 18
    tokens = random_tokens(3, (B, total))
    junk = random_tokens(4, (B, 13))  # prefill writes junk past each row's true length
    prompt = np.where(np.arange(13)[None] < lengths[:, None], tokens[:, :13], junk)
    cache = init_cache(config, B, 24, jnp.float32)
    _, cache = forward(prompt, arange_positions(B, 13), cache)
    got = {r: [] for r in range(B)}
    pos = lengths.copy()
    for _ in range(2):  # extend every row by chunks of 2 tokens at its own positions
        idx = pos[:, None] + np.arange(2)[None]
        chunk = np.take_along_axis(tokens, idx, axis=1)
        logits, cache = forward(chunk, jnp.asarray(idx, jnp.int32), cache)
        for r in range(B):
            got[r].append(np.asarray(logits[r]))
        pos += 2
    for r in range(B):  # reference: row r alone, no cache (causal, so later tokens do not matter)
        ref, _ = forward(tokens[r:r + 1], arange_positions(1, total))
        n = lengths[r] + 4
        np.testing.assert_allclose(np.concatenate(got[r]), np.asarray(ref[0, lengths[r]:n]), atol=TOL, rtol=0)


def test_bfloat16_load_stays_close_to_float32(arch):
    decoder16, _ = load_checkpoint(arch["path"], dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(decoder16, nnx.Param))
    assert all(p.dtype == jnp.bfloat16 for p in params)
    tokens = random_tokens(5, (B, L))
    ours16, _ = jitted(decoder16)(tokens, arange_positions(B, L))
    ours32, _ = arch["forward"](tokens, arange_positions(B, L))
    assert ours16.dtype == jnp.float32 and np.isfinite(np.asarray(ours16)).all()
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2%) on every weight and activation; through
    # two blocks the error stays a few percent of the logit scale. 5% of the largest logit is far below the
    # spread of the logits themselves, so a wrong mapping or a float32-only bug would still fail.
    scale = np.abs(np.asarray(ours32)).max()
    err = np.abs(np.asarray(ours16) - np.asarray(ours32)).max()
    assert err <= 0.05 * scale, (err, scale)
    # and the bf16 model ranks tokens the same way almost everywhere
    agree = np.mean(np.argmax(np.asarray(ours16), -1) == np.argmax(np.asarray(ours32), -1))
    assert agree >= 0.9


def test_save_checkpoint_round_trips_through_transformers(arch, tmp_path):
    save_checkpoint(arch["decoder"], arch["config"], tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert type(reloaded) is type(arch["torch"])
    tokens = random_tokens(6, (B, L))
    ours, _ = arch["forward"](tokens, arange_positions(B, L))
    assert np.abs(torch_logits(reloaded, tokens) - np.asarray(ours)).max() <= TOL
    again, config = load_checkpoint(tmp_path)
    assert config == arch["config"]
    same, _ = jitted(again)(tokens, arange_positions(B, L))
    np.testing.assert_array_equal(np.asarray(same), np.asarray(ours))


# ---------------------------------------------------------------------------------- config and cache details
def test_config_fields_and_hashable():
    llama = ArchConfig.from_hf(transformers.LlamaConfig(**ARCHS["llama_tied_linear"][1]))
    assert llama.eos_token_id == 2 and llama.bos_token_id == 1 and llama.tie_word_embeddings
    assert llama.rope_type == "linear" and llama.rope_factor == 2.0 and llama.rope_theta == 500.0
    assert hash(llama) == hash(ArchConfig.from_hf(llama.to_hf_dict()))
    qwen3 = ArchConfig.from_hf(transformers.Qwen3Config(**ARCHS["qwen3"][1]))
    assert qwen3.head_dim == 32 and qwen3.qk_norm
    qwen2 = ArchConfig.from_hf(transformers.Qwen2Config(**ARCHS["qwen2"][1]))
    assert qwen2.layer_windows == (None, 5)
    gpt2 = ArchConfig.from_hf(ARCHS["gpt2"][1] | {"model_type": "gpt2"})
    assert (gpt2.hidden_size, gpt2.num_layers, gpt2.num_kv_heads, gpt2.position_embedding) == (64, 2, 4, "learned")
    assert sorted(SUPPORTED_ARCHITECTURES) == ["gpt2", "llama", "mistral", "phi3", "qwen2", "qwen3"]


def test_legacy_rope_fields_read_like_rope_parameters():
    scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16)
    base = {k: v for k, v in COMMON.items()} | {"model_type": "llama"}
    legacy = ArchConfig.from_hf(base | {"rope_theta": 50000.0, "rope_scaling": scaling})
    modern = ArchConfig.from_hf(base | {"rope_parameters": scaling | {"rope_theta": 50000.0}})
    assert legacy.rope_type == modern.rope_type == "llama3"
    assert legacy.rope_theta == modern.rope_theta == 50000.0
    np.testing.assert_array_equal(rope_inv_freq(legacy)[0], rope_inv_freq(modern)[0])


@pytest.mark.parametrize("rope", [
    dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16),
    dict(rope_type="linear", factor=4.0),
    dict(rope_type="dynamic", factor=2.0),
    dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
])
def test_rope_frequencies_match_transformers(rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = transformers.LlamaConfig(**COMMON | {"rope_parameters": dict(rope, rope_theta=10000.0)})
    expected, scaling = ROPE_INIT_FUNCTIONS[rope["rope_type"]](hf, "cpu")
    ours, our_scaling = rope_inv_freq(ArchConfig.from_hf(hf))
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)
    assert our_scaling == pytest.approx(scaling)


def test_longrope_is_rejected_with_a_clear_message():
    raw = {k: v for k, v in COMMON.items()} | {"model_type": "phi3", "rope_parameters": dict(
        rope_type="longrope", rope_theta=10000.0, short_factor=[1.0] * 8, long_factor=[2.0] * 8,
        original_max_position_embeddings=32)}
    with pytest.raises(CheckpointError, match="rope_type 'longrope' is not supported"):
        ArchConfig.from_hf(raw)


def test_writes_past_capacity_are_dropped_not_clamped():
    config = ArchConfig.from_hf(transformers.LlamaConfig(**COMMON))
    forward = jitted(build_decoder(config, rngs=nnx.Rngs(0)))
    cache = init_cache(config, 2, 8, jnp.float32)
    tokens = jnp.asarray(random_tokens(7, (2, 8)))
    _, cache = forward(tokens, arange_positions(2, 8), cache)
    _, after = forward(tokens[:, :1], jnp.array([[8], [3]], jnp.int32), cache)
    for before_k, after_k in zip(cache["k"], after["k"]):
        np.testing.assert_array_equal(np.asarray(after_k[0]), np.asarray(before_k[0]))  # row 0: dropped
        assert not np.array_equal(np.asarray(after_k[1, 3]), np.asarray(before_k[1, 3]))  # row 1: rewritten


def test_random_init_trains_and_saves(tmp_path):
    """The path the training script takes: build, split Params, grad, save, reload with transformers."""
    config = ArchConfig.from_hf(transformers.LlamaConfig(**COMMON | {"tie_word_embeddings": True}))
    decoder = build_decoder(config, rngs=nnx.Rngs(0), dtype=jnp.float32)
    graphdef, params, rest = nnx.split(decoder, nnx.Param, ...)
    tokens = jnp.asarray(random_tokens(8, (2, 12)))

    def loss(params):
        logits, _ = nnx.merge(graphdef, params, rest)(tokens[:, :-1], arange_positions(2, 11), None)
        logp = jax.nn.log_softmax(logits, -1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert value == pytest.approx(np.log(V), abs=0.1)
    save_checkpoint(decoder, config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"] and saved["tie_word_embeddings"] is True
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ours, _ = decoder(tokens, arange_positions(2, 12), None)
    assert np.abs(torch_logits(torch_model, tokens) - np.asarray(ours)).max() <= TOL


def test_bfloat16_save_keeps_dtype(tmp_path):
    config = ArchConfig.from_hf(transformers.LlamaConfig(**COMMON))
    decoder = build_decoder(config, rngs=nnx.Rngs(1), dtype=jnp.bfloat16)
    save_checkpoint(decoder, config, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    again, _ = load_checkpoint(tmp_path, dtype=jnp.bfloat16)
    a = jax.tree.leaves(nnx.state(decoder, nnx.Param))
    b = jax.tree.leaves(nnx.state(again, nnx.Param))
    assert all(np.array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32)) for x, y in zip(a, b))


def test_sharded_checkpoint_loads(tmp_path):
    model = make_torch_model("llama3", seed=3)
    model.save_pretrained(str(tmp_path), max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    decoder, _ = load_checkpoint(tmp_path)
    tokens = random_tokens(9, (2, 10))
    ours, _ = decoder(jnp.asarray(tokens), arange_positions(2, 10), None)
    assert np.abs(np.asarray(ours) - torch_logits(model, tokens)).max() <= TOL


# ---------------------------------------------------------------------------------- CheckpointError cases
@pytest.fixture()
def llama_dir(tmp_path):
    make_torch_model("llama3", seed=4).save_pretrained(str(tmp_path))
    return tmp_path


def test_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_directory_without_weights(llama_dir):
    os.remove(llama_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="has no weights") as err:
        load_checkpoint(llama_dir)
    assert "model.safetensors" in str(err.value) and "model.safetensors.index.json" in str(err.value)


def test_unknown_architecture(llama_dir):
    raw = json.loads((llama_dir / "config.json").read_text())
    raw["model_type"] = "fake_arch"
    (llama_dir / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="unsupported architecture model_type='fake_arch'") as err:
        load_checkpoint(llama_dir)
    for name in SUPPORTED_ARCHITECTURES:
        assert name in str(err.value)


def _rewrite_weights(path, edit):
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_wrong_shape_weights(llama_dir):
    name = "model.layers.0.mlp.up_proj.weight"
    _rewrite_weights(llama_dir, lambda t: t.__setitem__(name, np.zeros((100, 64), np.float32)))
    with pytest.raises(CheckpointError, match="do not match its config.json") as err:
        load_checkpoint(llama_dir)
    assert f"wrong shapes: {name}: expected [128, 64], found [100, 64]" in str(err.value)


def test_missing_and_unexpected_tensors(llama_dir):
    def edit(t):
        del t["model.layers.1.self_attn.k_proj.weight"]
        t["model.layers.1.self_attn.extra.weight"] = np.zeros((2,), np.float32)

    _rewrite_weights(llama_dir, edit)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(llama_dir)
    message = str(err.value)
    assert "missing tensors: model.layers.1.self_attn.k_proj.weight" in message
    assert "unexpected tensors: model.layers.1.self_attn.extra.weight" in message
    assert "fix config.json" in message


def test_config_that_disagrees_with_weights(llama_dir):
    raw = json.loads((llama_dir / "config.json").read_text())
    raw["num_hidden_layers"] = 3
    (llama_dir / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="missing tensors: model.layers.2"):
        load_checkpoint(llama_dir)
