"""``run``: build (or take) an SMC kernel, jit the sweep, return an :class:`SMCResult`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError, NonFiniteLogitsError, as_key, check_positive_int
from genppl.models.batch import Batch
from genppl.ppl.batch import as_program, host_slice, prompt_keys, unstack
from genppl.ppl.program import Program

from genppl.models import progress as progress_lib
from .kernel import SMCKernel, build_kernel, init, sweep, sweep_steps
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
    or an int seed. progress: a progress bar (tqdm auto) when stderr is a terminal or a
    notebook, shown only when the call lasts over two seconds: the sweep then runs as a few
    chunks of one compiled program (:func:`sweep_in_chunks`, :mod:`inference.progress`),
    with the same result; a batch of prompts shows none.
    The result keeps what :func:`inference.records.save` needs to write a replayable record.

    Many prompts: ``program`` may be a list of programs or one batched program
    (:func:`ppl.stack`); they run in ONE compiled program, ``n`` particles per prompt,
    resampled within their prompt's group, and the result is a :class:`models.batch.Batch`
    of one :class:`SMCResult` per prompt (``results.log_z``: one log Z per prompt). Prompt b
    uses the key ``jax.random.split(key, B)[b]``, so ``results[b]`` equals
    ``run(programs[b], n, jax.random.split(key, B)[b])`` (same tokens; weights up to float
    rounding).

    >>> import jax
    >>> from genppl import models, ppl, inference
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    >>> program = ppl.Program(lm, [1], max_new_tokens=3, potential=ppl.BannedTokens([2]))
    >>> result = inference.smc.run(program, 16, jax.random.key(1), resampling_fn=inference.smc.stratified)
    >>> bool(result.log_z <= 0.0)
    True
    """
    program = as_program(program)
    if not isinstance(program, Program):
        raise InputError(f"smc.run needs a ppl.Program (or a list of them), got {type(program).__name__}")
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
            for one in unstack(program):
                part.check(one)
    what = describe(kernel)
    if program.num_prompts is not None:
        return run_prompts(kernel, program, n, key)
    # a bar only when someone watches (a terminal or a notebook); elsewhere one plain sweep
    if progress and progress_lib.interactive():
        state, infos = sweep_in_chunks(kernel, program, init(program, n), key)
    else:
        state, infos = sweep_jit(kernel, program, init(program, n), key)
    check_faults(infos, what)
    result = SMCResult.from_run(program, state, infos, method=what)
    result.provenance = {"function": "genppl.inference.smc.run", "n": n, "key": key, "kernel": what,
                         "program": program}
    return result


def sweep_chunk(kernel, program: Program, state, keys, start, size: int):
    """Steps ``start .. start + size - 1`` of :func:`sweep` with its step keys ``keys`` [T]
    (steps past T are idle padding): one slice of a sweep under a progress bar."""
    steps = keys.shape[0]
    index = start + jnp.arange(size)
    return sweep_steps(kernel, program, state, keys[jnp.minimum(index, steps - 1)], index < steps)


# static: the kernel and the slice length; the state is donated (updated in place)
sweep_chunk_jit = jax.jit(sweep_chunk, static_argnums=(0, 5), donate_argnums=2)


def sweep_in_chunks(kernel, program: Program, state, key):
    """:func:`sweep` under a progress bar: the steps in :data:`progress.CHUNKS` slices of one
    compiled program (:func:`progress.run_in_chunks`); the same keys, so the same result."""
    steps = program.max_new_tokens
    stops = progress_lib.chunk_stops(steps)
    size = stops[0]  # every slice this long (the last one padded): one program
    keys = jax.random.split(key, steps)  # the sweep's own step keys
    starts = dict(zip(stops, [0] + stops))  # each slice starts where the last one stopped

    def advance(state, stop):
        return sweep_chunk_jit(kernel, program, state, keys, np.int32(starts[int(stop)]), size)

    state, infos = progress_lib.run_in_chunks(advance, state, steps, "SMC")
    return state, jax.tree.map(lambda *parts: jnp.concatenate(parts)[:steps], *infos)


def init_and_sweep(kernel, program: Program, n: int, key):
    """:func:`init` and :func:`sweep` in one traceable function (a batch's whole run)."""
    return sweep(kernel, program, init(program, n), key)


# a batch of prompts: prefill and sweep in one compiled program (static: the kernel and n)
init_and_sweep_jit = jax.jit(init_and_sweep, static_argnums=(0, 2))


def run_prompts(kernel, program: Program, n: int, key) -> Batch:
    """The batch branch of :func:`run`: every prompt's particles in one compiled program,
    prompt b with key ``jax.random.split(key, B)[b]``; one :class:`SMCResult` per prompt."""
    lm, num = program.lm, program.num_prompts
    padded, capacity = lm.buffer_sizes(program.prompt.shape[1], program.max_new_tokens)
    lm.check_memory(num * n, capacity, padded)
    state, infos = init_and_sweep_jit(kernel, program, n, key)
    particles = state.particles
    # only what the results read comes back to the host (not the LM cache)
    state = state.replace(particles=particles.replace(lm=particles.lm.replace(cache=None)))
    state, infos = jax.device_get((state, infos))
    singles, method = unstack(program), describe(kernel)
    keys = prompt_keys(key, num)
    results = Batch()
    for b in range(num):
        state_b, infos_b = host_slice(state, b), host_slice(infos, b)
        check_faults(infos_b, f"{method} (prompt {b} of the batch)")
        result = SMCResult.from_run(singles[b], state_b, infos_b, method=method)
        # each prompt's record replays as its own one-prompt run, with its own key
        result.provenance = {"function": "genppl.inference.smc.run", "n": n, "key": keys[b], "kernel": method,
                             "program": singles[b]}
        results.append(result)
    return results


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
