"""Many prompts in one compiled call: a batch of programs stacked on a leading prompt axis.

:func:`stack` turns B programs that differ only in data — their prompts (of any lengths),
alpha, and potential or stop-string tables of equal shapes (one regex per prompt, one HMM
guide per prompt, ...) — into ONE :class:`~ppl.program.Program` whose data leaves lead with
a prompt axis of size B: every prompt is padded to the largest prompt bucket, and every
other leaf is stacked. The language model stays a single copy (its weights are shared by
every prompt). Kernels run such a program by mapping their single-prompt sweep over the
prompt axis with :func:`map_prompts` (``jax.vmap`` with the LM broadcast), so that particles
are grouped per prompt: resampling happens within a prompt's group, and each prompt gets its
own weights and its own log Z estimate. The whole batch is one compiled program.

Keys: prompt b of a batch run with key ``key`` uses ``prompt_keys(key, B)[b]``, i.e.
``jax.random.split(key, B)[b]``; a batch run therefore gives prompt b exactly what the
one-prompt run with that key gives (the same tokens; weights and log Z equal up to float
rounding, since the batch pads prompts to a common buffer).

What must match across the programs (else :class:`~models.interface.InputError` says what
to change): the program class, the LM (one object, or LMs whose leaves are the same
arrays), ``max_new_tokens``, ``step_delimiter``, the kinds and static settings of the
potentials and stop strings, and the shapes and dtypes of every table. Only values differ.

>>> import jax
>>> from genppl import models, ppl
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
>>> batch = ppl.stack([ppl.Program(lm, [1], 3), ppl.Program(lm, [2, 3], 3, alpha=2.0)])
>>> batch.num_prompts, batch.prompt.shape[0], [p.prompt_ids for p in ppl.unstack(batch)]
(2, 2, [(1,), (2, 3)])
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.batch import PROMPT_AXIS, any_prompt
from genppl.models.interface import PROMPT_BUCKET, InputError, as_key

from .program import Program

__all__ = ["PROMPT_AXIS", "any_prompt", "as_program", "map_prompts", "prompt_keys", "same_lm", "stack", "unstack"]


def same_lm(a, b) -> bool:
    """Whether two LMs are one model: the same object, or the same structure over the very
    same weight arrays (e.g. two wrappers built around one model)."""
    if a is b:
        return True
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    return tree_a == tree_b and all(x is y for x, y in zip(leaves_a, leaves_b))


def stack(programs: Sequence[Program]) -> Program:
    """One program holding the B prompts of ``programs`` on a leading axis (see the module
    docstring for what must match). Prompts are padded to the largest bucket; the LM is
    kept once. The result's :attr:`Program.num_prompts` is B; :func:`unstack` gives the
    programs back."""
    if isinstance(programs, Program):
        raise InputError("ppl.stack takes a list of programs; a single program needs no stacking")
    programs = list(programs)
    if not programs:
        raise InputError("ppl.stack needs at least one program")
    first = programs[0]
    for b, p in enumerate(programs):
        if not isinstance(p, Program):
            raise InputError(f"ppl.stack takes ppl.Program objects; item {b} is a {type(p).__name__}")
        if p.num_prompts is not None:
            raise InputError(f"item {b} is already a batch of {p.num_prompts} prompts: pass the single "
                             "programs (ppl.unstack(batch) gives them back)")
        if type(p) is not type(first):
            raise InputError(f"every program of a batch must be of one kind: item 0 is a {type(first).__name__}, "
                             f"item {b} a {type(p).__name__}")
        if not same_lm(p.lm, first.lm):
            raise InputError(f"program {b} uses a different language model from program 0: a batch shares one "
                             "copy of the weights, so build every program from the same lm")
        for name in Program.static_fields:
            if getattr(p, name) != getattr(first, name):
                raise InputError(f"program {b} has {name}={getattr(p, name)!r} but program 0 has "
                                 f"{getattr(first, name)!r}: a batch runs one compiled program, so give every "
                                 f"prompt the same {name} (or run them in separate calls)")
    width = max(int(p.prompt.shape[0]) for p in programs)
    fields = {"prompt": jnp.stack([jnp.pad(p.prompt, (0, width - p.prompt.shape[0])) for p in programs])}
    for name in type(first).data_fields:
        if name in ("lm", "prompt"):
            continue
        fields[name] = _stack_field(name, [getattr(p, name) for p in programs])
    batch = first.replace(lm=first.lm, **fields)
    batch.programs = tuple(programs)  # host-side only (dropped by jit): decoding, display, checks
    return batch


def _stack_field(name: str, values: list):
    leaves0, tree0 = jax.tree.flatten(values[0])
    for b, value in enumerate(values[1:], 1):
        leaves, tree = jax.tree.flatten(value)
        if tree != tree0:
            raise InputError(
                f"program {b}'s {name} differs from program 0's in kind or static settings ({_short(value)} "
                f"vs {_short(values[0])}): a batch needs {name}s of one kind with equal settings; only their "
                "tables (data) may differ. Run such prompts in separate calls")
        for i, (x, y) in enumerate(zip(leaves0, leaves)):
            if jnp.shape(x) != jnp.shape(y) or jnp.result_type(x) != jnp.result_type(y):
                raise InputError(
                    f"program {b}'s {name} has a table (leaf {i}) of shape {jnp.shape(y)} {jnp.result_type(y)} "
                    f"where program 0's has {jnp.shape(x)} {jnp.result_type(x)}: tables stacked in one batch "
                    "must have equal shapes (e.g. regexes or stop strings whose automata have the same number "
                    "of states). Run such prompts in separate calls")
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *values)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def unstack(program: Program) -> list[Program]:
    """The single programs of a batch (the originals when ``program`` came from :func:`stack`,
    else slices of its leaves); ``[program]`` for a single program."""
    if program.num_prompts is None:
        return [program]
    if getattr(program, "programs", None) is not None:
        return list(program.programs)
    lm = program.lm
    rest = program.replace(lm=None)
    out = []
    for b in range(program.num_prompts):
        one = jax.tree.map(lambda x: x[b], rest).replace(lm=lm)
        bucket = -(-int(one.prompt_length) // PROMPT_BUCKET) * PROMPT_BUCKET
        out.append(one.replace(prompt=one.prompt[:max(bucket, PROMPT_BUCKET)]))
    return out


def as_program(program) -> Program:
    """A :class:`Program` from a program or a list/tuple of programs (stacked with
    :func:`stack`); anything else is returned unchanged for the caller to refuse."""
    if isinstance(program, (list, tuple)):
        return stack(program)
    return program


def prompt_keys(key, num_prompts: int) -> jax.Array:
    """The key of each prompt of a batch run with ``key``: ``jax.random.split(key, B)``
    (prompt b uses entry b, so its one-prompt run with that key gives the same result)."""
    return jax.random.split(as_key(key), num_prompts)


def map_prompts(fn: Callable, program: Program, *args):
    """``fn(program_b, *args_b)`` for every prompt b of a batched ``program``, as one
    ``jax.vmap`` over the prompt axis (traceable). The LM is shared (not mapped); every
    other leaf of the program and every leaf of ``args`` is mapped over its leading axis,
    named :data:`PROMPT_AXIS` (see :func:`any_prompt`). Outputs lead with the prompt axis."""
    lm = program.lm

    def one(rest, *a):
        return fn(rest.replace(lm=lm), *a)

    return jax.vmap(one, axis_name=PROMPT_AXIS)(program.replace(lm=None), *args)


def host_slice(tree, b: int):
    """Entry ``b`` of the leading axis of every leaf, as host (numpy) arrays."""
    return jax.tree.map(lambda x: np.asarray(x)[b], tree)


__all__ += ["host_slice"]
