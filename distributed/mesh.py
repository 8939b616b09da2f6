"""The device mesh every kernel accepts: a data axis for particles and prompts, a model axis for weights."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from genppl.models.interface import InputError

__all__ = ["DATA", "MODEL", "make_mesh", "as_mesh"]

#: the mesh axis particles and prompts are split over
DATA = "data"
#: the mesh axis weights (attention heads, MLP columns) and the KV cache are split over
MODEL = "model"


def make_mesh(devices: int | Sequence | None = None, model_parallel: int = 1) -> Mesh:
    """A ``(data, model)`` mesh over ``devices``.

    devices: how many of ``jax.devices()`` to use (the first ones), an explicit sequence of
    devices, or None for all of them. model_parallel: the size of the model axis; the data
    axis gets ``len(devices) // model_parallel``.

    >>> from genppl import distributed
    >>> mesh = distributed.make_mesh(1)
    >>> dict(mesh.shape)
    {'data': 1, 'model': 1}
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise InputError(
                f"devices={devices} but this process sees {len(available)} device(s) "
                f"({available[0].platform}); pass at most {len(available)}, or on a CPU start Python with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} to simulate more")
        chosen = list(available[:devices])
    else:
        chosen = list(devices)
        if not chosen:
            raise InputError("devices is an empty sequence; pass a count, a list of devices or None")
    if isinstance(model_parallel, bool) or not isinstance(model_parallel, (int, np.integer)) \
            or model_parallel < 1 or len(chosen) % model_parallel:
        raise InputError(f"model_parallel={model_parallel!r} must be a positive divisor of the number of "
                         f"devices ({len(chosen)})")
    grid = np.array(chosen, dtype=object).reshape(len(chosen) // model_parallel, model_parallel)
    return Mesh(grid, (DATA, MODEL))


def as_mesh(mesh) -> Mesh | None:
    """Normalise a kernel's ``mesh=`` argument: None (one device, today's behaviour), a
    :class:`jax.sharding.Mesh` with axes ``data`` and ``model``, or an int (that many devices,
    data-parallel)."""
    if mesh is None or isinstance(mesh, Mesh):
        if isinstance(mesh, Mesh) and set(mesh.axis_names) != {DATA, MODEL}:
            raise InputError(f"the mesh must have the axes ('{DATA}', '{MODEL}'), got {mesh.axis_names}; "
                             "build it with genppl.distributed.make_mesh(devices, model_parallel)")
        return mesh
    if isinstance(mesh, (int, np.integer)) and not isinstance(mesh, bool):
        return make_mesh(int(mesh))
    raise InputError(f"mesh must be None, a number of devices, or a jax.sharding.Mesh; got {type(mesh).__name__}")
