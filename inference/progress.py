"""Progress bars for long calls, including one compiled sweep reporting from inside.

A compiled ``lax.scan`` cannot hold a Python progress bar, so :class:`Reporting` wraps an SMC
kernel and, every ``every`` steps, sends the step number to the host with
``jax.debug.callback`` (unordered: the device does not wait for the host). The host side is
the bar opened by :func:`bar`; bars form a stack pushed and popped only by that context
manager (the one piece of module state, scoped like numpyro's handler stack), so the wrapper
itself holds no bar and stays hashable: equal wrappers share one compiled sweep. A callback
that arrives while no bar is open does nothing.

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

__all__ = ["DELAY", "Reporting", "bar", "emit", "interactive", "open_bars", "report_every", "reporting"]

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
    if getattr(sys.stderr, "isatty", lambda: False)():
        return True
    ipython = sys.modules.get("IPython")  # a Jupyter kernel's shell, not merely an imported ipykernel
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def emit(step) -> None:
    """Host side of the callback: move the innermost open bar to ``step``."""
    try:
        b = open_bars[-1]
    except IndexError:  # no bar open (or it just closed)
        return
    done = int(np.max(np.asarray(step)))  # under vmap the callback sees one step per run
    if done > b.n:
        b.update(min(done, b.total or done) - b.n)


def report_every(total_steps: int, updates: int = 8) -> int:
    """Report every this many steps: about ``updates`` callbacks per sweep. A callback inside
    the SMC sweep costs about 1.5 ms on a 2-core CPU (benchmarks/progress.py: it makes the
    device wait for the host), so 8 per sweep keep the cost under 2% of a one-second sweep."""
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
    """``kernel`` wrapped to report about 8 times over a sweep of ``total_steps`` steps."""
    return Reporting(kernel, report_every(total_steps))
