"""Architecture configuration: one frozen dataclass read from a Hugging Face config.

``ArchConfig.from_hf`` accepts a ``transformers`` config object or a ``config.json`` dict and
normalises the architecture-specific field names (GPT-2's ``n_embd``, Qwen2's
``use_sliding_window``/``max_window_layers``, Phi-3's ``partial_rotary_factor``, rope settings in
``rope_parameters`` (transformers 5) or legacy ``rope_theta``/``rope_scaling``) into one set of
fields that the decoder reads. The original dict is kept (``to_hf_dict``) so that
``save_checkpoint`` can write a config that transformers reads back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from typing import Any

import numpy as np

from ..interface import InputError

SUPPORTED_ARCHITECTURES = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "phi3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")

# model_type -> HF class name written to config.json "architectures"
HF_CAUSAL_LM_CLASS = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}

_ACTIVATIONS = {
    "silu": "silu", "swish": "silu",
    "gelu": "gelu", "gelu_python": "gelu",
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


class CheckpointError(InputError):
    """A checkpoint or config the library cannot use; the message names the file and what to change.

    A subclass of :class:`genppl.models.interface.InputError` (hence of ``ValueError``).
    """


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Static description of a decoder-only transformer (hashable, usable as a jit static arg)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    eos_token_id: int | None = None
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    # blocks
    norm: str = "rms"                      # "rms" or "layer"
    norm_eps: float = 1e-6
    activation: str = "silu"               # "silu", "gelu", "gelu_tanh", "relu"
    gated_mlp: bool = True                 # SwiGLU-style gate * up (Llama) or fc -> act -> proj (GPT-2)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False                  # Qwen3: RMSNorm over head_dim on q and k before rope
    attn_scale: float | None = None        # None: head_dim ** -0.5
    scale_attn_by_inverse_layer_idx: bool = False  # GPT-2 option
    # positions
    position_embedding: str = "rope"       # "rope" or "learned"
    rope_type: str = "default"
    rope_theta: float = 10000.0
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int | None = None
    rope_attention_factor: float | None = None
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_mscale: float | None = None
    rope_mscale_all_dim: float | None = None
    rope_truncate: bool = True
    partial_rotary_factor: float = 1.0
    # attention windows, one entry per layer (None: full causal attention)
    layer_windows: tuple = ()
    # the original Hugging Face config as JSON (for save_checkpoint)
    hf_config_json: str = dataclasses.field(default="{}", repr=False)

    # ------------------------------------------------------------------ derived
    @property
    def num_hidden_layers(self) -> int:
        return self.num_layers

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor) if self.position_embedding == "rope" else 0

    def to_hf_dict(self) -> dict:
        """The Hugging Face config dict this config was read from (a fresh copy)."""
        return json.loads(self.hf_config_json)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_hf(cls, hf_config: Any) -> "ArchConfig":
        """Read a ``transformers`` config object or a ``config.json`` dict."""
        if isinstance(hf_config, dict):
            raw = dict(hf_config)
            model_type = raw.get("model_type")
            _check_model_type(model_type)
            # token ids as the file states them: transformers' config classes fill a default
            # EOS (e.g. Llama's 2) that has nothing to do with this checkpoint's tokenizer
            _token_ids(raw)  # validates them
            stated = {name: raw.get(name) for name in ("eos_token_id", "bos_token_id", "pad_token_id")}
            raw = _normalise_with_transformers(raw)
            raw.update(stated)
        elif hasattr(hf_config, "to_dict") and hasattr(hf_config, "model_type"):
            _check_model_type(hf_config.model_type)
            raw = hf_config.to_dict()
            raw["model_type"] = hf_config.model_type
        else:
            raise CheckpointError(
                f"ArchConfig.from_hf needs a transformers config or a config.json dict, got {type(hf_config).__name__}"
            )
        parse = _PARSERS[raw["model_type"]]
        try:
            fields = parse(raw)
            fields.update(_token_ids(raw))
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            what = f"no {e}" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"config.json is not a valid {raw['model_type']} config ({what}): fix the field "
                                  "or re-save the config with model.config.save_pretrained(path)") from e
        fields["hf_config_json"] = json.dumps(_jsonable(raw), sort_keys=True)
        config = cls(**fields)
        config.validate()
        return config

    def validate(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise CheckpointError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})"
            )
        if self.position_embedding == "rope":
            if self.rope_type not in SUPPORTED_ROPE_TYPES:
                raise CheckpointError(
                    f"rope_type {self.rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)}); "
                    "change rope_parameters in config.json or use a checkpoint without it"
                )
            if self.rotary_dim % 2 or self.rotary_dim <= 0:
                raise CheckpointError(
                    f"rotary dimension head_dim * partial_rotary_factor = {self.rotary_dim} must be a positive even number"
                )
        if len(self.layer_windows) != self.num_layers:
            raise CheckpointError(f"layer_windows has {len(self.layer_windows)} entries for {self.num_layers} layers")


# ---------------------------------------------------------------------- helpers
def _check_model_type(model_type) -> None:
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture model_type={model_type!r}: config.json must name one of "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} in its \"model_type\" field"
        )


def _normalise_with_transformers(raw: dict) -> dict:
    """Let the matching transformers config class fill defaults and standardise legacy fields."""
    try:
        from transformers import CONFIG_MAPPING
    except Exception:  # transformers missing: parse the dict as it is
        return raw
    try:
        cfg = CONFIG_MAPPING[raw["model_type"]].from_dict(raw)
    except Exception as e:  # noqa: BLE001 -- report transformers' own complaint
        raise CheckpointError(f"config.json is not a valid {raw['model_type']} config: {e}") from e
    out = cfg.to_dict()
    out["model_type"] = raw["model_type"]
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _first(value):
    """The first id of a token-id field (an int, a list of ints, or null)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise CheckpointError(f"token id {value!r} in config.json is not a non-negative integer: fix "
                              "eos_token_id / bos_token_id / pad_token_id")
    return int(value)


