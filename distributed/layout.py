"""What a run's results say about where it ran: the mesh, each device's share of the state,
and the bytes resampling moved between devices."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from .mesh import DATA, MODEL
from .placement import data_size, shard_bytes

__all__ = ["Layout", "bytes_moved", "layout_of"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a run lived.

    mesh_shape: the mesh's axis sizes (``{"data": D, "model": M}``); devices: D * M.
    split: what the data axis splits (``"particles"``, or ``"prompts"`` for a batch of prompts).
    resampling: ``"global"`` or ``"island"`` (see :mod:`genppl.inference.smc.islands`); ``"none"``
    for kernels that do not resample (sampling, MH chains, rollouts).
    state_bytes_per_device: bytes of the final state (tokens, KV cache, weights vector...)
    held by the busiest device. bytes_moved_per_step [steps]: bytes of particles resampling
    sent across devices at each step: the particles whose ancestor lives on another device,
    times the bytes of one particle (its tokens, logits, KV cache rows; the shared prompt cache
    never moves). bytes_moved: their total. collective_bytes: what XLA actually sends for them:
    it partitions ``particles[ancestors]`` (ancestors known to every device) as an all-gather of
    the per-particle state followed by a local gather (read off the compiled HLO), so every
    resampling step of global resampling sends (D - 1) * n * (bytes of one particle) in all,
    whichever particles cross; island resampling's gather stays on each device (0).
    """

    mesh_shape: dict
    devices: int
    split: str
    resampling: str
    state_bytes_per_device: int
    bytes_moved: int = 0
    bytes_moved_per_step: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    collective_bytes: int = 0
    #: how the state's token buffer lay on the devices (a ``jax.sharding.NamedSharding``; None
    #: when only the state's size was known)
    sharding: object = None

    def __repr__(self) -> str:
        steps = max(int(np.count_nonzero(self.bytes_moved_per_step)), 1)
        text = f"Layout(mesh {self.mesh_shape}, {self.split} split over data, "
        if self.resampling == "none":
            return text + f"{self.state_bytes_per_device:,} state bytes per device)"
        return text + (f"{self.resampling} resampling, {self.state_bytes_per_device:,} state bytes per device, "
                       f"{self.bytes_moved:,} bytes moved by resampling ({self.bytes_moved // steps:,} per "
                       f"resampling step that moved any; {self.collective_bytes:,} sent by XLA's all-gathers))")


def bytes_moved(ancestors, devices: int, particle_bytes: int) -> np.ndarray:
    """Bytes sent across devices at each step, from the genealogy ``ancestors`` [steps, n]:
    particles are split in ``devices`` contiguous blocks of n / devices, and particle i of
    step t is copied from another device when ``ancestors[t, i] // (n / devices) != i // (n / devices)``."""
    ancestors = np.asarray(ancestors)
    if ancestors.ndim < 2 or not ancestors.size or devices <= 1:
        return np.zeros(ancestors.shape[0] if ancestors.ndim else 0, np.int64)
    m = ancestors.shape[-1] // devices
    home = np.arange(ancestors.shape[-1]) // m
    crossed = (ancestors // m) != home
    return crossed.reshape(ancestors.shape[0], -1).sum(1).astype(np.int64) * int(particle_bytes)


def layout_of(mesh, state, split: str = "particles", resampling: str = "none", ancestors=None,
              particle_bytes: int = 0, resampled=None) -> Layout | None:
    """The :class:`Layout` of a run on ``mesh`` (None without one) whose state is ``state``
    (device arrays, measured shard by shard; or an int: bytes of the whole state, which the
    data axis splits evenly) and whose genealogy is ``ancestors`` [steps, n] (for a batch of
    prompts, split over its prompt axis, nothing crosses devices); ``resampled`` [steps]: the
    steps that resampled."""
    if mesh is None:
        return None
    if isinstance(state, (int, np.integer)):
        per_device = int(state) // data_size(mesh)
    else:
        per_device = shard_bytes(state)
    moved = np.zeros(0, np.int64)
    if ancestors is not None and split == "particles":
        moved = bytes_moved(ancestors, data_size(mesh), particle_bytes)
    elif ancestors is not None:
        moved = np.zeros(np.asarray(ancestors).shape[0], np.int64)
    collective = 0
    if resampled is not None and split == "particles" and resampling == "global" and ancestors is not None:
        d, n = data_size(mesh), np.asarray(ancestors).shape[-1]
        collective = int(np.sum(resampled)) * (d - 1) * n * int(particle_bytes)
    # the state's first array with a particle axis: its token buffer
    tokens = next((x for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) >= 1 and hasattr(x, "sharding")), None)
    return Layout(sharding=None if tokens is None else tokens.sharding,
                  mesh_shape={DATA: int(mesh.shape[DATA]), MODEL: int(mesh.shape[MODEL])},
                  devices=int(mesh.devices.size), split=split, resampling=resampling,
                  state_bytes_per_device=per_device, bytes_moved=int(moved.sum()),
                  bytes_moved_per_step=moved, collective_bytes=collective)
