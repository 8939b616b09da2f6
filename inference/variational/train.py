"""Fitting variational objectives with optax: a jitted step, a host loop with a progress bar,
periodic evaluation, checkpoints, and a clear stop when training diverges.

:class:`Trainer` compiles one step ``(state, program, batch) -> (state, loss, metrics)``
(blackjax style: :meth:`Trainer.init` then :meth:`Trainer.step`); :meth:`Trainer.fit` runs it
for a number of steps. A checkpoint (``.npz``: parameters, optimiser state, step count and
PRNG key) is written atomically every ``checkpoint_every`` steps and at the end; a run
restarted with the same checkpoint path continues where it stopped and, because the key is
saved too, produces the same losses as an uninterrupted run. When the loss, a gradient or a
parameter stops being finite, :class:`TrainingError` says so and the last good checkpoint
is kept (it is never overwritten by a bad state).

>>> import jax, optax
>>> from genppl import models, ppl
>>> from genppl.inference import variational
>>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
>>> program = ppl.Program(lm, [1], 2, alpha=2.0)
>>> guide = variational.Guide(proposal=models.TabularAdapter(lm))
>>> trainer = variational.Trainer(variational.elbo(guide, 4), optax.adam(0.05), program)
>>> state, history = trainer.fit(trainer.init(jax.random.key(0)), steps=3, progress=False)
>>> int(state.step), len(history)
(3, 3)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from genppl import distributed
from genppl.models.interface import InputError, as_key, check_positive_int, read_npz

from genppl.viz import History

from .bounds import bounds
from .objectives import Objective

__all__ = ["Trainer", "TrainState", "TrainingError", "all_finite", "fit", "load_guide_params", "read_checkpoint"]


class TrainingError(InputError):
    """Training diverged (NaN or inf); the message names the step and the kept checkpoint."""


@struct.dataclass
class TrainState:
    """params, optax state, number of steps taken, and the PRNG key of the next step."""

    params: object
    opt_state: object
    step: jax.Array
    key: jax.Array


def all_finite(tree) -> jax.Array:
    """Whether every floating leaf of ``tree`` is finite (a traced bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class Trainer:
    """Fit ``objective`` on ``program`` with an optax optimiser.

    batch: weighted target samples ``{"tokens": [B, L], "log_weights": [B]}`` for objectives
    whose source is None (e.g. :func:`inference.variational.exact_batch` for the whole support
    of a tabular program; its exact ``log_z`` then also gives evaluations their EUBO).

    The step ``(state, program, batch) -> (state, loss, metrics, finite)`` is jitted once per
    trainer, with the program and the batch as traced arguments (no constants baked in).

    mesh (see :mod:`genppl.distributed`): the objective's samples (its ``num_samples``, a
    multiple of the data axis size) are split over the mesh's data axis inside every step,
    the weights and the parameters replicated (their gradients are summed across devices by
    XLA); the same losses and updates as on one device, up to float rounding of the sums.
    """

    def __init__(self, objective: Objective, optimizer, program, batch=None, mesh=None):
        if not isinstance(objective, Objective):
            raise InputError(f"objective must be an inference.variational.Objective, got "
                             f"{type(objective).__name__}")
        if not isinstance(optimizer, optax.GradientTransformation):
            raise InputError(f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)), got "
                             f"{type(optimizer).__name__}")
        if batch is not None and not isinstance(batch, dict):
            raise InputError("batch must be None or a dict of weighted samples {'tokens', 'log_weights'} "
                             f"(e.g. inference.variational.exact_batch(program)), got {type(batch).__name__}")
        objective.validate(program, batch)
        self.mesh = distributed.as_mesh(mesh)
        if self.mesh is not None:
            distributed.check_divides(objective.num_samples, self.mesh, "the objective's num_samples")
            program = program.replace(lm=distributed.place_model(program.lm, self.mesh))
        self.exact = batch if isinstance(batch, dict) and "log_z" in batch else None
        self.objective, self.optimizer, self.program = objective, optimizer, program
        self.batch = None if batch is None else {"tokens": jnp.asarray(batch["tokens"], jnp.int32),
                                                  "log_weights": jnp.asarray(batch["log_weights"], jnp.float32)}

        def step(state: TrainState, program, batch):
            key, sub = jax.random.split(state.key)
            grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
            (loss, metrics), grads = grad_fn(state.params, sub, program, batch)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(params)
            return TrainState(params, opt_state, state.step + 1, key), loss, metrics, finite

        self._step = jax.jit(step)

    def init(self, key, params=None) -> TrainState:
        """A fresh state (``params`` default: ``objective.init(key)``; checked if given)."""
        k_init, k_run = jax.random.split(as_key(key))
        if params is None:
            params = self.objective.init(k_init)
        else:
            self.objective.check(params)
            params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
        state = TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32), k_run)
        return distributed.replicate(state, self.mesh)

    def step(self, state: TrainState):
        """One optimiser step: (state, loss, metrics, finite)."""
        with distributed.on(self.mesh):
            return self._step(state, self.program, self.batch)

    def fit(self, state: TrainState, steps: int, *, checkpoint=None, checkpoint_every: int = 50,
            eval_every: int = 0, eval_particles: int = 32, eval_runs: int = 8, progress: bool = True):
        """Run until ``state.step == steps``; returns (state, history).

        checkpoint: a ``.npz`` path; if it exists the run resumes from it. history: one dict
        per step with ``step``, ``loss`` and the objective's metrics (floats); evaluations
        (every ``eval_every`` steps: :func:`inference.variational.bounds` with
        ``eval_particles`` particles over ``eval_runs`` SMC runs) are added under ``"eval"``.
        The history is a :class:`genppl.viz.History` (a list with a notebook display and
        ``plot()``: loss and ESS curves).
        """
        check_positive_int(steps, "steps")
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            if checkpoint.exists():
                state = self.restore(checkpoint, state)
        start = int(state.step)
        history = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, initial=start, desc=self.objective.name)
        last_saved = start if checkpoint is not None and checkpoint.exists() else None
        try:
            while int(state.step) < steps:
                t0 = time.perf_counter()
                new, loss, metrics, finite = self.step(state)
                if not bool(finite):
                    where = (f"the last good checkpoint (step {last_saved}) is kept at {checkpoint}"
                             if last_saved is not None else "no checkpoint was written")
                    raise TrainingError(
                        f"training diverged at step {int(state.step)}: the loss ({float(loss)}), a gradient or a "
                        "parameter is not finite. Lower the learning rate, clip gradients "
                        "(optax.clip_by_global_norm), or check that q never proposes sequences the target "
                        f"rules out (Guide(log_q=tilted_target)); {where}")
                state = new
                record = {"step": int(state.step), "loss": float(loss), "seconds": time.perf_counter() - t0}
                record.update({k: float(v) for k, v in metrics.items()})
                if eval_every and int(state.step) % eval_every == 0:
                    record["eval"] = self.evaluate(state, eval_particles, eval_runs)
                history.append(record)
                if checkpoint is not None and (int(state.step) % checkpoint_every == 0 or int(state.step) == steps):
                    self.save(checkpoint, state)
                    last_saved = int(state.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss):.4g}")
        finally:
            if bar is not None:
                bar.close()
        return state, History(history)

    def evaluate(self, state: TrainState, n: int = 32, runs: int = 8) -> dict:
        """Bounds and SMC diagnostics of the current guide (see :func:`bounds`)."""
        key = jax.random.fold_in(state.key, 7)
        out = bounds(self.objective.guide, state.params["guide"], self.program, key, n, runs, exact=self.exact)
        return {k: v for k, v in out.items() if v is not None}

    # ---- checkpoints --------------------------------------------------------------------
    @staticmethod
    def save(path, state: TrainState) -> None:
        """Write ``state`` to ``path`` (.npz) atomically: params, optimiser state, step, key."""
        path = Path(path)
        tree = {"params": state.params, "opt_state": state.opt_state}
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        arrays = {f"leaf_{i}": np.asarray(x) for i, (_, x) in enumerate(leaves)}
        meta = {"names": [jax.tree_util.keystr(p) for p, _ in leaves], "step": int(state.step), "format": 1}
        arrays["key"] = np.asarray(jax.random.key_data(state.key))
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def restore(path, template: TrainState) -> TrainState:
        """Read a checkpoint into the structure of ``template`` (shapes are checked)."""
        arrays = read_checkpoint(path)
        meta = arrays["meta"]
        tree = {"params": template.params, "opt_state": template.opt_state}
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        if meta["names"] != names:
            raise InputError(f"checkpoint {path} holds {len(meta['names'])} arrays named {meta['names'][:3]}..., "
                             f"but this trainer needs {len(names)} named {names[:3]}...: it was saved for another "
                             "objective, guide or optimiser")
        restored = []
        for i, (p, x) in enumerate(leaves):
            a = arrays[f"leaf_{i}"]
            if a.shape != np.shape(x):
                raise InputError(f"checkpoint {path}: {names[i]} has shape {a.shape} but this model needs "
                                 f"{np.shape(x)}: it was saved for another model or adapter size")
            restored.append(jnp.asarray(a, jnp.asarray(x).dtype))
        tree = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), restored)
        key = jax.random.wrap_key_data(jnp.asarray(arrays["key"]))
        return TrainState(tree["params"], tree["opt_state"], jnp.asarray(meta["step"], jnp.int32), key)


