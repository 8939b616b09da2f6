"""The ``genppl`` command: generate with a chosen method on a task, and summarise.

One job per module: :mod:`.config` parses the arguments into a frozen :class:`RunConfig`
(defaults resolved, every value checked), :mod:`.methods` holds the method table (name ->
a function calling the library's public function), and this module runs the method over
the task's prompts (many prompts per call: each method takes a batch of prompts and runs
them in one compiled program), scores them with ``tasks.<task>.score``, and prints the summary (text or
``--json``). Every :class:`~genppl.models.interface.InputError` (a bad checkpoint, non-finite
logits, ...) is printed as one line ``genppl: error: ...`` with exit code 2.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time

import numpy as np

from genppl.models.interface import InputError

from .config import WORD_PROBLEMS, RunConfig, parse_args
from .methods import METHODS, encode_prompt, prepare

__all__ = ["PROMPTS_PER_CALL", "jobs", "main", "power_cost", "record_paths", "replay_recipe", "run",
           "write_record"]

#: the task's prompts run in calls of at most this many prompts (each call one compiled program)
#: for the methods that take a batch of prompts (``Method.batched``); the others run one by one
PROMPTS_PER_CALL = 64


def jobs(config: RunConfig):
    """(prompt text, scorer) pairs; a scorer maps the texts of one prompt and the particles'
    normalised weights (None for unweighted samples) to a dict of metrics (None for a free
    prompt)."""
    if config.prompt is not None:
        return [(config.prompt, None)]
    if config.task in WORD_PROBLEMS:
        import importlib

        from genppl.tasks import arithmetic

        def scorer(problem):  # the harder tasks answer in arithmetic's format: its scoring applies
            return lambda texts, weights: arithmetic.score(texts, problem, weights)

        task = importlib.import_module(f"genppl.tasks.{config.task}")
        problems = arithmetic.eval_problems(config.problems) if task is arithmetic else \
            task.problems("eval", config.problems)
        return [(task.prompt_text(pb), scorer(pb)) for pb in problems]
    from genppl.tasks import sentences

    def score(texts, weights):
        return sentences.score(texts, weights, keywords=config.keywords)

    return [(sentences.prompt_text(), score)] * config.problems


def power_cost(out) -> dict:
    """Per-prompt cost of a power method: tokens sampled per sample (every proposal and
    rollout; for SMC one token per particle per step), and the MH acceptance rate."""
    if hasattr(out, "tokens_generated"):
        stats = {"tokens_generated_per_sample": float(np.mean(out.tokens_generated))}
        if out.acceptance is not None and len(out.acceptance):
            stats["acceptance"] = float(np.mean(out.acceptance))
        return stats
    return {"tokens_generated_per_sample": float(len(out.ess))}


def num_tokens(out) -> int:
    if isinstance(getattr(out, "tokens", None), int):  # chains and search baselines count what they spent
        return out.tokens
    if hasattr(out, "num_tokens"):
        return int(np.sum(out.num_tokens))
    return sum(len(ids) for ids in out.token_ids)


def run(config: RunConfig) -> dict:
    """Run ``config.method`` on every prompt of the task; returns the summary."""
    import jax

    from genppl import models
    from genppl.inference.smc import SMCResult

    lm = models.load(config.model, dtype=config.dtype)
    session = prepare(config, lm)
    main_process = multi_process_mesh(config, session)
    method = METHODS[config.method]
    key = models.as_key(config.seed)
    work = jobs(config)
    tokens, elapsed = 0, 0.0
    metrics = collections.defaultdict(list)
    smc_stats = collections.defaultdict(list)
    power_stats = collections.defaultdict(list)
    chain_stats = collections.defaultdict(list)
    shown = []
    progress = _progress(work, config) if main_process else None
    paths = record_paths(config.record, len(work)) if main_process else []
    per_call = PROMPTS_PER_CALL if method.batched else 1
    results = []
    for start in range(0, len(work), per_call):
        # many prompts, one compiled call: prompt b of the chunk uses jax.random.split(sub, B)[b]
        chunk = work[start:start + per_call]
        key, sub = jax.random.split(key)
        prompts = [encode_prompt(lm, text) for text, _ in chunk]
        started = time.perf_counter()
        outs = method.run(session, prompts, sub) if len(chunk) > 1 else [method.run(session, prompts[0], sub)]
        elapsed += time.perf_counter() - started
        subs = jax.random.split(sub, len(chunk)) if len(chunk) > 1 else [sub]
        for i, out in enumerate(outs):
            if paths:  # the record replays its prompt alone, with that prompt's own key
                write_record(out, config, chunk[i][0], subs[i], lm, paths[start + i])
        results += zip(chunk, outs)
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.close()
    for (text, score), out in results:
        tokens += num_tokens(out)
        if method.power:
            for name, value in power_cost(out).items():
                power_stats[name].append(value)
        weighted = isinstance(out, SMCResult)
        if weighted:
            smc_stats["log_z"].append(out.log_z)
            smc_stats["mean_ess"].append(float(np.mean(out.ess)) if len(out.ess) else float(config.n))
            smc_stats["final_ess"].append(out.final_ess)
            smc_stats["resamplings"].append(out.num_resampling)
            smc_stats["all_dead"].append(out.message is not None)
            if getattr(out, "ancestors", None) is not None and len(out.ancestors):  # SMC genealogy
                smc_stats["lineages"].append(out.diagnostics()["lineages"])
            for name, value in (getattr(out, "chain_diagnostics", None) or {}).items():  # MCMC chains
                chain_stats[name].append(value)
        if score is not None:
            for name, value in score(out.texts, out.weights if weighted else None).items():
                metrics[name].append(value)
        if len(shown) < config.show:
            order = np.argsort(-out.log_weights, kind="stable") if weighted else range(len(out.texts))
            shown += [(text, out.texts[i]) for i in list(order)[: config.show - len(shown)]]
    summary = {
        "model": str(config.model or models.bundled_path()),
        "method": config.method,
        "task": config.task,
        "prompts": len(work),
        "samples": len(work) * config.n,
        "tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_second": round(tokens / max(elapsed, 1e-9), 1),
    }
    summary.update({name: round(float(np.mean(v)), 4) for name, v in metrics.items()})
    if smc_stats:
        log_z = np.array(smc_stats["log_z"], float)
        finite = log_z[np.isfinite(log_z)]
        steer = config.method == "smc-steer"
        summary.update({
            "resampler": "without-replacement selection" if steer else config.resampler,
            "proposal": ("every next token (enumerated)" if steer else
                         f"learned ({config.learned})" if config.learned else config.proposal or "optimal"),
            "alpha": config.alpha,
            # mean over prompts whose particles did not all die (null when every run died)
            "log_z": round(float(finite.mean()), 4) if finite.size else None,
            "all_particles_dead": int(np.sum(smc_stats["all_dead"])),
            "mean_ess": round(float(np.mean(smc_stats["mean_ess"])), 3),
            "final_ess": round(float(np.mean(smc_stats["final_ess"])), 3),
            "resamplings": int(np.sum(smc_stats["resamplings"])),
        })
        if smc_stats["lineages"]:  # initial particles with a descendant at the end (mean over prompts)
            summary["lineages"] = round(float(np.mean(smc_stats["lineages"])), 3)
    if chain_stats:  # split R-hat, bulk / tail ESS of log p, acceptance: means over prompts
        summary.update({name: round(float(np.mean(v)), 4) for name, v in chain_stats.items()})
    if power_stats:
        summary["alpha"] = config.alpha
        summary.update({name: round(float(np.mean(v)), 4) for name, v in power_stats.items()})
    summary["examples"] = [{"prompt": p, "completion": c} for p, c in shown]
    if paths:
        summary["records"] = [str(p) for p in paths]
    return summary


# ---- run records (--record) ---------------------------------------------------------------
def record_paths(path, prompts: int) -> list:
    """Where ``--record PATH`` writes: PATH for one prompt, PATH.<i>.npz for several."""
    from pathlib import Path

    if path is None:
        return []
    path = Path(path)
    if prompts == 1:
        return [path]
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return [path.with_name(f"{stem}.{i}{path.suffix or '.npz'}") for i in range(prompts)]


def write_record(out, config: RunConfig, prompt: str, key, lm, path) -> None:
    """A record whose recipe, :func:`replay_recipe`, rebuilds this prompt's run."""
    from genppl.inference import records

    args = {"config": dataclasses.asdict(dataclasses.replace(config, record=None, json=False)), "prompt": prompt}
    records.save(out, path, {"recipe": "genppl.cli.main:replay_recipe", "args": args}, key=key, lm=lm)


