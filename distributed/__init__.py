"""Running kernels on many devices and processes with JAX's own distributed runtime.

A :class:`jax.sharding.Mesh` with two named axes: ``"data"`` (particles and prompts are split
over it) and ``"model"`` (weights, attention heads and the KV cache are split over it).
"""

from .mesh import DATA, MODEL, as_mesh, make_mesh
from .tensor_parallel import shard_model

__all__ = ["DATA", "MODEL", "as_mesh", "make_mesh", "shard_model"]