def read_checkpoint(path) -> dict:
    """The arrays of a training checkpoint, its ``"meta"`` record decoded; one InputError
    naming the file when it is missing, truncated or not a checkpoint."""
    fix = "train one first (Trainer.fit(..., checkpoint=PATH), examples/learned_proposal.py --save PATH)"
    arrays = read_npz(path, "checkpoint", fix, meta=True)
    meta = arrays["meta"]
    if not (isinstance(meta, dict) and isinstance(meta.get("names"), list) and "step" in meta
            and all(f"leaf_{i}" in arrays for i in range(len(meta["names"]))) and "key" in arrays):
        raise InputError(f"{path} is not a training checkpoint written by Trainer (its record is incomplete): {fix}")
    return arrays


def load_guide_params(path, guide):
    """The guide's parameters from a training checkpoint (any objective, any optimiser),
    checked against ``guide``'s structure and shapes.

    >>> guide = variational.Guide(proposal=models.LoRA(lm, rank=4))  # doctest: +SKIP
    >>> params = variational.load_guide_params("proposal.npz", guide)  # doctest: +SKIP
    """
    data = read_checkpoint(path)
    template = guide.init(jax.random.key(0))
    leaves = jax.tree_util.tree_flatten_with_path({"params": {"guide": template}})[0]
    index = {name: i for i, name in enumerate(data["meta"]["names"])}
    restored = []
    for p, x in leaves:
        name = jax.tree_util.keystr(p)
        if name not in index:
            raise InputError(f"checkpoint {path} has no {name}: it was trained for another guide "
                             "(check the adapter kind and its targets)")
        a = data[f"leaf_{index[name]}"]
        if a.shape != np.shape(x):
            raise InputError(f"checkpoint {path}: {name} has shape {a.shape} but this guide needs "
                             f"{np.shape(x)} (another model, or another LoRA rank?)")
        restored.append(jnp.asarray(a, jnp.float32))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), restored)


def fit(objective, program, optimizer, steps: int, key=0, *, params=None, batch=None, **options):
    """Train from scratch (or resume from ``checkpoint=``): returns (params, history).

    >>> import jax, optax
    >>> from genppl import models, ppl
    >>> from genppl.inference import variational
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=3, max_len=2)
    >>> program = ppl.Program(lm, [1], 2, alpha=2.0)
    >>> guide = variational.Guide(proposal=models.TabularAdapter(lm))
    >>> params, history = variational.fit(variational.trajectory_balance(guide, 8), program,
    ...                                   optax.adam(0.05), 5, progress=False)
    >>> sorted(params)
    ['guide', 'log_z']
    """
    trainer = Trainer(objective, optimizer, program, batch)
    state, history = trainer.fit(trainer.init(key, params), steps, **options)
    return state.params, history

