"""Tensor parallelism: a transformer's weights and KV cache split over the mesh's model axis.

The layout is Megatron's, written as shardings and left to XLA's SPMD partitioner (GSPMD):
with ``m`` devices on the ``model`` axis,

- the query, key and value projections and the MLP's gate and up projections are split by
  output columns, so device ``j`` holds heads ``j*H/m .. (j+1)*H/m - 1`` (key/value heads
  ``j*K/m ..``) and hidden units ``j*F/m ..`` (kernel ``[d, out]`` sharded as ``P(None, model)``,
  bias as ``P(model)``);
- the attention output and MLP down projections are split by input rows (``P(model, None)``):
  each device multiplies its own heads' (hidden units') activations by its rows, and the
  partial sums ``y = sum_j h_j W_j`` are added across the model axis (one all-reduce after
  attention and one after the MLP per layer);
- the KV cache ``[particles, slots, K, head_dim]`` is split over its key/value-head axis to
  match, so attention over the cache never leaves a device (a sharding constraint where the
  cache is created or updated: ``TransformerLM.kv_sharding``);
- the token embedding table ``[V, d]`` and the output projection (``lm_head`` ``[d, V]``, or
  the tied table) are split over the vocabulary when ``m`` divides V: each device looks up
  and scores its own tokens (a lookup costs one all-reduce of the ``[n, L, d]`` activations;
  at V = 8192, d = 512 it saves (m-1)/m of a 16 MiB table per device, measured in
  benchmarks/tensor_parallel.py); norms, biases of the row-split layers and the position
  embeddings are replicated.

Grouped-query attention keeps its grouping: query head ``h`` reads key/value head
``h // (H/K)``, and a contiguous split of the H query heads into m parts lands on the same
device as the contiguous split of the K key/value heads exactly when m divides K. So the
model axis must divide the number of query heads, of key/value heads and the MLP width
(:class:`~genppl.models.interface.InputError` otherwise). The logits equal the one-device
logits up to float rounding (the all-reduces add the same terms in another order).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from genppl.models.interface import InputError, LanguageModel

from .mesh import MODEL, as_mesh

__all__ = ["shard_model", "param_specs", "kv_cache_spec", "check_divisible"]

#: modules split by output columns (their kernel is [d_in, d_out]; the bias follows the columns)
COLUMN_SPLIT = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head")
#: modules split by input rows (kernel [d_in, d_out]; the bias is added once, replicated)
ROW_SPLIT = ("o_proj", "down_proj")


def kv_cache_spec() -> P:
    """The partition of a KV-cache array ``[particles, slots, kv_heads, head_dim]``: key/value
    heads over the model axis, the particle axis left to the caller (data parallelism)."""
    return P(P.UNCONSTRAINED, None, MODEL, None)


def check_divisible(config, model_parallel: int) -> None:
    """Raise :class:`InputError` unless ``model_parallel`` divides the query heads, the
    key/value heads and the MLP width of ``config`` (an ``ArchConfig``)."""
    m = int(model_parallel)
    parts = (("attention heads (num_attention_heads)", config.num_heads),
             ("key/value heads (num_key_value_heads)", config.num_kv_heads),
             ("MLP hidden units (intermediate_size)", config.intermediate_size))
    bad = [f"{count} {what}" for what, count in parts if count % m]
    if bad:
        sizes = [d for d in range(1, max(c for _, c in parts) + 1) if all(c % d == 0 for _, c in parts)]
        raise InputError(
            f"a model axis of {m} devices must divide the model's {', '.join(bad)}: tensor parallelism gives "
            f"each device whole heads and an equal share of the MLP; use model_parallel in {sizes} "
            "(genppl.distributed.make_mesh(devices, model_parallel=...))")


def _names(path) -> tuple:
    out = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                out.append(getattr(entry, attr))
                break
    return tuple(n for n in out if n != "value")


def param_specs(params, config, model_parallel: int):
    """The :class:`PartitionSpec` of every weight of a decoder's parameter state (same tree).

    Column-split modules (:data:`COLUMN_SPLIT`): kernel ``P(None, model)``, bias ``P(model)``;
    row-split modules (:data:`ROW_SPLIT`): kernel ``P(model, None)``, bias replicated; the token
    embedding table ``P(model, None)`` and ``lm_head`` ``P(None, model)`` (split over the
    vocabulary) when ``model_parallel`` divides the vocabulary (else replicated); everything
    else (norms, position embeddings) replicated.
    """
    vocab_split = config.vocab_size % int(model_parallel) == 0

    def spec(path, leaf):
        names = _names(path)
        module, param = (names[-2], names[-1]) if len(names) >= 2 else (None, None)
        if module == "lm_head":
            return P(None, MODEL) if vocab_split else P()
        if module in COLUMN_SPLIT:
            return P(None, MODEL) if param == "kernel" else P(MODEL)
        if module in ROW_SPLIT:
            return P(MODEL, None) if param == "kernel" else P()
        if names[:2] == ("embed", "embedding") and vocab_split:
            return P(MODEL, None)
        return P()

    return jax.tree_util.tree_map_with_path(spec, params)


def place_array(x, sharding: NamedSharding):
    """A global array with ``sharding`` from ``x`` (the same value in every process): each
    process fills only the shards its own devices hold (works across processes as well)."""
    if isinstance(x, jax.Array) and x.is_fully_addressable and sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_model(lm: LanguageModel, mesh) -> LanguageModel:
    """The same language model with its weights and KV cache laid out over ``mesh``.

    For a transformer (``models.load``), the weights are split over the mesh's ``model`` axis
    in the Megatron layout (see this module's docstring) and replicated over its ``data``
    axis; the returned model's ``kv_sharding`` splits the KV cache over key/value heads.
    Other language models (``TabularLM``) are replicated on every device of the mesh. With a
    model axis of 1 the weights are replicated. ``mesh``: a :class:`jax.sharding.Mesh` with the
    axes ``("data", "model")`` (``genppl.distributed.make_mesh``).

    Everything that takes the model (``prefill``, ``score``, every kernel under ``jax.jit``)
    then runs partitioned by XLA: the logits equal the one-device logits up to float rounding.

    >>> from genppl import distributed, models
    >>> lm = distributed.shard_model(models.load(), distributed.make_mesh(2, model_parallel=2))  # doctest: +SKIP
    """
    from genppl.models.transformer import TransformerLM

    mesh = as_mesh(mesh)
    if mesh is None:
        raise InputError("shard_model needs a mesh: genppl.distributed.make_mesh(devices, model_parallel=...)")
    if not isinstance(lm, LanguageModel):
        raise InputError(f"shard_model takes a models.LanguageModel, got {type(lm).__name__}")
    m = int(mesh.shape[MODEL])
    if not isinstance(lm, TransformerLM):
        replicated = NamedSharding(mesh, P())
        return jax.tree.map(lambda x: place_array(x, replicated) if isinstance(x, (jax.Array, np.ndarray)) else x, lm)
    if m > 1:
        check_divisible(lm.config, m)
    specs = param_specs(lm.params, lm.config, m) if m > 1 else jax.tree.map(lambda _: P(), lm.params)
    params = jax.tree.map(lambda s, x: place_array(x, NamedSharding(mesh, s)), specs, lm.params,
                          is_leaf=lambda s: isinstance(s, P))
    kv = NamedSharding(mesh, kv_cache_spec()) if m > 1 else None
    return TransformerLM(lm.graphdef, params, lm.config, lm.tokenizer, lm.dtype, kv_sharding=kv)
