"""Shared pieces of the research comparisons (benchmarks/compare_*.py).

* **Tasks and splits.** :func:`load_task` imports ``genppl.tasks.<name>`` (any task module
  with ``prompt_text``, ``extract_answer``, ``generate_problem`` and ``EVAL_SEED``);
  :func:`split` gives its held-out **eval** problems or its **dev** problems (the task's own
  splits when it has them, else a stream from another seed with every eval question removed). Hyper-parameters are chosen
  on dev only (:func:`choose_on_dev`); eval is never looked at while choosing.
* **Rewards.** :func:`load_reward` resolves ``--prm``: ``verifier`` (the arithmetic step
  checks, question-blind) or a trained process reward model (``models.load_prm``), as step
  and final potentials and as a scorer of finished solutions; both read the question.
* **Budgets.** Every method of a comparison gets the same number N of generated sequences
  (samples, particles, beams x expansions) per problem; the tables report the generated
  tokens each method actually spent, so the equality is checked, not assumed.
* **Confidence intervals over problems.** :func:`wilson` (binomial, for 0/1 outcomes per
  problem) and :func:`bootstrap` (percentile bootstrap of the mean, for per-problem values
  that are not 0/1 and for paired differences), both 95% by default, from ``scipy.stats``.
* **Timing.** :func:`interleaved` times runners in alternating rounds, :func:`medians` takes
  each runner's median and :func:`round_ratio` the median of two sides' per-round ratios (the
  speed benchmarks share them).
* **Output.** :func:`write_section` puts a markdown block into benchmarks/RESULTS.md between
  ``<!-- BEGIN name -->`` / ``<!-- END name -->`` markers (replaced on a rerun, appended the
  first time); :func:`figure_path` and :func:`new_figure` give PNGs drawn with matplotlib's
  Agg backend under ``benchmarks/figures/``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import math
import os
import platform
import random
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
#: Seed of the dev split's problem stream (eval questions are removed from it).
DEV_SEED = 20_261_129


# ---- tasks and splits ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Task:
    """A task module seen through the interface the comparisons need."""

    name: str
    module: object

    def prompt(self, problem) -> str:
        return self.module.prompt_text(problem)

    def answer_of(self, text: str):
        return self.module.extract_answer(text)

    def correct(self, text: str, problem) -> bool:
        answer = self.answer_of(text)
        return answer is not None and answer == problem.answer

    @property
    def max_new_tokens(self) -> int:
        """The task's token budget per answer (``MAX_NEW_TOKENS``; 96 if it has none)."""
        return getattr(self.module, "MAX_NEW_TOKENS", 96)

    @property
    def step_delimiter(self) -> str:
        return getattr(self.module, "STEP_DELIMITER", ". ")


