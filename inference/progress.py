"""Progress bars for long calls, including one long compiled sweep.

A compiled ``lax.scan`` cannot hold a Python progress bar. Two ways to report from a sweep:

* :func:`chunked_sweep` (what ``smc.run`` uses): the same steps as one sweep, run as a few
  compiled chunks (``smc.sweep_keys`` over consecutive slices of the step keys, so the output
  is bit-identical), the bar advancing between chunks; it also stops early once every
  particle has finished. No callback in the compiled program.
* :class:`Reporting`: a kernel wrapper that, every ``every`` steps, sends the step number to
  the host with ``jax.debug.callback`` from inside the compiled loop. Measured on CPU
  (benchmarks/progress.py) a firing callback costs far more inside the SMC sweep than its
  ~80 µs in a trivial loop, so it is offered, not the default.

The host side is the bar opened by :func:`bar`; bars form a stack pushed and popped only by
that context manager (the one piece of module state, scoped like numpyro's handler stack), so
a :class:`Reporting` wrapper holds no bar and stays hashable: equal wrappers share one
compiled sweep. A callback that arrives while no bar is open does nothing.

Bars are tqdm's ``auto`` bars (a widget in notebooks with ipywidgets, text in terminals)
and appear only after ``DELAY`` seconds, so short calls print nothing; nothing is drawn
when stderr is neither a terminal nor a Jupyter kernel (logs, captured output).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Callable

import jax
import numpy as np

__all__ = ["CHUNKS", "DELAY", "Reporting", "bar", "chunk_sizes", "chunked_sweep", "emit", "interactive", "open_bars",
           "report_every", "reporting"]

#: how many compiled chunks :func:`chunked_sweep` splits a sweep into
CHUNKS = 8

#: seconds before a bar appears (calls shorter than this show nothing)
DELAY = 2.0

#: the open bars, innermost last (pushed and popped by :func:`bar`; a benchmark may push its own)
open_bars: list = []


@contextlib.contextmanager
def bar(total: int, desc: str, enabled: bool = True, unit: str = "step"):
    """Open a tqdm auto bar that :class:`Reporting` kernels update; completes it on exit."""
    if not enabled or not interactive():
        yield None
        return
    from tqdm.auto import tqdm

    b = tqdm(total=total, desc=desc, unit=unit, delay=DELAY, leave=False)
    open_bars.append(b)
    try:
        yield b
    finally:
        open_bars.remove(b)
        b.close()


def interactive() -> bool:
    """Whether someone watches: a terminal on stderr, or a Jupyter kernel (logs and captured
    output get no bars)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def emit(step) -> None:
    """Host side of the callback: move the innermost open bar to ``step``."""
    try:
        b = open_bars[-1]
    except IndexError:  # no bar open (or it just closed)
        return
    done = int(np.max(np.asarray(step)))  # under vmap the callback sees one step per run
    if done > b.n:
        b.update(min(done, b.total or done) - b.n)


def report_every(total_steps: int, updates: int = 25) -> int:
    """Report every this many steps: about ``updates`` callbacks per sweep."""
    return max(1, int(total_steps) // updates)


@dataclasses.dataclass(frozen=True)
class Reporting:
    """``kernel`` followed, every ``every`` steps, by a host callback with the step number.

    Delegates ``move`` and ``check`` to the wrapped kernel (the sweep and :func:`smc.run`
    read them)."""

    kernel: Callable
    every: int = 1

    @property
    def move(self):
        return getattr(self.kernel, "move", None)

    def __call__(self, key, state, program):
        state, info = self.kernel(key, state, program)
        jax.lax.cond(state.step % self.every == 0, lambda s: jax.debug.callback(emit, s), lambda s: None,
                     state.step)
        return state, info


def reporting(kernel: Callable, total_steps: int) -> Reporting:
    """``kernel`` wrapped to report about 25 times over a sweep of ``total_steps`` steps."""
    return Reporting(kernel, report_every(total_steps))


def chunk_sizes(total: int, chunks: int = CHUNKS) -> list[int]:
    """Sizes of at most ``chunks`` consecutive pieces of ``total`` steps (at most two distinct
    sizes, so at most two compiled programs)."""
    size = -(-int(total) // max(1, int(chunks)))
    return [size] * (total // size) + ([total % size] if total % size else [])


def chunked_sweep(sweep_keys, kernel, program, state, key, steps: int, chunks: int = CHUNKS, desc: str = "SMC"):
    """``sweep(kernel, program, state, key)`` in ``chunks`` compiled pieces with a bar.

    sweep_keys: a jitted ``smc.sweep_keys`` (kernel static). The step keys are
    ``jax.random.split(key, steps)``, as in ``smc.sweep``, so the result is the same; once
    every particle has finished (and the kernel has no move, which could un-finish them) the
    remaining steps would be idle and are skipped. Returns (state, infos stacked over the
    steps run)."""
    import jax.numpy as jnp

    keys = jax.random.split(key, steps)
    has_move = getattr(kernel, "move", None) is not None
    infos, start = [], 0
    with bar(steps, desc) as b:
        for size in chunk_sizes(steps, chunks):
            state, info = sweep_keys(kernel, program, state, keys[start:start + size])
            infos.append(info)
            start += size
            done = int(state.step)  # waits for the chunk
            if b is not None and done > b.n:
                b.update(done - b.n)
            finished = bool(jnp.all(state.particles.done)) or not bool(jnp.isfinite(jax.nn.logsumexp(state.logw)))
            if finished and not has_move:
                break
    return state, jax.tree.map(lambda *parts: jnp.concatenate(parts), *infos)
