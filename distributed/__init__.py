"""Running kernels on many devices and processes with JAX's own distributed runtime.

A :class:`jax.sharding.Mesh` with two named axes: ``"data"`` (particles and prompts are split
over it) and ``"model"`` (weights, attention heads and the KV cache are split over it).
:mod:`.placement` puts weights and states on it; :mod:`.layout` describes where a run lived.
"""

from .layout import Layout, bytes_moved, layout_of
from .mesh import DATA, MODEL, as_mesh, make_mesh
from .placement import check_divides, constrain, data_size, on, place, place_model, replicate, replicated, shard_bytes, spread

__all__ = ["DATA", "MODEL", "Layout", "as_mesh", "bytes_moved", "check_divides", "constrain", "data_size",
           "layout_of", "make_mesh", "on", "place", "place_model", "replicate", "replicated", "shard_bytes", "spread"]

# the model axis (tensor parallelism) and multi-process runs
from . import launch
from .launch import initialize, is_main, spans_processes, to_host
from .tensor_parallel import shard_model

__all__ += ["initialize", "is_main", "launch", "shard_model", "spans_processes", "to_host"]
