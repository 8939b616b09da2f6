"""Multi-process runs on JAX's own distributed runtime (``jax.distributed``).

Start the same program once per process (one per host, or several CPU processes on one
machine), each with the coordinator's address, the number of processes and its own index::

    genppl --method smc --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # host 0
    genppl --method smc --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1   # host 1

or, in Python, call :func:`initialize` first, before anything else touches JAX::

    from genppl import distributed
    distributed.launch.initialize("10.0.0.1:1234", num_processes=2, process_id=0)
    mesh = distributed.make_mesh()          # every device of every process
    result = smc.run(program, 64, key=0, mesh=mesh)
    if distributed.launch.is_main():
        print(result.log_z)

After :func:`initialize`, ``jax.devices()`` lists the devices of every process, so a mesh
from :func:`~genppl.distributed.make_mesh` spans them all (the model axis groups consecutive
devices, which are a process's own: tensor parallelism stays within a host, the data axis
crosses hosts). Every process runs the same compiled program on its own shards; the results
every process reads are the same, and only process 0 (:func:`is_main`) should print or write.

On CPUs the cross-process collectives are gloo's (``jax_cpu_collectives_implementation``,
set here); on GPUs NCCL's. A process that dies is noticed by the coordination service
within ``heartbeat_timeout_s`` seconds; every other process then stops with JAX's fatal
error "Terminating process because the JAX distributed service detected fatal errors ...
another task died" instead of waiting for it forever. JAX's preemption handling catches
SIGTERM: stop a process with SIGKILL (``timeout -s KILL``) when it must not wait.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

from genppl.models.interface import InputError

__all__ = ["initialize", "is_main", "parse_coordinator", "spans_processes", "to_host"]


def parse_coordinator(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port); :class:`InputError` when it is not of that form."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"the coordinator must be HOST:PORT (e.g. 127.0.0.1:1234, or 10.0.0.1:1234 for process 0's "
                         f"host), got {address!r}")
    return host, int(port)


def initialize(coordinator: str, num_processes: int, process_id: int, *, local_device_ids=None,
               heartbeat_timeout_s: int = 20, initialization_timeout_s: int = 120, shutdown_timeout_s: int = 60,
               cpu_collectives: str = "gloo") -> None:
    """Join (process 0: start) a run of ``num_processes`` processes, before any JAX call.

    coordinator: ``"HOST:PORT"``, where process 0 listens (every process passes the same
    value); process_id: this process's index in ``0 .. num_processes - 1``. local_device_ids:
    the local devices this process uses (default all: on a GPU host one process may drive
    every GPU, or start one process per GPU with ``local_device_ids=[i]``).

    Bounded waits: joining gives up after ``initialization_timeout_s`` seconds (a peer never
    started); a process that stops sending heartbeats for ``heartbeat_timeout_s`` seconds is
    declared dead and every other process stops with an error naming it (JAX's default is
    100 s: the short default here keeps a broken run from hanging); at exit a process waits
    at most ``shutdown_timeout_s`` seconds for the others. cpu_collectives: ``"gloo"`` (JAX's
    CPU collectives) or ``"mpi"``. A thin wrapper of :func:`jax.distributed.initialize`; with
    ``num_processes=1`` it does nothing.
    """
    parse_coordinator(coordinator)
    for name, value, low in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if process_id >= num_processes:
        raise InputError(f"process_id={process_id} must be below num_processes={num_processes} "
                         f"(processes are numbered 0 .. {num_processes - 1})")
    for name, value in (("heartbeat_timeout_s", heartbeat_timeout_s), ("initialization_timeout_s",
                                                                      initialization_timeout_s),
                        ("shutdown_timeout_s", shutdown_timeout_s)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    if num_processes == 1:
        return
    if jax.distributed.is_initialized():
        raise InputError("jax.distributed is already initialized in this process: call initialize once")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(num_processes),
                                   process_id=int(process_id), local_device_ids=local_device_ids,
                                   initialization_timeout=int(initialization_timeout_s),
                                   heartbeat_timeout_seconds=int(heartbeat_timeout_s),
                                   shutdown_timeout_seconds=int(shutdown_timeout_s))
    except RuntimeError as err:
        if "must be called before" in str(err):
            raise InputError("initialize must run before anything touches JAX (jax.devices(), an array, a "
                             "model load): call it first thing in the program") from None
        raise


def is_main() -> bool:
    """True in process 0 (the one that prints and writes results), and in a one-process run."""
    return jax.process_index() == 0


def spans_processes(mesh) -> bool:
    """Whether ``mesh`` (a :class:`jax.sharding.Mesh` or None) holds devices of other processes:
    then its arrays must be gathered (:func:`to_host`) before the host reads them."""
    return mesh is not None and any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def to_host(tree):
    """Every array of ``tree`` as a whole numpy array, in every process.

    An array split over devices of several processes is gathered from all of them
    (:func:`jax.experimental.multihost_utils.process_allgather`: a collective, so every
    process must call it); other arrays are fetched with :func:`jax.device_get`.
    """
    from jax.experimental import multihost_utils

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(fetch, tree)