def replay_recipe(args: dict):
    """(lm, run) of a ``--record`` record: ``run(key)`` reruns its prompt."""
    from genppl import models

    fields = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in args["config"].items() if k in fields}
    config = RunConfig(**values)
    lm = models.load(config.model, dtype=config.dtype)
    session = prepare(config, lm)
    method = METHODS[config.method]
    prompt_ids = encode_prompt(lm, args["prompt"])
    return lm, lambda key: method.run(session, prompt_ids, key)


def multi_process_mesh(config: RunConfig, session) -> bool:
    """In a multi-process run (``--coordinator``; :func:`main` has joined it), the methods that
    take a mesh (sample, smc) get one over every process's devices. Returns whether this is
    process 0, the one that prints and writes."""
    if config.coordinator is None:
        return True
    from genppl import distributed

    if config.method in ("sample", "smc"):
        session.mesh = distributed.make_mesh()
    return distributed.is_main()


def _progress(work, config: RunConfig):
    if len(work) == 1:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=len(work), desc=config.method, unit="prompt")


def error_line(err: BaseException) -> str:
    """``genppl: error: <message>`` on one line."""
    return f"genppl: error: {' '.join(str(err).split()) or type(err).__name__}"


def main(argv=None) -> int:
    """Entry point of the ``genppl`` command. Bad options exit with code 2 (SystemExit from
    the parser); faults found while running (checkpoint, tokenizer, non-finite logits,
    other InputErrors, file errors) return 2 after one line on stderr."""
    config = parse_args(argv)
    try:
        if config.coordinator is not None:  # before anything touches JAX
            from genppl import distributed

            distributed.initialize(config.coordinator, config.num_processes, config.process_id)
        summary = run(config)
    except (InputError, ValueError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    if config.coordinator is not None and config.process_id != 0:
        return 0  # process 0 prints the summary; the others stay quiet
    if config.json:
        print(json.dumps(summary, indent=2))
        return 0
    for ex in summary.pop("examples"):
        print(f"--- {ex['prompt']!r}\n{ex['completion']}")
    print("--- summary")
    for k, v in summary.items():
        print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