def _token_ids(raw: dict) -> dict:
    return {
        "eos_token_id": _first(raw.get("eos_token_id")),
        "bos_token_id": _first(raw.get("bos_token_id")),
        "pad_token_id": _first(raw.get("pad_token_id")),
    }


def _get(raw: dict, *names, default=None):
    for n in names:
        if raw.get(n) is not None:
            return raw[n]
    return default


def _rope_fields(raw: dict) -> dict:
    """Rope settings from ``rope_parameters`` (transformers 5) or legacy ``rope_theta``/``rope_scaling``."""
    params = raw.get("rope_parameters") or {}
    legacy = raw.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(legacy, dict):
        raise CheckpointError("rope_parameters / rope_scaling in config.json must be a dict")
    if any(isinstance(v, dict) for v in params.values()):
        raise CheckpointError("per-layer-type rope_parameters are not supported: use one flat rope_parameters dict")
    p = {**legacy, **params}
    rope_type = p.get("rope_type", p.get("type", "default")) or "default"
    if rope_type in ("su",):
        rope_type = "longrope"
    theta = _get(p, "rope_theta", default=_get(raw, "rope_theta", default=10000.0))
    partial = _get(p, "partial_rotary_factor", default=_get(raw, "partial_rotary_factor", default=1.0))
    original = _get(p, "original_max_position_embeddings",
                    default=_get(raw, "original_max_position_embeddings"))
    out = dict(
        rope_type=str(rope_type),
        rope_theta=float(theta),
        partial_rotary_factor=float(partial),
        rope_original_max_position_embeddings=None if original is None else int(original),
    )
    if rope_type in ("linear", "dynamic", "llama3", "yarn") and p.get("factor") is not None:
        out["rope_factor"] = float(p["factor"])
    if rope_type == "llama3":
        out["rope_low_freq_factor"] = float(p.get("low_freq_factor", 1.0))
        out["rope_high_freq_factor"] = float(p.get("high_freq_factor", 4.0))
    if rope_type == "yarn":
        for key, field in (("attention_factor", "rope_attention_factor"), ("mscale", "rope_mscale"),
                           ("mscale_all_dim", "rope_mscale_all_dim")):
            if p.get(key) is not None:
                out[field] = float(p[key])
        out["rope_beta_fast"] = float(p.get("beta_fast") or 32.0)
        out["rope_beta_slow"] = float(p.get("beta_slow") or 1.0)
        out["rope_truncate"] = bool(p.get("truncate", True))
    return out


