"""Where arrays live on a mesh: weights replicated, particles (or prompts) split over the data axis.

Every kernel that takes ``mesh=`` does three things, all with JAX's own machinery (GSPMD):

1. :func:`place_model` puts the model's weights on the mesh, replicated over the data axis
   (sharded over the model axis when it is larger than 1: tensor parallelism);
2. :func:`place` puts the initial state on the mesh: every per-particle leaf split over the
   data axis along its particle axis (``NamedSharding(mesh, P("data"))``), the shared prompt
   cache (:class:`models.interface.Shared`) and every other leaf replicated;
3. it runs its jitted sweep under :func:`on` (``jax.set_mesh``), inside which
   :func:`constrain` pins the carry of the loop to the same layout at every step
   (``jax.lax.with_sharding_constraint``), so that XLA keeps particles where they are and
   moves only what resampling asks for.

The computation is the single-device one: the same jaxpr, partitioned by XLA. Random draws do
not depend on the layout because JAX's threefry generator is partitionable
(``jax_threefry_partitionable``, on by default): the bits of ``jax.random.uniform(key, (n,))``
are a function of the key and the element's index, not of which device computes it.
Reductions over particles (log-sum-exp of the weights, the resampler's cumulative sum) run on
the replicated weight vector, in the same order as on one device. So a sharded run gives the
same tokens and the same log Z as the one-device run: bit for bit when each particle's own
arithmetic does not depend on how many particles share a device (the tabular LM; tested), and
up to float32 rounding of that arithmetic otherwise: XLA may pick a different CPU/GPU kernel
for a matrix product over n / D rows than over n rows (seen on a tiny Llama: a weight off by
one unit in the last place, 5e-7, at some steps; the tokens the same). A token could then
differ only if a uniform draw fell within that rounding of a boundary of the cumulative
distribution (probability about 1e-7 per draw).

A batch of B prompts (:func:`ppl.stack`) is split over its prompt axis instead: each prompt's
particles then live on one device, and resampling never crosses devices. B must be a multiple
of the data axis size.
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genppl.models.batch import in_prompt_batch
from genppl.models.interface import InputError, Shared, map_particles

from .mesh import DATA, MODEL, as_mesh

__all__ = ["check_divides", "constrain", "data_size", "on", "place", "place_model", "replicate", "shard_bytes"]


def data_size(mesh: Mesh | None) -> int:
    """The number of devices particles are split over (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[DATA])


def check_divides(count: int, mesh: Mesh | None, what: str = "n (the number of particles)") -> None:
    """:class:`InputError` unless ``count`` splits evenly over the mesh's data axis."""
    d = data_size(mesh)
    if count % d:
        lower, upper = count // d * d, -(-count // d) * d
        fix = f"{upper}" if not lower else f"{lower} or {upper}"
        raise InputError(f"{what}={count} does not split over the mesh's data axis of {d} devices: "
                         f"use a multiple of {d} (e.g. {fix}), or a mesh with a data axis that divides {count} "
                         f"(genppl.distributed.make_mesh(devices, model_parallel))")


