"""Results of an inference run: weighted particles, log Z, diagnostics, notebook display."""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable

import numpy as np

from genppl.models.interface import InputError


@dataclasses.dataclass
class SMCResult:
    """Weighted particles of an SMC run.

    token_ids: generated ids per particle (EOS included when the particle ended with it);
    texts: decoded continuations; log_weights [n] (float64, -inf for dead particles);
    weights: normalised weights (all 0 when every particle died); log_z: the estimate of
    log Z (-inf when every particle died); ess / resampled: per step; eos: ended with EOS;
    log_p: log p(x | prompt) under the base LM; message: why the run failed, else None.
    ancestors [steps, n] (``ancestors[t, i]``: the parent, among the particles after step
    t-1, of particle i after step t) and step_log_weights [steps, n]: the genealogy and the
    weights after every step (None when the run did not record them). provenance: what
    produced the result (function, n, key, kernel, program), for :meth:`save`.

    Notebook views (:mod:`genppl.viz`): the HTML display (texts and weights, log Z with its
    uncertainty, the weight traces), :meth:`genealogy` (interactive), :meth:`figure`.
    """

    token_ids: list[list[int]]
    texts: list[str]
    log_weights: np.ndarray
    log_z: float
    ess: np.ndarray
    resampled: np.ndarray
    eos: np.ndarray
    log_p: np.ndarray
    method: str = "SMC"
    message: str | None = None
    ancestors: np.ndarray | None = None  # [steps, n] ancestor indices of each step (identity: none)
    step_log_weights: np.ndarray | None = None
    provenance: dict | None = dataclasses.field(default=None, repr=False, compare=False)
    #: where the run lived on a device mesh (:class:`genppl.distributed.Layout`; None on one device)
    layout: object | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_run(cls, program, state, infos, method: str = "SMC") -> "SMCResult":
        """From a final :class:`SMCState` and the stacked :class:`SMCInfo` of a sweep."""
        particles = state.particles
        steps = int(state.step)
        logw = np.asarray(state.logw, np.float64)
        log_z = float(np.asarray(state.log_z))
        message = None
        if not np.isfinite(logw).any():
            message = ("every particle was ruled out: no continuation satisfies the constraints "
                       "within max_new_tokens (log Z = -inf). Loosen the constraint or allow more tokens")
            log_z = -math.inf
        ids = [list(map(int, row)) for row in particles.lm.generated()]
        tokenizer = program.lm.tokenizer
        texts = [tokenizer.decode(row) for row in ids] if tokenizer is not None else [""] * len(ids)
        return cls(
            token_ids=ids,
            texts=texts,
            log_weights=logw,
            log_z=log_z,
            ess=np.asarray(infos.ess, np.float64)[:steps],
            resampled=np.asarray(infos.resampled, bool)[:steps],
            eos=np.asarray(particles.eos, bool),
            log_p=np.asarray(particles.log_p, np.float64),
            method=method,
            message=message,
            ancestors=np.asarray(infos.ancestors, np.int32)[:steps],
            step_log_weights=None if infos.logw is None else np.asarray(infos.logw, np.float64)[:steps],
        )

    # ---- weights ------------------------------------------------------------------------
    @property
    def num_particles(self) -> int:
        return len(self.token_ids)

    @property
    def weights(self) -> np.ndarray:
        w = self.log_weights
        if not np.isfinite(w).any():
            return np.zeros_like(w)
        w = np.exp(w - w.max())
        return w / w.sum()

    @property
    def num_resampling(self) -> int:
        return int(self.resampled.sum())

    @property
    def final_ess(self) -> float:
        w = self.weights
        return float(1.0 / np.sum(w ** 2)) if w.sum() > 0 else 0.0

    def diagnostics(self) -> dict:
        """SMC diagnostics: ``min_ess`` and ``final_ess``; ``resampling_steps`` (step indices);
        ``unique_ancestors`` (distinct parents at each resampling step); ``lineages`` (how many
        of the initial particles have a descendant among the final ones: 1 means the
        genealogy collapsed to one ancestor)."""
        out = {"min_ess": float(np.nanmin(self.ess)) if len(self.ess) and np.isfinite(self.ess).any() else math.nan,
               "final_ess": self.final_ess, "resampling_steps": np.flatnonzero(self.resampled).tolist()}
        if self.ancestors is None or not len(self.ancestors):
            return {**out, "unique_ancestors": [], "lineages": self.num_particles}
        out["unique_ancestors"] = [int(len(np.unique(a))) for a, r in zip(self.ancestors, self.resampled) if r]
        origin = np.arange(self.num_particles)
        for a in self.ancestors:  # origin[i]: the initial particle particle i descends from
            origin = origin[a]
        out["lineages"] = int(len(np.unique(origin)))
        return out

    def distribution(self) -> dict[tuple[int, ...], float]:
        """Posterior estimate: total normalised weight of each distinct token sequence."""
        out: dict[tuple[int, ...], float] = collections.defaultdict(float)
        for ids, w in zip(self.token_ids, self.weights):
            if w > 0:
                out[tuple(ids)] += float(w)
        return dict(out)

    # ---- answers ------------------------------------------------------------------------
    def answers(self, extract: Callable[[str], object]) -> list:
        """extract(text) for each particle (None where nothing could be extracted)."""
        return [extract(t) for t in self.texts]

    def vote(self, extract: Callable[[str], object]) -> dict:
        """Weighted vote: total normalised weight of each extracted answer, heaviest first.

        Particles whose answer is None do not vote; the shares are renormalised over the rest.
        """
        totals: dict = collections.defaultdict(float)
        for answer, w in zip(self.answers(extract), self.weights):
            if answer is not None and w > 0:
                totals[answer] += float(w)
        mass = sum(totals.values())
        return {a: v / mass for a, v in sorted(totals.items(), key=lambda kv: -kv[1])} if mass else {}

    def best_answer(self, extract: Callable[[str], object]):
        """The answer with the largest weighted vote (None if no particle gives one)."""
        votes = self.vote(extract)
        return next(iter(votes), None)

    def best(self) -> str | None:
        """The text of the heaviest particle (None when every particle died)."""
        if not np.isfinite(self.log_weights).any():
            return None
        return self.texts[int(np.argmax(self.log_weights))]

    # ---- display ------------------------------------------------------------------------
    def __repr__(self) -> str:
        status = self.message or f"log Z = {self.log_z:.4f}"
        return (f"<{type(self).__name__} {self.method}: {self.num_particles} particles, "
                f"{len(self.ess)} steps, {self.num_resampling} resamplings, final ESS "
                f"{self.final_ess:.1f}; {status}>")

    def summary(self, top: int = 5) -> str:
        lines = [repr(self)]
        for text, w in self._top(top):
            lines.append(f"  {w:6.3f}  {text!r}")
        return "\n".join(lines)

    def _top(self, top: int):
        merged: dict[str, float] = collections.defaultdict(float)
        for text, w in zip(self.texts, self.weights):
            merged[text] += float(w)
        return sorted(merged.items(), key=lambda kv: -kv[1])[:top]

    def _repr_html_(self) -> str:
        from genppl import viz

        return viz.results_html(self, viz.figures.weight_traces)

    @property
    def log_z_sd(self) -> float:
        """Standard deviation of log Z_hat estimated from this run's genealogy
        (:func:`genppl.viz.log_z_uncertainty`; nan when every particle died)."""
        from genppl import viz

        anc = self.ancestors if self.ancestors is not None else np.zeros((0, self.num_particles), int)
        return viz.log_z_uncertainty(anc, self.log_weights)

    def genealogy(self):
        """Interactive genealogy (click a particle: its text and weight history)."""
        from genppl import viz

        return viz.genealogy_view(self)

    def figure(self, kind: str = "weights", path=None):
        """A matplotlib Figure: ``"weights"`` (ESS and log-weight traces) or ``"genealogy"``;
        saved to ``path`` when given."""
        from genppl import viz

        figures = {"weights": viz.figures.weight_traces, "genealogy": viz.figures.genealogy}
        if kind not in figures:
            raise InputError(f"figure kind must be one of {sorted(figures)}, got {kind!r}")
        return figures[kind](self, path)

    def save(self, path, config: dict | None = None) -> None:
        """Write a run record (:func:`inference.records.save`) that :func:`inference.replay`
        can rerun and check."""
        from .. import records

        records.save(self, path, config)

    def plot(self, ax=None):
        """ESS per step (with resampling events) and the sorted final weights (matplotlib)."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("plot() needs matplotlib: pip install matplotlib") from err
        if ax is None:
            _, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        ax_ess, ax_w = ax
        steps = np.arange(1, len(self.ess) + 1)
        ax_ess.plot(steps, self.ess, marker=".")
        for t in steps[self.resampled]:
            ax_ess.axvline(t, color="gray", alpha=0.3, lw=1)
        ax_ess.set(xlabel="step", ylabel="ESS", title="ESS (grey: resampling)",
                   ylim=(0, self.num_particles * 1.05))
        ax_w.bar(np.arange(self.num_particles), np.sort(self.weights)[::-1])
        ax_w.set(xlabel="particle (sorted)", ylabel="normalised weight", title="final weights")
        return ax
