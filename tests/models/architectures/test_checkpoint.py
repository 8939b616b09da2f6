"""Loading and saving checkpoint directories (models/architectures/checkpoint.py): round trips
through transformers, bfloat16, shards, and each CheckpointError case with the text of its
message, including corrupt and truncated files (issue 11, case 9).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.architectures.common import (
    COMMON, B, L, TOL, arange_positions, archs, jitted, make_torch_model, random_tokens, torch_logits, transformers,
)
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from genppl.models.architectures import (  # noqa: E402
    SUPPORTED_ARCHITECTURES, ArchConfig, CheckpointError, build_decoder, load_checkpoint, save_checkpoint,
)
from genppl.models.interface import InputError  # noqa: E402


@pytest.mark.parametrize("arch", archs("gpt2", "llama_tied_linear", "qwen3", "phi3"), indirect=True)
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


def test_error_is_an_input_error():
    assert issubclass(CheckpointError, InputError)


def _truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _garbage(file):
    file.write_bytes(np.random.default_rng(1).bytes(5000))


@pytest.mark.parametrize("damage", [_truncate, _garbage, lambda f: f.write_bytes(b"")],
                         ids=["truncated", "garbage", "empty"])


def test_corrupt_weights_name_the_file(llama_dir, damage):
    damage(llama_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="is not a readable safetensors file") as err:
        load_checkpoint(llama_dir)
    assert str(llama_dir / "model.safetensors") in str(err.value) and "save_pretrained" in str(err.value)


def test_a_tensor_cut_short_names_the_file(llama_dir):
    """The header is intact but the data ends early: caught when the tensor is read."""
    file = llama_dir / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[:-64])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file") as err:
        load_checkpoint(llama_dir)
    assert str(file) in str(err.value)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe garbage", "is not valid JSON"),
    (b'{"model_type": "llama", ', "is not valid JSON"),
    (b"[1, 2, 3]", "holds a JSON list, not an object"),
])


def test_corrupt_config_names_the_file(llama_dir, content, message):
    (llama_dir / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(llama_dir)
    assert str(llama_dir / "config.json") in str(err.value)


def test_corrupt_shard_index_names_the_file(tmp_path):
    make_torch_model("llama3", seed=3).save_pretrained(str(tmp_path), max_shard_size="40KB")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"metadata": {}')
    with pytest.raises(CheckpointError, match="is not valid JSON") as err:
        load_checkpoint(tmp_path)
    assert str(index) in str(err.value)
    index.write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match='needs a "weight_map"'):
        load_checkpoint(tmp_path)
