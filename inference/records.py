"""Run records: save a result with everything needed to rerun it, load it, replay it.

A record (:class:`RunRecord`, one ``.npz`` file) holds

* ``config``: what produced the result — ``function`` (``genppl.inference.smc.run`` or
  ``genppl.models.sample``) with its arguments (``n``, the kernel's description, sampling
  options), plus any user configuration; or a ``recipe``: ``"module:function"`` and JSON
  ``args`` from which the run can be rebuilt without the caller's help (the ``genppl``
  command writes those, see ``--record``);
* ``key``: the PRNG key's data and implementation;
* ``versions``: genppl, jax, jaxlib, numpy, flax, Python and the JAX backend;
* ``checkpoint_hash``: SHA-256 of the language model's weights (every array leaf: dtype,
  shape, bytes), and ``program_hash``: the same over the program's other leaves (prompt,
  potential tables);
* the output: texts, token ids, final log-weights and log Z, and per step the ancestors,
  log-weights, ESS and resampling flags (whatever the result has).

:func:`replay` refuses a record made with other package versions, another backend or
another checkpoint (the message names each difference), reruns it with the recorded key and
checks that the output is bit-identical (tokens, weights, log Z, genealogy), raising
:class:`ReplayMismatch` naming the first field that differs. Bit-identity holds on the same
machine with the same versions; XLA may reorder floating-point sums elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import platform
from pathlib import Path

import jax
import numpy as np

from genppl.models.interface import InputError

__all__ = ["RecordError", "ReplayMismatch", "RunRecord", "checkpoint_hash", "load", "record_of", "replay",
           "save", "tree_hash", "versions"]

FORMAT = 1
ARRAYS = ("log_weights", "ess", "resampled", "ancestors", "step_log_weights", "log_p", "eos", "log_probs",
          "num_tokens", "finished", "trace_accepted", "trace_log_target")


class RecordError(InputError):
    """A record that cannot be read or replayed here (other versions, checkpoint, program)."""


class ReplayMismatch(RuntimeError):
    """A replay whose output differs from the record; the message names the field."""


def versions() -> dict:
    """Versions that decide bit-identical output: packages, Python, the JAX backend."""
    import flax
    import jaxlib

    import genppl

    return {"genppl": genppl.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "flax": flax.__version__, "python": platform.python_version(),
            "backend": jax.default_backend()}


def tree_hash(tree) -> str:
    """SHA-256 of a pytree's array leaves (dtype, shape and bytes of each, in order)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def checkpoint_hash(lm) -> str:
    """Hash of a language model's weights (:func:`tree_hash` of the LM)."""
    return tree_hash(lm)


def program_hash(program) -> str:
    """Hash of a program's data other than the LM: prompt, potential tables, alpha, stop tables."""
    lm_leaves = {id(x) for x in jax.tree.leaves(program.lm)}
    rest = [x for x in jax.tree.leaves(program) if id(x) not in lm_leaves]
    return tree_hash((rest, np.int64(program.max_new_tokens)))


