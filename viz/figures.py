"""Matplotlib figures of what a sampler did, one function per picture.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (so nothing is
registered globally; Jupyter displays a returned figure inline) and saves it to ``path`` when
one is given (any format matplotlib knows from the suffix: .png, .svg, .pdf).

* :func:`genealogy` — the particle genealogy over steps, with the resampling events;
* :func:`weight_traces` — ESS and normalised log-weights per step;
* :func:`token_logprobs` — per-token log-probabilities of one text, coloured by how much
  probability the constraint removed at that position;
* :func:`mh_traces` — MH acceptance per block and log-target trace per chain;
* :func:`training_curves` — variational loss per step and the ESS of the evaluations.
"""

from __future__ import annotations

import warnings

import numpy as np

from .lineage import surviving

__all__ = ["genealogy", "mh_traces", "sample_stats", "token_logprobs", "training_curves", "weight_traces"]


def new_figure(width: float, height: float, ncols: int = 1):
    """(figure, axes) without pyplot; an ImportError that says what to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("genppl's figures need matplotlib: pip install matplotlib "
                          "(or pip install 'genppl[test]')") from err
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def finish(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def normalised(log_weights) -> np.ndarray:
    """Normalised weights of a [..., n] array of log-weights (zeros where all are -inf)."""
    logw = np.asarray(log_weights, np.float64)
    top = np.max(logw, axis=-1, keepdims=True)
    w = np.where(np.isfinite(top), np.exp(logw - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = w.sum(-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def needs(result, *names):
    missing = [n for n in names if getattr(result, n, None) is None]
    if missing:
        raise ValueError(f"{type(result).__name__} has no {', '.join(missing)}: this figure needs a "
                         "sequential (SMC-like) result that records them per step")


def genealogy(result, path=None, *, max_particles: int = 64):
    """The particle genealogy: x = step, y = particle slot; a segment joins each particle to
    its parent at the previous step. Lineages that reach a final particle with non-zero
    weight are dark (the final dots sized by weight), lineages that died are pale grey;
    shaded columns are the steps that resampled."""
    from matplotlib.collections import LineCollection

    needs(result, "ancestors")
    anc = np.asarray(result.ancestors, np.int64)
    steps, n = anc.shape
    w = normalised(result.log_weights)
    alive = surviving(anc, w > 0)
    fig, (ax,) = new_figure(9, 3.6)
    shown = min(n, max_particles)
    segs, cols = [], []
    for t in range(steps):
        for i in range(shown):
            parent = anc[t, i]
            if parent >= shown:
                continue
            segs.append([(t, parent), (t + 1, i)])
            cols.append((0.12, 0.3, 0.6, 0.9) if alive[t + 1, i] else (0.6, 0.6, 0.6, 0.35))
    ax.add_collection(LineCollection(segs, colors=cols, linewidths=0.9))
    resampled = np.asarray(getattr(result, "resampled", np.zeros(steps, bool)), bool)
    for t in np.flatnonzero(resampled):  # step t+1 resampled the particles after step t
        ax.axvspan(t, t + 1, color="orange", alpha=0.15, lw=0)
    ax.scatter(np.full(shown, steps), np.arange(shown), s=8 + 120 * w[:shown], color="crimson", zorder=3)
    ax.set(xlim=(-0.5, steps + 0.5), ylim=(-1, shown), xlabel="step", ylabel="particle",
           title=f"genealogy ({int(resampled.sum())} resamplings shaded; dark: lineages of weighted particles)")
    return finish(fig, path)


def weight_traces(result, path=None):
    """ESS per step (resampling steps marked) and each particle slot's normalised
    log-weight after every step."""
    needs(result, "ess")
    ess = np.asarray(result.ess, np.float64)
    steps = np.arange(1, len(ess) + 1)
    n = len(result.texts)
    panels = 2 if getattr(result, "step_log_weights", None) is not None else 1
    fig, axes = new_figure(10 if panels == 2 else 6, 3.4, panels)
    ax = axes[0]
    ax.plot(steps, ess, marker=".", color="tab:blue")
    resampled = np.asarray(getattr(result, "resampled", np.zeros(len(ess), bool)), bool)
    after = np.flatnonzero(resampled) - 1  # step t+1 resamples on the ESS after step t
    after = after[after >= 0]
    if after.size:
        ax.scatter(steps[after], ess[after], color="orange", zorder=3, label="resampled after this step")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(xlabel="step", ylabel="ESS", ylim=(0, n * 1.05), title="effective sample size")
    if panels == 2:
        ax = axes[1]
        logw = np.asarray(result.step_log_weights, np.float64)
        with np.errstate(divide="ignore"):
            lw = np.log(normalised(logw))
        lw = np.where(np.isfinite(lw), lw, np.nan)
        ax.plot(steps, lw, color="tab:gray", alpha=0.35, lw=0.8)
        with warnings.catch_warnings():  # a step where every particle is dead has no median
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(lw, 1)
        ax.plot(steps, median, color="black", lw=1.5, label="median")
        ax.axhline(-np.log(n), color="tab:blue", ls="--", lw=1, label="log 1/n")
        ax.legend(loc="lower left", fontsize=8)
        ax.set(xlabel="step", ylabel="log normalised weight", title="log-weights per particle")
    return finish(fig, path)


def token_logprobs(effects, path=None):
    """Per-token log p(token | prefix) of one text under the base LM (bars), coloured by
    ``log_kept``: the log of the probability mass the constraint kept at that position
    (0: the constraint removed nothing; very negative: the model wanted tokens it banned).

    effects: any object with ``tokens`` (strings), ``log_p`` [L] and ``log_kept`` [L], e.g.
    :func:`genppl.ppl.effects.token_effects`.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    log_p = np.asarray(effects.log_p, np.float64)
    kept = np.asarray(effects.log_kept, np.float64)
    L = len(log_p)
    fig, (ax,) = new_figure(max(6, 0.32 * L + 2), 3.6)
    floor = min(-1e-3, float(np.min(kept[np.isfinite(kept)])) if np.isfinite(kept).any() else -1.0)
    norm = Normalize(vmin=floor, vmax=0.0)
    cmap = colormaps["viridis"]
    ax.bar(np.arange(L), log_p, color=cmap(norm(np.where(np.isfinite(kept), kept, floor))))
    ax.set_xticks(np.arange(L), [repr(t)[1:-1] for t in effects.tokens], rotation=90, fontsize=8,
                  family="monospace")
    ax.set(ylabel="log p(token | prefix)", title="per-token log-probabilities (colour: log mass the constraint kept)")
    fig.colorbar(_mappable(cmap, norm), ax=ax, label="log mass kept")
    return finish(fig, path)


