"""Load and save Hugging Face checkpoint directories (config.json + safetensors) for the decoder.

Each architecture's tensor names are listed once (``_layout``) as entries mapping one HF tensor
to one or more canonical parameters of :class:`~.decoder.Decoder`: a ``torch.nn.Linear`` weight
is the transpose of our ``[in, out]`` kernel, GPT-2's ``Conv1D`` weight is stored as is, and
fused tensors (Phi-3 ``qkv_proj``/``gate_up_proj``, GPT-2 ``c_attn``) are the concatenation of
their parts. Loading and saving both walk that one list, so they cannot disagree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from .config import HF_CAUSAL_LM_CLASS, SUPPORTED_ARCHITECTURES, ArchConfig, CheckpointError
from .decoder import Decoder, build_decoder

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_SHOW = 5  # how many offending tensor names an error message lists


@dataclasses.dataclass(frozen=True)
class _Entry:
    hf_name: str
    paths: tuple          # canonical parameter paths (tuples) concatenated into this tensor
    transpose: bool       # HF stores [out, in] (nn.Linear) -> our kernel is its transpose
    axis: int = 0         # concatenation axis of fused parts, in HF orientation

    def to_hf(self, parts):
        parts = [p.T if self.transpose else p for p in parts]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=self.axis)

    def from_hf(self, tensor, shapes):
        """Split an HF tensor into our parameters (``shapes``: our parameter shapes)."""
        if len(shapes) == 1:
            return [tensor.T if self.transpose else tensor]
        sizes = [(s[::-1] if self.transpose else s)[self.axis] for s in shapes]
        cuts, acc = [], 0
        for s in sizes[:-1]:
            acc += s
            cuts.append(acc)
        pieces = jnp.split(tensor, cuts, axis=self.axis)
        return [p.T if self.transpose else p for p in pieces]


def _layout(config: ArchConfig) -> list[_Entry]:
    if config.model_type == "gpt2":
        return _gpt2_layout(config)
    return _llama_layout(config, fused=config.model_type == "phi3")


def _linear(hf: str, ours: tuple, bias: bool, fused_parts=None) -> list[_Entry]:
    out = [_Entry(f"{hf}.weight", tuple(p + ("kernel",) for p in (fused_parts or [ours])), True)]
    if bias:
        out.append(_Entry(f"{hf}.bias", tuple(p + ("bias",) for p in (fused_parts or [ours])), False))
    return out


def _llama_layout(c: ArchConfig, fused: bool) -> list[_Entry]:
    e = [_Entry("model.embed_tokens.weight", (("embed", "embedding"),), False)]
    for i in range(c.num_layers):
        hf, us = f"model.layers.{i}", ("layers", i)
        e.append(_Entry(f"{hf}.input_layernorm.weight", (us + ("attn_norm", "scale"),), False))
        e.append(_Entry(f"{hf}.post_attention_layernorm.weight", (us + ("mlp_norm", "scale"),), False))
        att = us + ("attn",)
        if fused:
            e += _linear(f"{hf}.self_attn.qkv_proj", None, c.qkv_bias,
                         [att + ("q_proj",), att + ("k_proj",), att + ("v_proj",)])
        else:
            for name in ("q_proj", "k_proj", "v_proj"):
                e += _linear(f"{hf}.self_attn.{name}", att + (name,), c.qkv_bias)
        e += _linear(f"{hf}.self_attn.o_proj", att + ("o_proj",), c.o_bias)
        if c.qk_norm:
            e.append(_Entry(f"{hf}.self_attn.q_norm.weight", (att + ("q_norm", "scale"),), False))
            e.append(_Entry(f"{hf}.self_attn.k_norm.weight", (att + ("k_norm", "scale"),), False))
        mlp = us + ("mlp",)
        if fused:
            e += _linear(f"{hf}.mlp.gate_up_proj", None, c.mlp_bias, [mlp + ("gate_proj",), mlp + ("up_proj",)])
        else:
            e += _linear(f"{hf}.mlp.gate_proj", mlp + ("gate_proj",), c.mlp_bias)
            e += _linear(f"{hf}.mlp.up_proj", mlp + ("up_proj",), c.mlp_bias)
        e += _linear(f"{hf}.mlp.down_proj", mlp + ("down_proj",), c.mlp_bias)
    e.append(_Entry("model.norm.weight", (("final_norm", "scale"),), False))
    if not c.tie_word_embeddings:
        e.append(_Entry("lm_head.weight", (("lm_head", "kernel"),), True))
    return e


def _gpt2_layout(c: ArchConfig) -> list[_Entry]:
    e = [_Entry("transformer.wte.weight", (("embed", "embedding"),), False),
         _Entry("transformer.wpe.weight", (("pos_embed", "embedding"),), False)]
    for i in range(c.num_layers):
        hf, us = f"transformer.h.{i}", ("layers", i)
        att, mlp = us + ("attn",), us + ("mlp",)
        for hf_ln, ours in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")):
            e.append(_Entry(f"{hf}.{hf_ln}.weight", (us + (ours, "scale"),), False))
            e.append(_Entry(f"{hf}.{hf_ln}.bias", (us + (ours, "bias"),), False))
        qkv = [att + ("q_proj",), att + ("k_proj",), att + ("v_proj",)]
        # Conv1D weights are [in, out]: no transpose; fused q|k|v along the output axis
        e.append(_Entry(f"{hf}.attn.c_attn.weight", tuple(p + ("kernel",) for p in qkv), False, axis=1))
        e.append(_Entry(f"{hf}.attn.c_attn.bias", tuple(p + ("bias",) for p in qkv), False, axis=0))
        for hf_name, ours in (("attn.c_proj", att + ("o_proj",)), ("mlp.c_fc", mlp + ("up_proj",)),
                              ("mlp.c_proj", mlp + ("down_proj",))):
            e.append(_Entry(f"{hf}.{hf_name}.weight", (ours + ("kernel",),), False))
            e.append(_Entry(f"{hf}.{hf_name}.bias", (ours + ("bias",),), False))
    e.append(_Entry("transformer.ln_f.weight", (("final_norm", "scale"),), False))
    e.append(_Entry("transformer.ln_f.bias", (("final_norm", "bias"),), False))
    if not c.tie_word_embeddings:
        e.append(_Entry("lm_head.weight", (("lm_head", "kernel"),), True))
    return e


def _ignorable(name: str, config: ArchConfig) -> bool:
    """Tensors a checkpoint may carry that the model does not need."""
    if name.endswith("rotary_emb.inv_freq"):
        return True
    if config.tie_word_embeddings and name == "lm_head.weight":
        return True  # a tied head saved explicitly: the embedding is used
    if config.model_type == "gpt2" and (name.endswith(".attn.bias") or name.endswith(".attn.masked_bias")):
        return True  # GPT-2's old causal-mask buffers
    return False


# ---------------------------------------------------------------------- state helpers
def _flat_params(module: nnx.Module) -> dict:
    _, state = nnx.split(module)
    return {tuple(path): var for path, var in nnx.to_flat_state(state)}


def _expected_shapes(config: ArchConfig, layout, flat) -> dict:
    """HF name -> expected shape, derived from our parameter shapes through the layout."""
    out = {}
    for entry in layout:
        shapes = [tuple(flat[p].get_value().shape) for p in entry.paths]
        hf = [s[::-1] if entry.transpose else s for s in shapes]
        if len(hf) == 1:
            out[entry.hf_name] = hf[0]
        else:
            total = list(hf[0])
            total[entry.axis] = sum(s[entry.axis] for s in hf)
            out[entry.hf_name] = tuple(total)
    return out


# ---------------------------------------------------------------------- load
def _read_config(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {path} does not exist: pass a local directory that holds "
                              "config.json and model.safetensors")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file: pass the checkpoint directory that holds config.json and weights")
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{path} has no config.json: save the model config there "
                              "(e.g. model.config.save_pretrained(path))")
    return read_json(cfg_file, "re-save the config with model.config.save_pretrained(path)")


def read_json(file: Path, fix: str) -> dict:
    """A JSON object from ``file``; a :class:`CheckpointError` naming the file and ``fix`` otherwise."""
    try:
        value = json.loads(Path(file).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}): the file is corrupt or truncated; {fix}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {file} ({e}): check the file's permissions; {fix}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} holds a JSON {type(value).__name__}, not an object: {fix}")
    return value


@contextlib.contextmanager
def open_safetensors(file: Path):
    """``safe_open(file)`` whose failures (a truncated or garbage file) are one CheckpointError naming it."""
    from safetensors import safe_open

    try:
        handle = safe_open(str(file), framework="flax")
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean an unreadable file
        raise CheckpointError(_corrupt_weights(file, e)) from None
    with handle as h:
        yield h


def _corrupt_weights(file, err) -> str:
    return (f"{file} is not a readable safetensors file ({type(err).__name__}: {err}): it is truncated or "
            "corrupt; download it again or re-save the model with model.save_pretrained(path, safe_serialization=True)")


def _weight_files(path: Path) -> dict:
    """HF tensor name -> safetensors file holding it."""
    single, index = path / WEIGHTS_NAME, path / INDEX_NAME
    if single.exists():
        with open_safetensors(single) as f:
            return {k: single for k in f.keys()}
    if index.exists():
        fix = "re-save the checkpoint with save_pretrained(path, safe_serialization=True)"
        weight_map = read_json(index, fix).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} is not a safetensors index (needs a \"weight_map\" object): {fix}")
        missing = sorted({f for f in weight_map.values() if not (path / f).exists()})
        if missing:
            raise CheckpointError(f"{index} names shard files that are not in {path}: {', '.join(missing[:_SHOW])}; "
                                  "copy the missing shards into the directory")
        return {k: path / f for k, f in weight_map.items()}
    others = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".h5"))
    hint = f" (found {', '.join(others[:_SHOW])})" if others else ""
    raise CheckpointError(
        f"{path} has no weights: expected {WEIGHTS_NAME} or a sharded {INDEX_NAME}{hint}; "
        "save them with model.save_pretrained(path, safe_serialization=True) "
        "(PyTorch .bin weights must be converted to safetensors)"
    )


def _shapes_in_files(files: dict) -> dict:
    shapes = {}
    by_file: dict = {}
    for name, f in files.items():
        by_file.setdefault(f, []).append(name)
    for f, names in by_file.items():
        with open_safetensors(f) as h:
            present = set(h.keys())
            for n in names:
                if n in present:
                    shapes[n] = tuple(h.get_slice(n).get_shape())
    return shapes


def _gpt2_prefix(files: dict) -> dict:
    """Old GPT-2 checkpoints name tensors without the ``transformer.`` prefix."""
    if "transformer.wte.weight" in files or "wte.weight" not in files:
        return files
    return {(k if k.startswith("lm_head.") else f"transformer.{k}"): (k, v) for k, v in files.items()}


def _mismatch_message(path, config, missing, unexpected, wrong) -> str:
    lines = [f"the weights in {path} do not match its config.json ({config.model_type}, "
             f"{config.num_layers} layers, hidden {config.hidden_size}, vocab {config.vocab_size}):"]
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        lines.append(f"  missing tensors: {', '.join(missing[:_SHOW])}{more}")
    if unexpected:
        more = f" and {len(unexpected) - _SHOW} more" if len(unexpected) > _SHOW else ""
        lines.append(f"  unexpected tensors: {', '.join(unexpected[:_SHOW])}{more}")
    if wrong:
        shown = "; ".join(f"{n}: expected {list(e)}, found {list(f)}" for n, e, f in wrong[:_SHOW])
        more = f" and {len(wrong) - _SHOW} more" if len(wrong) > _SHOW else ""
        lines.append(f"  wrong shapes: {shown}{more}")
    lines.append("  fix config.json (sizes, layer count, tie_word_embeddings, model_type) so it describes these "
                 "weights, or point at the checkpoint that matches it")
    return "\n".join(lines)


def load_checkpoint(path, dtype=jnp.float32, extra: dict | None = None) -> tuple[Decoder, ArchConfig]:
    """Load a local HF checkpoint directory; returns ``(decoder, config)`` with params in ``dtype``.

    Every fault in the directory (missing or corrupt config.json, unreadable or truncated
    safetensors, tensors that do not match the config) is one
    :class:`CheckpointError` naming the file and what to do.

    extra: ``{hf tensor name: expected shape}`` of tensors beyond the decoder (a head such as
    ``LlamaForTokenClassification``'s ``score.weight``); each must be present with that shape,
    and is returned, in ``dtype``, as a third item ``{name: array}``.
    """
    path = Path(path).expanduser()
    raw = _read_config(path)
    if "model_type" not in raw:
        raise CheckpointError(f"{path / 'config.json'} has no \"model_type\": set it to one of "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    config = ArchConfig.from_hf(raw)
    files = _weight_files(path)
    if config.model_type == "gpt2":
        renamed = _gpt2_prefix(files)
        if renamed is not files:
            source = {k: v[0] for k, v in renamed.items()}
            files = {k: v[1] for k, v in renamed.items()}
        else:
            source = {k: k for k in files}
    else:
        source = {k: k for k in files}

    abstract = nnx.eval_shape(lambda: build_decoder(config, rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, state = nnx.split(abstract)
    flat = {tuple(p): v for p, v in nnx.to_flat_state(state)}
    layout = _layout(config)
    expected = _expected_shapes(config, layout, flat)
    found = _shapes_in_files({source[k]: f for k, f in files.items()})
    found = {k: found[source[k]] for k in files if source[k] in found}

    if extra:
        expected = dict(expected, **{name: tuple(shape) for name, shape in extra.items()})
    missing = [n for n in expected if n not in found]
    unexpected = [n for n in found if n not in expected and not _ignorable(n, config)]
    wrong = [(n, expected[n], found[n]) for n in expected if n in found and tuple(found[n]) != tuple(expected[n])]
    if missing or unexpected or wrong:
        raise CheckpointError(_mismatch_message(path, config, missing, unexpected, wrong))

    with contextlib.ExitStack() as stack:
        handles: dict = {}
        for entry in layout:
            f = files[entry.hf_name]
            if f not in handles:
                handles[f] = stack.enter_context(open_safetensors(f))
            try:
                tensor = handles[f].get_tensor(source[entry.hf_name])
            except Exception as e:  # noqa: BLE001 - a tensor whose bytes are missing or unreadable
                raise CheckpointError(_corrupt_weights(f, e)) from None
            tensor = jnp.asarray(tensor).astype(dtype)
            shapes = [flat[p].get_value().shape for p in entry.paths]
            for p, value in zip(entry.paths, entry.from_hf(tensor, shapes)):
                flat[p].set_value(value)
        heads = {}
        for name in extra or ():
            f = files[name]
            if f not in handles:
                handles[f] = stack.enter_context(open_safetensors(f))
            try:
                heads[name] = jnp.asarray(handles[f].get_tensor(source[name])).astype(dtype)
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(_corrupt_weights(f, e)) from None
    params = nnx.from_flat_state(list(flat.items()))
    if extra:
        return nnx.merge(graphdef, params), config, heads
    return nnx.merge(graphdef, params), config


# ---------------------------------------------------------------------- save
def _hf_dict_from_fields(c: ArchConfig) -> dict:
    """A config.json dict for an ArchConfig built by hand (no HF dict attached)."""
    common = dict(model_type=c.model_type, vocab_size=c.vocab_size, eos_token_id=c.eos_token_id,
                  bos_token_id=c.bos_token_id, pad_token_id=c.pad_token_id, tie_word_embeddings=c.tie_word_embeddings)
    if c.model_type == "gpt2":
        return dict(common, n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads,
                    n_positions=c.max_position_embeddings, n_inner=c.intermediate_size,
                    layer_norm_epsilon=c.norm_eps, scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx)
    rope = {"rope_type": c.rope_type, "rope_theta": c.rope_theta}
    if c.rope_type in ("linear", "dynamic", "llama3", "yarn"):
        rope["factor"] = c.rope_factor
    if c.rope_type == "llama3":
        rope.update(low_freq_factor=c.rope_low_freq_factor, high_freq_factor=c.rope_high_freq_factor,
                    original_max_position_embeddings=c.rope_original_max_position_embeddings
                    or c.max_position_embeddings)
    if c.partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = c.partial_rotary_factor
    act = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}[c.activation]
    out = dict(common, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
               num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
               head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.norm_eps,
               hidden_act=act, rope_parameters=rope)
    windows = [w for w in c.layer_windows if w is not None]
    if c.model_type == "llama":
        out.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
    elif c.model_type in ("mistral", "phi3"):
        out["sliding_window"] = windows[0] if windows else None
    elif c.model_type in ("qwen2", "qwen3"):
        out.update(use_sliding_window=bool(windows), sliding_window=windows[0] if windows else None,
                   layer_types=["sliding_attention" if w else "full_attention" for w in c.layer_windows])
        if c.model_type == "qwen3":
            out["attention_bias"] = c.qkv_bias
    if c.model_type == "phi3":
        out.pop("head_dim")
        out["original_max_position_embeddings"] = c.rope_original_max_position_embeddings or c.max_position_embeddings
    return out


def save_checkpoint(decoder: Decoder, config: ArchConfig, path, extra: dict | None = None,
                    architecture: str | None = None, config_fields: dict | None = None) -> Path:
    """Write ``config.json`` (through the transformers config class) and ``model.safetensors`` in HF names.

    The saved directory loads with ``load_checkpoint`` and with transformers'
    ``AutoModelForCausalLM.from_pretrained``. Params are written in their own dtype.
    extra: further tensors ``{hf name: array}`` (a classification head); architecture: the
    class named in ``"architectures"`` (default the causal LM); config_fields: further
    config.json fields (e.g. ``num_labels``).
    """
    import safetensors.flax
    from transformers import CONFIG_MAPPING

    path = Path(path).expanduser()
    if (path / INDEX_NAME).exists():
        raise CheckpointError(f"{path} already holds a sharded checkpoint ({INDEX_NAME}): save into an empty "
                              "directory or delete the old shards first")
    path.mkdir(parents=True, exist_ok=True)
    flat = {p: v.get_value() for p, v in _flat_params(decoder).items()}
    dtypes = {jnp.dtype(v.dtype) for v in flat.values()}
    tensors = {}
    for entry in _layout(config):
        try:
            parts = [flat[p] for p in entry.paths]
        except KeyError as e:
            raise CheckpointError(f"the decoder has no parameter {e} that config {config.model_type} needs: "
                                  "save a decoder built from this same config") from e
        tensors[entry.hf_name] = jnp.asarray(entry.to_hf(parts))
    for name, value in (extra or {}).items():
        tensors[name] = jnp.asarray(value)
    tensors = {k: jax.device_get(v) for k, v in tensors.items()}
    tensors = {k: jnp.asarray(v) for k, v in tensors.items()}

    raw = config.to_hf_dict() or _hf_dict_from_fields(config)
    raw["model_type"] = config.model_type
    raw["architectures"] = [architecture or HF_CAUSAL_LM_CLASS[config.model_type]]
    raw.update(config_fields or {})
    raw["tie_word_embeddings"] = config.tie_word_embeddings
    raw["dtype"] = jnp.dtype(next(iter(dtypes))).name if len(dtypes) == 1 else "float32"
    raw.pop("torch_dtype", None)
    raw.pop("transformers_version", None)
    try:
        hf_config = CONFIG_MAPPING[config.model_type].from_dict(raw)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"transformers rejects the config for {config.model_type}: {e}") from e
    hf_config.save_pretrained(str(path))
    safetensors.flax.save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    return path
