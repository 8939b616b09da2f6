"""``run``: build (or take) an SMC kernel, jit the sweep, return an :class:`SMCResult`."""

from __future__ import annotations

import jax
import numpy as np

from genppl.models.interface import InputError, NonFiniteLogitsError, as_key, check_positive_int
from genppl.ppl.program import Program

from .. import progress as progress_lib
from .kernel import SMCKernel, build_kernel, init, sweep
from .results import SMCResult
from .steer import SteerKernel

# the kernel is a hashable configuration; the program (LM weights, prompt, potential tables)
# and the state are traced, so new prompts and equal-shaped potentials reuse the program
sweep_jit = jax.jit(sweep, static_argnums=0)


def run(program: Program, n: int, key=0, *, kernel=None, progress: bool = True, **kernel_options) -> SMCResult:
    """Run SMC on ``program`` with ``n`` particles until every particle has finished.

    kernel: a kernel from :func:`build_kernel` or :func:`steer.build_kernel` (or any hashable
    ``(key, state, program) -> (state, info)``); without one, ``kernel_options``
    (``resampling_fn``, ``proposal``, ``ess_threshold``, ``move``) build it. key: a PRNG key
    or an int seed. progress: a progress bar (tqdm auto) fed from inside the compiled sweep
    (:mod:`inference.progress`) when stderr is a terminal or a notebook; it appears only when
    the call lasts over two seconds.
    The result keeps what :func:`inference.records.save` needs to write a replayable record.

    >>> import jax
    >>> from genppl import models, ppl, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
    >>> result = inference.smc.run(program, 16, jax.random.key(1), resampling_fn=inference.smc.stratified)
    >>> bool(result.log_z <= 0.0)
    True
    """
    if not isinstance(program, Program):
        raise InputError(f"smc.run needs a ppl.Program, got {type(program).__name__}")
    check_positive_int(n, "n (the number of particles)")
    key = as_key(key)
    if kernel is None:
        kernel = build_kernel(**kernel_options)
    elif kernel_options:
        raise InputError(f"give either kernel= or kernel options, not both (got {sorted(kernel_options)})")
    if not callable(kernel):
        raise InputError(f"kernel must be a function (key, state, program) -> (state, info), got {kernel!r}")
    for part in (kernel, getattr(kernel, "move", None)):  # a kernel or move may refuse a program
        if hasattr(part, "check"):
            part.check(program)
    what = describe(kernel)
    steps = program.max_new_tokens
    # report only when someone watches (a terminal or a notebook): elsewhere the compiled
    # sweep is the plain one, without callbacks
    report = bool(progress) and progress_lib.interactive()
    with progress_lib.bar(steps, "SMC", enabled=report):
        state, infos = sweep_jit(progress_lib.reporting(kernel, steps) if report else kernel, program,
                                 init(program, n), key)
        if report:  # keep the bar open until the sweep and its callbacks are done
            jax.block_until_ready((state, infos))
            jax.effects_barrier()
    check_faults(infos, what)
    result = SMCResult.from_run(program, state, infos, method=what)
    result.provenance = {"function": "genppl.inference.smc.run", "n": n, "key": key, "kernel": what,
                         "program": program}
    return result


def describe(kernel) -> str:
    if isinstance(kernel, SteerKernel):
        return "SMC-steer (without-replacement selection)"
    if isinstance(kernel, SMCKernel):
        name = getattr(kernel.resampling_fn, "__name__", repr(kernel.resampling_fn))
        text = f"SMC ({name} resampling at ESS < {kernel.ess_threshold:g} N, {type(kernel.proposal).__name__} proposal)"
        return text + (f" with {kernel.move!r}" if kernel.move is not None else "")
    return f"SMC ({kernel!r})"


def check_faults(infos, who: str) -> None:
    """Raise :class:`models.NonFiniteLogitsError` if the model gave any particle NaN or
    infinite logits during the sweep (reported as such, never as particles ruled out by the
    constraints): the first SMC step where it happened, and the particles hit there."""
    fault = np.asarray(infos.fault)  # [steps, n]
    hit = (fault >= 0).any(1)
    if hit.any():
        NonFiniteLogitsError.check(who, fault[int(np.argmax(hit))])
