"""Many prompts in one call: telling a batch of prompts from one prompt, padding a batch, and
the list of per-prompt results a batch call returns.

A *batch of prompts* is a list or tuple whose items are themselves token-id sequences (lists,
tuples, 1-D arrays; lengths may differ), or a 2-D array (equal lengths). One prompt is a
flat sequence of ints. Samplers given a batch run every prompt in one compiled program and
return a :class:`Batch`: a list with one result per prompt, in order.
"""

from __future__ import annotations

import html
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .interface import InputError, LanguageModel, check_positive_int, map_particles

__all__ = ["PROMPT_AXIS", "Batch", "any_prompt", "max_over_prompts", "in_prompt_batch", "is_prompt_batch", "where_prompt", "map_prompt_states", "pad_prompts"]

#: the name of the prompt axis of a batch run (``jax.vmap(..., axis_name=PROMPT_AXIS)``)
PROMPT_AXIS = "prompts"


def any_prompt(flag):
    """``flag`` (a scalar bool) or-ed over the prompts of a batch run, when traced under the
    prompt axis (:data:`PROMPT_AXIS`); ``flag`` itself otherwise (traceable).

    Kernels use it for the predicate of a ``lax.cond`` that skips costly work (resampling's
    gather of the particles and their LM cache): under ``vmap`` a per-prompt predicate makes
    JAX run both branches, while an unbatched one keeps the ``cond``. Inside the branch the
    work is then selected per prompt (e.g. identity ancestors for the prompts that do not
    resample), so each prompt's result is exactly its one-prompt result. Loops use it for their
    ``while_loop`` predicate: a per-prompt predicate makes ``vmap`` select every carry leaf (the
    KV caches too) at every step, while an or-ed one runs the body for every prompt, which must
    leave a prompt whose own predicate is false unchanged (e.g. a step of finished particles).
    """
    flag = jnp.asarray(flag, bool)
    try:
        return jax.lax.psum(flag.astype(jnp.int32), PROMPT_AXIS) > 0
    except NameError:  # not under a batch run's prompt axis
        return flag


def max_over_prompts(value):
    """``value`` (a scalar) maxed over the prompts of a batch run under the prompt axis
    (:data:`PROMPT_AXIS`); ``value`` itself otherwise (traceable). Like :func:`any_prompt`, it
    keeps a loop bound or a ``lax.switch`` index unbatched under ``vmap``."""
    try:
        return jax.lax.pmax(value, PROMPT_AXIS)
    except NameError:  # not under a batch run's prompt axis
        return value


def in_prompt_batch() -> bool:
    """Whether the code being traced runs under a batch run's prompt axis (:data:`PROMPT_AXIS`)."""
    try:
        jax.lax.axis_index(PROMPT_AXIS)
    except NameError:
        return False
    return True


def where_prompt(flag, new, old):
    """Per prompt of a batch run, ``new`` where ``flag`` else ``old`` (pytrees); outside a batch
    run simply ``new`` (the caller only gets there when ``flag`` holds: see :func:`any_prompt`)."""
    if not in_prompt_batch():
        return new
    # the shared prompt cache is the same on both sides: no per-step select over it
    return map_particles(lambda a, b: jnp.where(flag, a, b), new, old)


def is_prompt_batch(prompt_ids) -> bool:
    """True for a batch of prompts (a list/tuple of sequences, or a 2-D array), False for one
    prompt (a flat sequence of ids, text, anything else: validated later as one prompt)."""
    if isinstance(prompt_ids, (list, tuple)):
        return bool(prompt_ids) and all(
            not isinstance(p, (str, bytes, numbers.Number)) and (isinstance(p, (list, tuple)) or np.ndim(p) == 1)
            for p in prompt_ids)
    return getattr(prompt_ids, "ndim", None) == 2


def pad_prompts(lm: LanguageModel, prompts, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate each prompt (:meth:`LanguageModel.check_prompt`) and pad them all to the
    largest prompt's bucket. Returns (tokens [B, P] int32, lengths [B] int32, P, capacity)."""
    check_positive_int(max_new_tokens, "max_new_tokens")
    if isinstance(prompts, np.ndarray) or isinstance(prompts, jax.Array):
        prompts = list(np.asarray(prompts))
    if not prompts:
        raise InputError("the batch of prompts is empty: give at least one prompt")
    checked = []
    for b, p in enumerate(prompts):
        try:
            checked.append(np.asarray(lm.check_prompt(p, max_new_tokens)))
        except InputError as err:
            raise InputError(f"prompt {b} of the batch: {err}") from None
    lengths = np.array([len(p) for p in checked], np.int32)
    padded, capacity = lm.buffer_sizes(int(lengths.max()), max_new_tokens)
    tokens = np.zeros((len(checked), padded), np.int32)
    for b, p in enumerate(checked):
        tokens[b, : len(p)] = p
    return tokens, lengths, padded, capacity


def map_prompt_states(fn, lm: LanguageModel, tokens, lengths, n: int, capacity: int, *args):
    """``fn(state_b, *args_b)`` for every prompt b of a padded batch (:func:`pad_prompts`),
    ``state_b`` the state of ``n`` particles after prompt b (:meth:`LanguageModel.initial_state`),
    as one ``jax.vmap`` over the prompt axis with the LM shared (traceable; ``n`` and
    ``capacity`` static). Every leaf of ``args`` is mapped over its leading axis."""

    def one(tokens, length, *a):
        return fn(lm.initial_state(tokens, length, n, capacity), *a)

    return jax.vmap(one, axis_name=PROMPT_AXIS)(tokens, lengths, *args)


class Batch(list):
    """The results of a many-prompt call: one result per prompt, in the order given.

    A plain list (``batch[b]``, ``len``, iteration) whose items keep their own displays; an
    attribute the items share is gathered over the prompts: ``batch.log_z`` is an array of
    one log Z per prompt, ``batch.texts`` a list of per-prompt lists.
    """

    def __getattr__(self, name):
        if name.startswith("_") or not len(self):
            raise AttributeError(name)
        values = [getattr(item, name) for item in self]
        if callable(values[0]):
            raise AttributeError(f"{name} is a method of each result: call it on batch[b]")
        if all(isinstance(v, numbers.Number) for v in values):
            return np.asarray(values)
        return values

    def __repr__(self) -> str:
        kind = type(self[0]).__name__ if len(self) else "result"
        lines = [f"Batch of {len(self)} results ({kind}), one per prompt"]
        for b, item in enumerate(self[:8]):
            head = repr(item).split("\n")[0]
            lines.append(f"  [{b}] {head}")
        if len(self) > 8:
            lines.append(f"  ... {len(self) - 8} more")
        return "\n".join(lines)

    def summary(self, top: int = 3) -> str:
        """Each prompt's summary (its own ``summary`` when it has one, else its display)."""
        parts = []
        for b, item in enumerate(self):
            text = item.summary(top) if hasattr(item, "summary") else repr(item)
            parts.append(f"prompt {b}: {text}")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        parts = []
        for b, item in enumerate(self):
            body = item._repr_html_() if hasattr(item, "_repr_html_") else f"<pre>{html.escape(repr(item))}</pre>"
            parts.append(f"<details{' open' if b == 0 else ''}><summary>prompt {b}</summary>{body}</details>")
        return f"<div><p>{html.escape(repr(self).splitlines()[0])}</p>{''.join(parts)}</div>"
