"""Progress bars for long compiled loops: the loop runs as a few dispatches of ONE compiled
program, and the host moves the bar as each one finishes.

A compiled loop cannot hold a Python progress bar, and a host callback inside it is not free
on the CPU backend: a program with a callback runs synchronously (the call blocks until the
whole loop is done) and each callback waits for the Python interpreter, which cost 4-7% of an
SMC sweep at N=64 on the bundled model, well above the 2% this module is held to
(benchmarks/progress.py). So :func:`run_in_chunks` splits the loop instead: ``advance(carry,
stop)`` is one compiled program that runs the loop until its step counter reaches ``stop``
(a traced int32, so every chunk shares the program) with the carry DONATED (its buffers are
updated in place, never copied between chunks); all chunks are queued up front, so the device
never waits for the host, and the host blocks on each chunk's small ``marker`` output in
turn and moves the bar. The loop body is the same function with or without chunks, so the
results are the same bits; a loop that ends early makes the remaining chunks return at once.

Bars are tqdm's ``auto`` bars (a widget in notebooks with ipywidgets, text in terminals) and
appear only after ``DELAY`` seconds, so short calls print nothing; nothing is drawn, and the
loop runs as one plain dispatch, when stderr is neither a terminal nor a Jupyter kernel
(logs, captured output, tests). Bars form a stack pushed and popped only by :func:`bar`
(the one piece of module state, scoped like numpyro's handler stack).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable

import jax
import numpy as np

__all__ = ["CHUNKS", "DELAY", "bar", "chunk_stops", "distinct", "interactive", "open_bars", "run_in_chunks"]

#: seconds before a bar appears (calls shorter than this show nothing)
DELAY = 2.0

#: how many dispatches a reported loop is split into (the bar moves this many times): each
#: costs about 0.25% of a 0.6 s sweep (benchmarks/progress.py: 8 chunks +1.2-2.5%, 4 chunks
#: under +1.1%), and only calls over ``DELAY`` seconds show a bar at all
CHUNKS = 4

#: the open bars, innermost last (pushed and popped by :func:`bar`; a benchmark may push its own)
open_bars: list = []


@contextlib.contextmanager
def bar(total: int, desc: str, enabled: bool = True, unit: str = "step"):
    """Open a tqdm auto bar (``None`` when disabled or nobody watches); closes it on exit."""
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
    if getattr(sys.stderr, "isatty", lambda: False)():
        return True
    ipython = sys.modules.get("IPython")  # a Jupyter kernel's shell, not merely an imported ipykernel
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def chunk_stops(total: int, chunks: int | None = None) -> list[int]:
    """The step counts at which the chunks of a ``total``-step loop end: chunks of
    ``ceil(total / chunks)`` steps, the last one shorter (fewer chunks when that does not
    divide evenly or ``total < chunks``)."""
    size = max(1, -(-total // (CHUNKS if chunks is None else chunks)))
    return [min(total, size * k) for k in range(1, -(-total // size) + 1)]


def run_in_chunks(advance: Callable, carry, total: int, desc: str, *, unit: str = "step",
                  chunks: int | None = None):
    """Run a compiled loop of at most ``total`` steps as :func:`chunk_stops` dispatches of
    ``advance(carry, stop) -> (carry, marker)`` under a bar (the caller has checked that
    someone watches). ``advance``: a jitted function that donates ``carry`` and returns a
    small ``marker`` computed by the chunk (not an input passed through), ready when the
    chunk is. The carry must not hold arrays the caller still needs (they are donated);
    :func:`distinct` copies any that it holds twice. Returns (the final carry, the list of
    markers)."""
    stops = chunk_stops(total, chunks)
    carry = distinct(carry)
    markers = []
    with bar(total, desc, unit=unit) as b:
        for stop in stops:  # queue every chunk: the device never waits for the host
            carry, marker = advance(carry, np.int32(stop))
            markers.append(marker)
        for stop, marker in zip(stops, markers):  # then follow them as they finish
            jax.block_until_ready(marker)
            if b is not None:
                b.update(stop - b.n)
    return carry, markers


def distinct(tree):
    """``tree`` with every array that already appeared in it (the same buffer under two
    leaves, e.g. two fields made from one array of zeros) replaced by a copy: a donated
    buffer may be passed only once."""
    seen = set()

    def own(x):
        if not isinstance(x, jax.Array):
            return x
        try:
            where = x.unsafe_buffer_pointer()
        except Exception:  # a sharded array: its identity will do
            where = id(x)
        if where in seen:
            return jax.numpy.copy(x)
        seen.add(where)
        return x

    return jax.tree.map(own, tree)
