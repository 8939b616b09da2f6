"""Architecture configs (models/architectures/config.py): fields read from transformers configs
and config.json dicts, rope settings against transformers, token ids as the file states them."""

import numpy as np
import pytest

from tests.models.architectures.common import ARCHS, COMMON, transformers

from genppl.models.architectures import (  # noqa: E402
    SUPPORTED_ARCHITECTURES, ArchConfig, CheckpointError, rope_inv_freq,
)


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


def test_token_ids_come_from_the_file_not_from_config_class_defaults():
    """issue 11 case 7: LlamaConfig would fill eos_token_id=2 (Phi-3: 32000, GPT-2: 50256)."""
    base = {k: v for k, v in COMMON.items() if k not in ("eos_token_id", "bos_token_id")}
    for model_type in ("llama", "phi3", "mistral"):
        config = ArchConfig.from_hf(base | {"model_type": model_type})
        assert config.eos_token_id is None and config.bos_token_id is None
    gpt2 = {k: v for k, v in ARCHS["gpt2"][1].items() if k not in ("eos_token_id", "bos_token_id")}
    assert ArchConfig.from_hf(gpt2 | {"model_type": "gpt2"}).eos_token_id is None
    assert ArchConfig.from_hf(base | {"model_type": "llama", "eos_token_id": [7, 8]}).eos_token_id == 7


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": "wide"}, "config.json is not a valid llama config"),
    ({"num_hidden_layers": None}, "config.json is not a valid llama config"),
    ({"eos_token_id": 2.5}, "token id 2.5 in config.json is not a non-negative integer"),
    ({"eos_token_id": "</s>"}, "token id '</s>' in config.json is not a non-negative integer"),
])


def test_malformed_fields_are_checkpoint_errors(change, message):
    with pytest.raises(CheckpointError, match=message):
        ArchConfig.from_hf(dict(COMMON, model_type="llama") | change)