def _mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    m = ScalarMappable(norm=norm, cmap=cmap)
    m.set_array([])
    return m


def mh_traces(result, path=None):
    """MH acceptance rate per block (bars) and every chain's log target after each MH step
    (blocks concatenated; dotted lines mark block starts)."""
    needs(result, "trace_accepted", "trace_log_target")
    acc = np.asarray(result.trace_accepted, np.float64)       # [blocks, steps, n]
    lt = np.asarray(result.trace_log_target, np.float64)
    blocks, per = acc.shape[:2]
    fig, axes = new_figure(10, 3.4, 2)
    ax = axes[0]
    rate = acc.reshape(blocks, -1).mean(1) if acc.size else np.zeros(blocks)
    ax.bar(np.arange(1, blocks + 1), rate, color="tab:green")
    ax.set(xlabel="block", ylabel="acceptance rate", ylim=(0, 1), title=f"MH acceptance (mean {acc.mean() if acc.size else 0:.2f})")
    ax = axes[1]
    flat = lt.reshape(blocks * per, -1)
    x = np.arange(1, flat.shape[0] + 1)
    ax.plot(x, np.where(np.isfinite(flat), flat, np.nan), alpha=0.6, lw=0.9)
    for b in range(1, blocks):
        ax.axvline(b * per + 0.5, color="gray", ls=":", lw=0.8)
    ax.set(xlabel="MH step", ylabel="log target (alpha log p)", title="log target per chain")
    return finish(fig, path)


def training_curves(history, path=None):
    """Loss per training step, and the ESS fraction of the evaluations (``history[i]["eval"]
    ["ess"]``) or of a per-step ``ess`` metric, when the history has them."""
    rows = list(history)
    steps = np.array([r.get("step", i + 1) for i, r in enumerate(rows)], np.float64)
    loss = np.array([r.get("loss", np.nan) for r in rows], np.float64)
    ess_x, ess_y = [], []
    for s, r in zip(steps, rows):
        value = r.get("eval", {}).get("ess") if isinstance(r.get("eval"), dict) else r.get("ess")
        if value is not None:
            ess_x.append(s)
            ess_y.append(value)
    fig, axes = new_figure(10, 3.4, 2)
    axes[0].plot(steps, loss, color="tab:red", lw=1)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    ax = axes[1]
    if ess_x:
        ax.plot(ess_x, ess_y, marker="o", color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no ESS recorded\n(fit(..., eval_every=k))", ha="center", va="center",
                transform=ax.transAxes)
    ax.set(xlabel="step", ylabel="ESS / n", ylim=(0, 1.05), title="ESS of the learned proposal")
    return finish(fig, path)


def sample_stats(samples, path=None):
    """Histograms of unweighted samples: log p(x) and number of tokens (EOS-ended vs cut)."""
    log_p = np.asarray(samples.log_probs, np.float64)
    k = np.asarray(samples.num_tokens)
    done = np.asarray(samples.finished, bool)
    fig, axes = new_figure(9, 3.0, 2)
    axes[0].hist(log_p[np.isfinite(log_p)], bins=min(20, max(3, len(log_p) // 2)), color="tab:purple")
    axes[0].set(xlabel="log p(x | prompt)", ylabel="samples", title="log-probability of the samples")
    bins = np.arange(k.min(), k.max() + 2) - 0.5 if len(k) else 1
    axes[1].hist([k[done], k[~done]], bins=bins, stacked=True, label=["ended with EOS", "cut at the limit"])
    axes[1].legend(fontsize=8)
    axes[1].set(xlabel="tokens", ylabel="samples", title="length")
    return finish(fig, path)
