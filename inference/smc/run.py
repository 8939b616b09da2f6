"""``run``: build (or take) an SMC kernel, jit the sweep, return an :class:`SMCResult`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from genppl import distributed

from genppl.models.interface import InputError, NonFiniteLogitsError, as_key, check_positive_int, particle_bytes
from genppl.models.batch import Batch
from genppl.ppl.batch import as_program, host_slice, prompt_keys, unstack
from genppl.ppl.program import Program

from genppl.models import progress as progress_lib
from .islands import island_resampling
from .kernel import SMCKernel, build_kernel, init, sweep, sweep_steps
from .results import SMCResult
from .steer import SteerKernel

# the kernel is a hashable configuration; the program (LM weights, prompt, potential tables)
# and the state are traced, so new prompts and equal-shaped potentials reuse the program
sweep_jit = jax.jit(sweep, static_argnums=0)


def run(program: Program, n: int, key=0, *, kernel=None, progress: bool = True, mesh=None,
        resampling: str = "global", **kernel_options) -> SMCResult:
    """Run SMC on ``program`` with ``n`` particles until every particle has finished.

    kernel: a kernel from :func:`build_kernel` or :func:`steer.build_kernel` (or any hashable
    ``(key, state, program) -> (state, info)``); without one, ``kernel_options``
    (``resampling_fn``, ``proposal``, ``ess_threshold``, ``move``) build it. key: a PRNG key
    or an int seed. progress: a progress bar (tqdm auto) when stderr is a terminal or a
    notebook, shown only when the call lasts over two seconds: the sweep then runs as a few
    chunks of one compiled program (:func:`sweep_in_chunks`, :mod:`inference.progress`),
    with the same result; a batch of prompts shows none.
    The result keeps what :func:`inference.records.save` needs to write a replayable record.

    Many devices: ``mesh`` (what :func:`genppl.distributed.as_mesh` takes: None, a number of
    devices, or a ``(data, model)`` :class:`jax.sharding.Mesh`) splits the particles over the
    mesh's data axis (``n`` a multiple of its size) and replicates the weights
    (:mod:`genppl.distributed.placement`). ``resampling="global"`` (the default) draws every
    ancestor from all n weights, exactly as on one device: same key, same tokens, same log Z;
    particles whose ancestor lives on another device are copied across (counted in
    ``result.layout``). ``resampling="island"`` makes each device's n / D particles an
    independent SMC (:mod:`.islands`; log Z_hat = log-mean-exp of the islands' estimates, still
    unbiased): nothing crosses devices, at the price of more variance. A batch of prompts is
    split over its prompt axis instead (B a multiple of D); resampling then never crosses
    devices, so both settings run the same global-within-prompt resampling.

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
    mesh, kernel = on_mesh(mesh, resampling, kernel, program, n)
    what = describe(kernel)
    if program.num_prompts is not None:
        return run_prompts(kernel, program, n, key, mesh)
    program = program.replace(lm=distributed.place_model(program.lm, mesh))
    start = init(program, n)
    if mesh is not None:  # particles split over the data axis, weights vector replicated
        start = start.replace(particles=distributed.place(start.particles, mesh),
                              logw=distributed.replicate(start.logw, mesh), step=distributed.replicate(start.step, mesh))
    per_particle = particle_bytes(start.particles) // n  # read before a chunked sweep donates start
    # a bar only when someone watches (a terminal or a notebook); elsewhere one plain sweep
    with distributed.on(mesh):
        if progress and progress_lib.interactive():
            state, infos = sweep_in_chunks(kernel, program, start, key)
        else:
            state, infos = sweep_jit(kernel, program, start, key)
    if distributed.spans_processes(mesh):  # other processes hold some particles: gather them (multi-process)
        state, infos = distributed.to_host((state, infos))
    check_faults(infos, what)
    result = SMCResult.from_run(program, state, infos, method=what)
    result.layout = distributed.layout_of(mesh, state, "particles", resampling, result.ancestors,
                                          per_particle, result.resampled)
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


def run_prompts(kernel, program: Program, n: int, key, mesh=None) -> Batch:
    """The batch branch of :func:`run`: every prompt's particles in one compiled program,
    prompt b with key ``jax.random.split(key, B)[b]``; one :class:`SMCResult` per prompt.
    On a mesh the prompt axis is split over its data axis."""
    lm, num = program.lm, program.num_prompts
    padded, capacity = lm.buffer_sizes(program.prompt.shape[1], program.max_new_tokens)
    lm.check_memory(num * n, capacity, padded)
    if mesh is not None:
        singles = unstack(program)  # the originals, kept for decoding and records
        program = distributed.place(program.replace(lm=None), mesh).replace(lm=distributed.place_model(lm, mesh))
        program.programs = tuple(singles)
    with distributed.on(mesh):
        state, infos = init_and_sweep_jit(kernel, program, n, key)
    layout = distributed.layout_of(mesh, state, "prompts", "global (within each prompt)")
    particles = state.particles
    # only what the results read comes back to the host (not the LM cache)
    state = state.replace(particles=particles.replace(lm=particles.lm.replace(cache=None)))
    state, infos = (distributed.to_host if mesh is not None else jax.device_get)((state, infos))
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
        result.layout = layout
        results.append(result)
    return results


def on_mesh(mesh, resampling: str, kernel, program: Program, n: int):
    """Check ``mesh=`` and ``resampling=`` of a run; returns (the mesh or None, the kernel,
    with island resampling over the data axis when asked for on one prompt)."""
    mesh = distributed.as_mesh(mesh)
    if resampling not in ("global", "island"):
        raise InputError(f"resampling must be 'global' (exact, the one-device run) or 'island' (each device "
                         f"an independent SMC), got {resampling!r}")
    if mesh is None:
        return None, kernel
    if program.num_prompts is not None:
        distributed.check_divides(program.num_prompts, mesh, "the number of prompts")
        return mesh, kernel
    distributed.check_divides(n, mesh)
    d = distributed.data_size(mesh)
    if resampling == "island" and d > 1:
        if not isinstance(kernel, SMCKernel):
            raise InputError(f"resampling='island' needs a kernel from smc.build_kernel (it resamples within each "
                             f"device's particles); {describe(kernel)} selects over all of them: use "
                             "resampling='global'")
        kernel = dataclasses.replace(kernel, resampling_fn=island_resampling(kernel.resampling_fn, d))
    return mesh, kernel


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
