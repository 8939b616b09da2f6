"""Count XLA compilations from outside the library, with JAX's public monitoring API.

JAX records the event ``/jax/core/compile/backend_compile_duration`` (with the compiled
function's name, e.g. ``"jit(generate)"``) each time it hands a program to the XLA compiler,
i.e. on every miss of its in-memory compilation cache (a hit in the persistent on-disk cache
still counts: JAX asks for the executable). Nothing in the library counts anything.

>>> import jax, jax.numpy as jnp
>>> from tests.compile_count import count_compiles
>>> f = jax.jit(lambda x: x + 1)
>>> with count_compiles() as compiles:
...     _ = f(jnp.ones(3)); _ = f(jnp.zeros(3)); _ = f(jnp.ones(4))
>>> compiles.count_of(f)
2
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import jax

#: the event JAX (0.4.x .. 0.10) records around each XLA compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT)
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass
class CompileLog:
    """The compilations seen inside one ``count_compiles()`` block.

    names: the compiled functions' names in order (``"jit(name)"``; eager ops appear as
    ``"jit(add)"`` etc.). ``count``: all of them; ``count_of(fn_or_name)``: those of one function.
    """

    names: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.names)

    def count_of(self, fn) -> int:
        """Compilations of ``fn``: a jitted function, a Python function, or its name."""
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
        return sum(n in (name, f"jit({name})") for n in self.names)

    def __repr__(self) -> str:
        return f"CompileLog(count={self.count}, seconds={self.seconds:.2f}, names={self.names})"


_lock = threading.Lock()


@contextlib.contextmanager
def count_compiles():
    """Yield a :class:`CompileLog` that records every XLA compilation inside the block.

    Registers a listener with ``jax.monitoring.register_event_duration_secs_listener`` and
    removes it on exit (``jax.monitoring.unregister_event_duration_listener``), so blocks can
    nest and nothing stays registered.
    """
    log = CompileLog()

    def listener(event: str, duration_secs: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            with _lock:
                log.names.append(str(kwargs.get("fun_name", "?")))
                log.seconds += float(duration_secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield log
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