def replicate(tree, mesh: Mesh | None):
    """Every leaf of ``tree`` on every device of ``mesh`` (``tree`` itself without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def place_model(lm, mesh: Mesh | None):
    """The language model's weights on ``mesh``: replicated over the data axis; split over
    the model axis (tensor parallel, :mod:`genppl.distributed.tensor_parallel`) when
    ``mesh.shape["model"] > 1``. A no-op without a mesh, or when the weights are already there."""
    if mesh is None:
        return lm
    if mesh.shape[MODEL] > 1:
        from .tensor_parallel import shard_model

        return shard_model(lm, mesh)
    return replicate(lm, mesh)


def particle_spec(x, axis: int, d: int) -> P:
    """Split ``x`` over the data axis along ``axis`` when that axis divides evenly, else replicate."""
    if getattr(x, "ndim", 0) > axis and x.shape[axis] % d == 0:
        return P(*([None] * axis), DATA)
    return P()


def place(tree, mesh: Mesh | None, axis: int = 0):
    """Put a batched state on ``mesh``: per-particle leaves split over the data axis along
    ``axis`` (0 for one prompt's particles; 0 is also the prompt axis of a batch of prompts),
    :class:`~models.interface.Shared` parts (a prompt's cache) replicated."""
    if mesh is None:
        return tree
    d = data_size(mesh)
    shared = jax.tree.map(lambda x: x, tree, is_leaf=lambda x: isinstance(x, Shared))
    placed = map_particles(lambda x: jax.device_put(x, NamedSharding(mesh, particle_spec(x, axis, d))), shared)
    return jax.tree.map(lambda x: replicate(x, mesh) if isinstance(x, Shared) else x, placed,
                        is_leaf=lambda x: isinstance(x, Shared))


def spread(mesh, lm, n: int, state=None, prompts: tuple = ()):
    """The boundary of a kernel called with ``mesh=`` (anything :func:`as_mesh` takes):
    checks and placements, in one place. One prompt: ``state`` (its particles lead with
    ``n``, a multiple of the data axis size) split over the data axis. A batch of prompts:
    ``prompts`` (arrays leading with the prompt axis: padded prompts, lengths, keys; B a
    multiple of the data axis size) split over it. Returns (mesh or None, the placed LM,
    the placed state, the placed ``prompts``); without a mesh everything comes back as given."""
    mesh = as_mesh(mesh)
    if mesh is None:
        return None, lm, state, prompts
    if prompts:
        check_divides(int(np.shape(prompts[0])[0]), mesh, "the number of prompts")
        prompts = tuple(place(x, mesh) for x in prompts)
    else:
        check_divides(n, mesh)
        state = place(state, mesh)
    return mesh, place_model(lm, mesh), state, prompts


def on(mesh: Mesh | None):
    """The context a sharded sweep is traced and run in (``jax.set_mesh``); a null context
    without a mesh, so that one-device runs are exactly what they were."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def constrain(tree, axis: int = 0):
    """Inside a jitted sweep run under :func:`on`: pin every per-particle leaf of ``tree`` to
    the data axis along ``axis`` (``jax.lax.with_sharding_constraint``); a no-op without a
    mesh, with a data axis of one device, or inside a batch run's prompt map (whose prompt
    axis carries the split). Traceable; :class:`~models.interface.Shared` parts are left alone."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA not in mesh.axis_names or mesh.shape[DATA] == 1 or in_prompt_batch():
        return tree
    d = mesh.shape[DATA]

    def pin(x):
        spec = particle_spec(x, axis, d)
        if not spec:
            return x
        # only the particle axis is pinned: the other axes stay open, so a model axis may split
        # them (the KV cache's heads under tensor parallelism)
        return jax.lax.with_sharding_constraint(x, P(*spec, *([P.UNCONSTRAINED] * (x.ndim - len(spec)))))

    return map_particles(pin, tree)


def replicated(x):
    """Inside a sweep under :func:`on`: ``x`` on every device (small arrays every device reads
    in full, such as the weight vector resampling draws from)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA not in mesh.axis_names or mesh.shape[DATA] == 1 or in_prompt_batch():
        return x
    return jax.lax.with_sharding_constraint(x, P())


def shard_bytes(tree) -> int:
    """Bytes of ``tree``'s arrays held by the busiest device (the largest shard of each leaf,
    summed): what one device of the mesh stores of that state."""
    total = 0
    for x in jax.tree.leaves(tree):
        shards = getattr(x, "addressable_shards", None)
        if shards:
            per_device: dict = {}
            for s in shards:
                per_device[s.device] = per_device.get(s.device, 0) + s.data.nbytes
            total += max(per_device.values())
        elif hasattr(x, "nbytes"):
            total += int(np.asarray(x).nbytes)
    return int(total)


__all__ += ["particle_spec", "replicated", "spread"]