@dataclasses.dataclass
class RunRecord:
    """A saved run (see the module docstring). ``arrays``: name -> array; ``log_z``: float
    or None (samplers without an estimate)."""

    kind: str
    config: dict
    key: list
    key_impl: str
    versions: dict
    checkpoint_hash: str
    program_hash: str | None
    texts: list
    token_ids: list
    log_z: float | None
    arrays: dict

    @property
    def prng_key(self):
        return jax.random.wrap_key_data(np.asarray(self.key, np.uint32), impl=self.key_impl)

    def meta(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arrays"}
        out["format"] = FORMAT
        return out

    def __repr__(self) -> str:
        what = self.config.get("recipe") or self.config.get("function")
        return (f"<RunRecord {self.kind} of {what}: {len(self.texts)} texts, log Z {self.log_z}, "
                f"checkpoint {self.checkpoint_hash[:12]}, genppl {self.versions.get('genppl')}>")


def key_fields(key) -> tuple[list, str]:
    from genppl.models.interface import as_key

    key = as_key(key)
    return [int(x) for x in np.asarray(jax.random.key_data(key)).ravel()], str(jax.random.key_impl(key))


def plain(value):
    """JSON-able copy of a configuration value (tuples become lists, numpy scalars Python)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def record_of(result, config: dict | None = None, *, key=None, lm=None) -> RunRecord:
    """The record of a result whose ``provenance`` says how it was made (results of
    ``smc.run``, the kernels built on it, ``models.sample``, ``mcmc.power_mcmc``); ``key``
    and ``lm`` give or override the provenance's (a recipe record needs nothing else)."""
    prov = dict(getattr(result, "provenance", None) or {})
    if key is not None:
        prov["key"] = key
    if lm is not None:
        prov.pop("program", None)
        prov["lm"] = lm
    if "key" not in prov or ("program" not in prov and "lm" not in prov):
        raise RecordError(f"this {type(result).__name__} does not say how it was made (no provenance): "
                          "save results returned by genppl's run functions, or give key= and lm=")
    program, lm = prov.get("program"), prov.get("lm")
    lm = program.lm if program is not None else lm
    cfg = {k: plain(v) for k, v in prov.items() if k not in ("program", "lm", "key")}
    if config:
        cfg.update(plain(config))
    key, impl = key_fields(prov["key"])
    arrays = {}
    for name in ARRAYS:
        value = getattr(result, name, None)
        if value is not None:
            arrays[name] = np.asarray(value)
    token_ids = result.sequences() if hasattr(result, "sequences") else result.token_ids
    log_z = getattr(result, "log_z", None)
    return RunRecord(kind=type(result).__name__, config=cfg, key=key, key_impl=impl, versions=versions(),
                     checkpoint_hash=checkpoint_hash(lm), program_hash=None if program is None else program_hash(program),
                     texts=list(result.texts), token_ids=[list(map(int, t)) for t in token_ids],
                     log_z=None if log_z is None else float(log_z), arrays=arrays)


def save(result, path, config: dict | None = None, *, key=None, lm=None) -> RunRecord:
    """Write the record of ``result`` (or a :class:`RunRecord`) to ``path`` (.npz); returns it.
    config: extra JSON configuration to keep (a ``recipe`` makes the record self-replaying);
    key, lm: see :func:`record_of`."""
    record = result if isinstance(result, RunRecord) else record_of(result, config, key=key, lm=lm)
    path = Path(path)
    meta = json.dumps(record.meta())
    with open(path, "wb") as f:  # np.savez on a file object: the name is kept as given
        np.savez(f, __meta__=np.array(meta), **{f"a_{k}": v for k, v in record.arrays.items()})
    return record


def load(path) -> RunRecord:
    """Read a record written by :func:`save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            arrays = {k[2:]: data[k] for k in data.files if k.startswith("a_")}
    except (OSError, ValueError, KeyError) as err:
        raise RecordError(f"{path} is not a genppl run record ({err}); write one with result.save(path)") from None
    if meta.pop("format", None) != FORMAT:
        raise RecordError(f"{path} is a record of another format: rerun it and save it with this genppl")
    return RunRecord(arrays=arrays, **meta)


def differences(recorded: dict, current: dict) -> list[str]:
    return [f"{k}: recorded {recorded.get(k)!r}, here {current.get(k)!r}"
            for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]


def check_environment(record: RunRecord) -> None:
    diff = differences(record.versions, versions())
    if diff:
        raise RecordError("this record was made with other versions, so a replay could not be bit-identical ("
                          + "; ".join(diff) + "): install the recorded versions to replay it")


def check_checkpoint(record: RunRecord, lm) -> None:
    here = checkpoint_hash(lm)
    if here != record.checkpoint_hash:
        raise RecordError(f"this record was made with another checkpoint (checkpoint hash: recorded "
                          f"{record.checkpoint_hash[:16]}..., this model {here[:16]}...): load the recorded model")


def replay(record, *, program=None, kernel=None, lm=None):
    """Rerun a record and check that the output is bit-identical; returns the new result.

    record: a :class:`RunRecord` or a path. A record with a ``recipe`` rebuilds its run by
    itself; one of ``smc.run`` needs the same ``program`` (and the same ``kernel`` if one was
    given), one of ``models.sample`` the same ``lm``. Raises :class:`RecordError` before
    running when the versions, the checkpoint or the program differ, and
    :class:`ReplayMismatch` when the rerun's output differs.
    """
    if not isinstance(record, RunRecord):
        record = load(record)
    check_environment(record)
    cfg, key = record.config, record.prng_key
    if "recipe" in cfg:
        module, _, name = cfg["recipe"].partition(":")
        recipe_lm, run = getattr(importlib.import_module(module), name)(cfg["args"])
        check_checkpoint(record, recipe_lm)
        result = run(key)
        compare(record, record_of(result, key=key, lm=recipe_lm))
        return result
    elif cfg.get("function") == "genppl.inference.smc.run":
        if program is None:
            raise RecordError("this record of smc.run needs the program it ran: replay(record, program=...)")
        check_checkpoint(record, program.lm)
        if program_hash(program) != record.program_hash:
            raise RecordError("this program differs from the recorded one (prompt, potential tables or "
                              "max_new_tokens): pass the program the record was made with")
        from . import smc
        from .smc.run import describe

        kernel = smc.build_kernel() if kernel is None else kernel
        if describe(kernel) != cfg["kernel"]:
            raise RecordError(f"the kernel differs from the recorded one (recorded {cfg['kernel']!r}, "
                              f"here {describe(kernel)!r}): pass the recorded kernel as kernel=")
        result = smc.run(program, cfg["n"], key, kernel=kernel)
    elif cfg.get("function") == "genppl.models.sample":
        lm = program.lm if lm is None and program is not None else lm
        if lm is None:
            raise RecordError("this record of models.sample needs the model it ran: replay(record, lm=...)")
        check_checkpoint(record, lm)
        from genppl import models

        result = models.sample(lm, cfg["prompt_ids"], cfg["n"], cfg["max_new_tokens"], key,
                               temperature=cfg["temperature"], top_k=cfg["top_k"], top_p=cfg["top_p"],
                               min_new_tokens=cfg["min_new_tokens"])
    else:
        raise RecordError(f"cannot replay a record of {cfg.get('function')!r}: only records with a recipe "
                          "(the genppl command's --record), of smc.run and of models.sample replay")
    compare(record, record_of(result, {k: v for k, v in cfg.items() if k not in ("function",)}))
    return result


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":  # bit for bit: -0.0 != 0.0, NaN == NaN of the same payload
        bits = f"u{a.itemsize}"
        return bool(np.array_equal(np.ascontiguousarray(np.atleast_1d(a)).view(bits),
                                   np.ascontiguousarray(np.atleast_1d(b)).view(bits)))
    return bool(np.array_equal(a, b))


def compare(recorded: RunRecord, new: RunRecord) -> None:
    """Raise :class:`ReplayMismatch` at the first output field that is not bit-identical."""
    if new.token_ids != recorded.token_ids:
        raise ReplayMismatch("replay gave other tokens than the record")
    if new.texts != recorded.texts:
        raise ReplayMismatch("replay gave other texts than the record")
    for name in sorted(set(recorded.arrays) | set(new.arrays)):
        if name not in recorded.arrays or name not in new.arrays or not same(recorded.arrays[name], new.arrays[name]):
            raise ReplayMismatch(f"replay's {name} differs from the record's")
    a, b = recorded.log_z, new.log_z
    if not (a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))):
        raise ReplayMismatch(f"replay's log Z ({b}) differs from the record's ({a})")