def _llama_like(raw: dict, **extra) -> dict:
    hidden = int(raw["hidden_size"])
    heads = int(raw["num_attention_heads"])
    kv = int(_get(raw, "num_key_value_heads", default=heads))
    layers = int(raw["num_hidden_layers"])
    act = raw.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"hidden_act {act!r} is not supported (supported: {', '.join(sorted(_ACTIVATIONS))})")
    fields = dict(
        model_type=raw["model_type"],
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=int(_get(raw, "head_dim", default=hidden // heads)),
        intermediate_size=int(raw["intermediate_size"]),
        max_position_embeddings=int(raw["max_position_embeddings"]),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        norm="rms",
        norm_eps=float(_get(raw, "rms_norm_eps", default=1e-6)),
        activation=_ACTIVATIONS[act],
        gated_mlp=True,
        layer_windows=(None,) * layers,
    )
    fields.update(_rope_fields(raw))
    fields.update(extra)
    return fields


def _windows_from_layer_types(raw: dict, layers: int) -> tuple:
    window = raw.get("sliding_window")
    types = raw.get("layer_types")
    use = raw.get("use_sliding_window", True)
    if not window or not use:
        return (None,) * layers
    if types is None:
        start = int(_get(raw, "max_window_layers", default=0))
        types = ["sliding_attention" if i >= start else "full_attention" for i in range(layers)]
    return tuple(int(window) if t == "sliding_attention" else None for t in types)


def _parse_llama(raw):
    return _llama_like(raw, qkv_bias=bool(raw.get("attention_bias", False)),
                       o_bias=bool(raw.get("attention_bias", False)), mlp_bias=bool(raw.get("mlp_bias", False)))


def _parse_mistral(raw):
    layers = int(raw["num_hidden_layers"])
    window = raw.get("sliding_window")
    return _llama_like(raw, layer_windows=(int(window) if window else None,) * layers)


def _parse_qwen2(raw):
    layers = int(raw["num_hidden_layers"])
    return _llama_like(raw, qkv_bias=True, layer_windows=_windows_from_layer_types(raw, layers))


def _parse_qwen3(raw):
    layers = int(raw["num_hidden_layers"])
    bias = bool(raw.get("attention_bias", False))
    return _llama_like(raw, qkv_bias=bias, o_bias=bias, qk_norm=True,
                       layer_windows=_windows_from_layer_types(raw, layers))


def _parse_phi3(raw):
    layers = int(raw["num_hidden_layers"])
    window = raw.get("sliding_window")
    hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    # Phi-3 derives head_dim from hidden_size / heads (no head_dim field in its config class)
    return _llama_like(raw, head_dim=hidden // heads, layer_windows=(int(window) if window else None,) * layers)


def _parse_gpt2(raw):
    hidden = int(_get(raw, "n_embd", "hidden_size"))
    heads = int(_get(raw, "n_head", "num_attention_heads"))
    layers = int(_get(raw, "n_layer", "num_hidden_layers"))
    act = raw.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"activation_function {act!r} is not supported (supported: {', '.join(sorted(_ACTIVATIONS))})")
    if raw.get("reorder_and_upcast_attn"):
        pass  # numerically the same computation in float32 (we always upcast scores)
    if raw.get("add_cross_attention"):
        raise CheckpointError("GPT-2 with add_cross_attention is an encoder-decoder model: set add_cross_attention=false")
    head_dim = hidden // heads
    return dict(
        model_type="gpt2",
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=head_dim,
        intermediate_size=int(_get(raw, "n_inner", default=4 * hidden)),
        max_position_embeddings=int(_get(raw, "n_positions", "max_position_embeddings")),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
        norm="layer",
        norm_eps=float(_get(raw, "layer_norm_epsilon", default=1e-5)),
        activation=_ACTIVATIONS[act],
        gated_mlp=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        attn_scale=(head_dim ** -0.5) if raw.get("scale_attn_weights", True) else 1.0,
        scale_attn_by_inverse_layer_idx=bool(raw.get("scale_attn_by_inverse_layer_idx", False)),
        position_embedding="learned",
        partial_rotary_factor=1.0,
        layer_windows=(None,) * layers,
    )


_PARSERS = {
    "gpt2": _parse_gpt2,
    "llama": _parse_llama,
    "mistral": _parse_mistral,
    "qwen2": _parse_qwen2,
    "qwen3": _parse_qwen3,
    "phi3": _parse_phi3,
}


# ---------------------------------------------------------------------- rope tables
@lru_cache(maxsize=64)
def rope_inv_freq(config: ArchConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies (float32, length rotary_dim // 2) and the cos/sin scaling factor.

    Mirrors transformers' rope initialisers (computed in float32 like torch does). ``dynamic``
    NTK scaling equals the default frequencies for positions below max_position_embeddings,
    which is the range this library decodes in.
    """
    dim = config.rotary_dim
    base = np.float32(config.rope_theta)
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    pos_freqs = np.power(base, exponent, dtype=np.float32)
    inv_freq = (np.float32(1.0) / pos_freqs).astype(np.float32)
    scaling = 1.0
    kind = config.rope_type
    if kind == "linear":
        inv_freq = inv_freq / np.float32(config.rope_factor)
    elif kind == "llama3":
        factor = config.rope_factor
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        old = config.rope_original_max_position_embeddings or config.max_position_embeddings
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(factor), inv_freq).astype(np.float32)
        smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled).astype(np.float32)
    elif kind == "yarn":
        factor = config.rope_factor
        original = config.rope_original_max_position_embeddings or config.max_position_embeddings

        def mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        scaling = config.rope_attention_factor
        if scaling is None:
            if config.rope_mscale and config.rope_mscale_all_dim:
                scaling = mscale(factor, config.rope_mscale) / mscale(factor, config.rope_mscale_all_dim)
            else:
                scaling = mscale(factor)

        def correction_dim(rot):
            return (dim * math.log(original / (rot * 2 * math.pi))) / (2 * math.log(config.rope_theta))

        lo, hi = correction_dim(config.rope_beta_fast), correction_dim(config.rope_beta_slow)
        if config.rope_truncate:
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - lo) / (hi - lo), 0, 1).astype(np.float32)
        extrapolation = 1 - ramp
        interp = np.float32(1.0) / (np.float32(factor) * pos_freqs)
        inv_freq = (interp * (1 - extrapolation) + inv_freq * extrapolation).astype(np.float32)
    return inv_freq.astype(np.float32), float(scaling)