def load_task(name: str) -> Task:
    """``genppl.tasks.<name>`` as a :class:`Task` (ValueError naming the missing piece)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name or ""):
        raise ValueError(f"task must be a module name of genppl.tasks, got {name!r}")
    try:
        module = importlib.import_module(f"genppl.tasks.{name}")
    except ModuleNotFoundError as err:
        raise ValueError(f"no task genppl.tasks.{name} ({err})") from None
    missing = [a for a in ("prompt_text", "extract_answer", "generate_problem", "EVAL_SEED")
               if not hasattr(module, a)]
    if missing:
        raise ValueError(f"genppl.tasks.{name} is not a problem task: it lacks {', '.join(missing)}")
    return Task(name, module)


def split(task: Task, which: str, n: int) -> list:
    """``n`` problems of the ``eval`` split (the task's held-out set) or the ``dev`` split.

    A task with its own splits (``problems(split, n)``, e.g. ``tasks.chains``) gives them;
    otherwise eval is ``eval_problems(n)`` and dev is the stream for :data:`DEV_SEED` with
    every question of the first 1000 eval problems skipped, so dev and eval never share a
    question."""
    if which not in ("eval", "dev"):
        raise ValueError(f"split must be 'eval' or 'dev', got {which!r}")
    if hasattr(task.module, "problems"):
        return list(task.module.problems(which, n))
    if which == "eval":
        return list(task.module.eval_problems(n)) if hasattr(task.module, "eval_problems") else \
            _stream(task, task.module.EVAL_SEED, n, set())
    held_out = {p.question for p in split(task, "eval", 1000)}
    return _stream(task, DEV_SEED, n, held_out)


def _stream(task, seed, n, exclude):
    rng, out = random.Random(seed), []
    while len(out) < n:
        problem = task.module.generate_problem(rng)
        if problem.question not in exclude:
            out.append(problem)
    return out


# ---- rewards ------------------------------------------------------------------------------
class Reward:
    """A reward r(question, partial solution) in [0, 1], as the comparisons use it.

    ``--prm verifier``: the arithmetic step check 0.1 ** (wrong equations written so far)
    (:func:`genppl.tasks.arithmetic.step_reward`; question-blind: a misread question with
    right arithmetic scores 1), run on the host through ``ppl.StepReward`` /
    ``ppl.FinalReward`` on the decoded prompt plus generation. Anything else names a trained
    process reward model (``prm`` or ``bundled``: the bundled one, ``models.load_prm()``; else
    a checkpoint directory), evaluated inside the compiled sweep by ``ppl.PRMReward`` /
    ``ppl.PRMFinalReward``. Potentials are built once per beta and reused, so every problem
    of a prompt-length bucket shares one compiled sweep.
    """

    def __init__(self, spec: str, lm):
        from genppl import models

        self.spec, self.lm = spec, lm
        self._potentials: dict = {}
        if spec == "verifier":
            from genppl.tasks import arithmetic

            self.fn, self.prm = arithmetic.step_reward, None
        else:
            self.fn, self.prm = None, models.load_prm(None if spec in ("prm", "bundled") else spec)

    @property
    def name(self) -> str:
        return "the arithmetic step verifier (question-blind)" if self.prm is None else \
            f"the trained PRM (`{'bundled' if self.spec in ('prm', 'bundled') else self.spec}`, {self.prm!r})"

    def potential(self, kind: str, beta: float = 1.0):
        """``kind="step"``: pi ∝ p prod_k r(x_<=k)^beta; ``"final"``: pi ∝ p r(x)^beta."""
        from genppl import ppl

        key = (kind, float(beta))
        if key not in self._potentials:
            if self.prm is not None:
                cls = ppl.PRMReward if kind == "step" else ppl.PRMFinalReward
                self._potentials[key] = cls(self.prm, self.lm.tokenizer, beta=beta)
            else:
                cls = ppl.StepReward if kind == "step" else ppl.FinalReward
                self._potentials[key] = cls(self.fn, self.lm.tokenizer, beta=beta, include_prompt=True)
        return self._potentials[key]

    def score(self, prompt_ids, prompt_text: str, texts) -> np.ndarray:
        """Rewards of finished solutions ``texts`` of one prompt."""
        texts = list(texts)
        if self.prm is not None:
            return np.asarray(self.prm.score_texts(prompt_ids, texts, self.lm.tokenizer), np.float64)
        return np.asarray(self.fn([prompt_text + t for t in texts]), np.float64)


def load_reward(spec: str, lm) -> Reward:
    """The :class:`Reward` named by ``--prm`` (``verifier``, ``prm``/``bundled`` or a PRM
    checkpoint directory)."""
    return Reward(spec, lm)


# ---- budgets, votes ----------------------------------------------------------------------
def budgets(quick: bool, full=(1, 2, 4, 8, 16, 32, 64), small=(1, 4, 16)) -> tuple[int, ...]:
    return tuple(small if quick else full)


def vote(answers: Sequence, weights: Sequence[float] | None = None):
    """The answer of largest total weight (unit weights: a majority vote); answers that are
    None do not vote; ties go to the answer seen first. None when nobody votes."""
    totals: dict = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        w = 1.0 if weights is None else float(weights[i])
        if w > 0:
            totals[a] = totals.get(a, 0.0) + w
    return max(totals, key=totals.get) if totals else None


# ---- confidence intervals ----------------------------------------------------------------
def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest``)."""
    from scipy import stats

    if n <= 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem ``values``
    (``scipy.stats.bootstrap``, fixed seed). A constant sample gives the point itself."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean())
    res = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval(values: Sequence[float], level: float = 0.95, binary: bool | None = None) -> tuple[float, float, float]:
    """(mean, low, high) over problems. ``binary`` (one 0/1 outcome per problem): Wilson;
    otherwise a percentile bootstrap of the mean. None: Wilson exactly when every value is
    0 or 1."""
    x = np.asarray(values, np.float64)
    if binary is None:
        binary = bool(x.size) and bool(np.all((x == 0) | (x == 1)))
    if binary:
        if x.size and not np.all((x == 0) | (x == 1)):
            raise ValueError("binary=True needs values that are all 0 or 1")
        return (float(x.mean()) if x.size else math.nan, *wilson(int(x.sum()), x.size, level))
    return (float(x.mean()) if x.size else math.nan, *bootstrap(x, level))


def overlaps(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether two (mean, low, high) intervals overlap."""
    return not (a[1] > b[2] or b[1] > a[2])


def fmt_ci(ci: tuple[float, float, float], digits: int = 3) -> str:
    mean, low, high = ci
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# ---- choosing hyper-parameters on dev ----------------------------------------------------
def choose_on_dev(candidates: Sequence, score: Callable[[object], float], what: str, log=print):
    """The candidate with the largest ``score`` (evaluated on the dev split by the caller);
    ties go to the first. Logs each score."""
    best, best_score = None, -math.inf
    for c in candidates:
        s = float(score(c))
        log(f"  dev: {what}={c}: {s:.3f}")
        if s > best_score:
            best, best_score = c, s
    log(f"  dev: chose {what}={best}")
    return best


# ---- timing -------------------------------------------------------------------------------
def interleaved(runners: dict, repeats: int) -> dict:
    """{name: [seconds of each timed call]} of every runner's ``run(seed)``: one warm-up call
    each (seed 0), then ``repeats`` rounds in which every runner is called once (seed r + 1),
    so that a slow moment of a shared machine falls on every side of a round."""
    for run in runners.values():
        run(0)
    times = {name: [] for name in runners}
    for r in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(r + 1)
            times[name].append(time.perf_counter() - start)
    return times


def round_ratio(rounds: dict, slower: str, faster: str) -> float:
    """Median over rounds of ``slower``'s seconds / ``faster``'s in the same round
    (``rounds`` from :func:`interleaved`)."""
    return statistics.median(a / b for a, b in zip(rounds[slower], rounds[faster]))


def medians(rounds: dict) -> dict:
    """{name: median seconds} of ``rounds`` from :func:`interleaved`."""
    return {name: statistics.median(t) for name, t in rounds.items()}


# ---- output -------------------------------------------------------------------------------
def machine_line() -> str:
    import jax

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.default_backend()}, "
            f"load average {load:.1f} at the start, {time.strftime('%Y-%m-%d', time.gmtime())}")


def command_line(script: str, args) -> str:
    """The command that reproduces a run: the script and the arguments it was given."""
    argv = getattr(args, "argv", None)
    return f"python benchmarks/{script}.py" + ("" if not argv else " " + " ".join(argv))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path | str = RESULTS) -> None:
    """Replace the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in
    ``path`` with ``body`` (append the block, markers included, when it is not there yet)."""
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"section name must be a word, got {name!r}")
    path = Path(path)
    path.touch(exist_ok=True)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # comparisons running side by side (compare_all --jobs 2) share the file
        text = f.read()
        if begin in text and end in text and text.index(begin) < text.index(end):
            text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        f.seek(0)
        f.truncate()
        f.write(text)


def figure_name(base: str, quick: bool) -> str:
    """A comparison's figure stem: ``--quick`` runs write ``<base>_quick``, so that they never
    replace the figure of the default run, which RESULTS.md shows."""
    return base + ("_quick" if quick else "")


def figure_path(name: str, results: Path | str = RESULTS) -> Path:
    """``figures/<name>.png`` next to the results file."""
    folder = Path(results).parent / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def new_figure(ncols: int = 1, size=(6.0, 4.0)):
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, name: str, results: Path | str = RESULTS) -> Path:
    import matplotlib.pyplot as plt

    path = figure_path(name, results)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def common_arguments(p, *, problems: int, dev: int, quick_problems: int):
    """Options every comparison takes."""
    p.add_argument("--model", default="reasoner", help="policy: a bundled model's name ('reasoner', 'default') or "
                   "a checkpoint directory (default reasoner, the model trained for the chains task)")
    p.add_argument("--task", default="chains", help="task module of genppl.tasks (default chains, the testbed; "
                   "arithmetic is the easy task of the default model)")
    p.add_argument("--problems", type=int, default=None, help=f"eval problems (default {problems}; "
                   f"--quick {quick_problems})")
    p.add_argument("--dev-problems", type=int, default=None, help=f"dev problems for choosing hyper-parameters "
                   f"(default {dev}; --quick: none, the defaults are used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="problems per compiled call (default 16): their "
                   "particles run together, prompt b of a call with key split(key, B)[b], so the draws "
                   "depend on this grouping as on --seed")
    p.add_argument("--quick", action="store_true", help="a few-minute version (fewer problems and budgets)")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md or figures")
    p.add_argument("--results", default=str(RESULTS), help="markdown file to write the table into (figures go "
                   "to figures/ beside it; default benchmarks/RESULTS.md)")
    p.set_defaults(counts=(problems, dev, quick_problems))  # read back by resolve_counts
    return p


def resolve_counts(args) -> None:
    """Problem and dev counts left unset: the defaults given to :func:`common_arguments`."""
    problems, dev, quick_problems = args.counts
    if args.batch < 1:
        raise SystemExit(f"--batch must be a positive number of problems, got {args.batch}")
    if args.problems is None:
        args.problems = quick_problems if args.quick else problems
    if args.dev_problems is None:
        args.dev_problems = 0 if args.quick else dev


def same_width(programs: Sequence) -> list:
    """The programs with their prompt buffers padded to the widest one (zeros past each prompt,
    as the bucket padding): a jitted step that reads a program as data (a training step) then
    compiles once for all of them instead of once per prompt bucket."""
    import jax.numpy as jnp

    width = max(p.prompt.shape[0] for p in programs)
    return [p.replace(prompt=jnp.pad(p.prompt, (0, width - p.prompt.shape[0]))) for p in programs]


def chunks(items: Sequence, size: int):
    """``(c, items[c * size:(c + 1) * size])`` for each chunk c: the problems of one compiled call."""
    return [(c, list(items[start:start + size])) for c, start in enumerate(range(0, len(items), size))]


class Clock:
    """Wall time of named phases (seconds)."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
