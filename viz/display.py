"""HTML displays of results objects for notebooks: a table of texts and weights, log Z with
its uncertainty, and an inline figure (PNG, base64)."""

from __future__ import annotations

import base64
import collections
import html
import io
import math

import numpy as np

from .lineage import log_z_uncertainty

__all__ = ["figure_png", "html_table", "inline_figure", "results_html", "samples_html"]


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def inline_figure(make) -> str:
    """``<img>`` of the figure ``make()`` returns; a short note instead when matplotlib is
    missing or the result lacks what the figure needs."""
    try:
        png = figure_png(make())
    except ImportError:
        return "<p><i>(install matplotlib for the figure)</i></p>"
    except ValueError as err:
        return f"<p><i>(no figure: {html.escape(str(err))})</i></p>"
    return f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"


def html_table(header, rows, limit: int = 12) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in row) + "</tr>"
                   for row in rows[:limit])
    more = f"<p>... {len(rows) - limit} more rows</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def weighted_rows(texts, weights, limit: int):
    """Distinct texts, heaviest first: (total weight, count, text)."""
    merged: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for t, w in zip(texts, weights):
        merged[t][0] += float(w)
        merged[t][1] += 1
    order = sorted(merged.items(), key=lambda kv: -kv[1][0])
    return [(f"{w:.3f}", str(c), code(t)) for t, (w, c) in order[:limit]]


def log_z_line(result) -> str:
    log_z = getattr(result, "log_z", None)
    if log_z is None:
        return "<p>log Z: not estimated by this sampler</p>"
    if not math.isfinite(log_z):
        return f"<p><b>log Z = {log_z}</b> (every particle was ruled out)</p>"
    anc = getattr(result, "ancestors", None)
    sd = log_z_uncertainty(np.zeros((0, len(result.texts)), int) if anc is None else anc, result.log_weights)
    return (f"<p><b>log Z = {log_z:.4f} ± {sd:.4f}</b> <small>(± one standard deviation, "
            "estimated from this run's genealogy by grouping particles by their initial ancestor)</small></p>")


def results_html(result, figure=None, rows: int = 10) -> str:
    """The notebook display of a weighted result (texts, log_weights, log_z; see the package
    docstring). figure: a function ``result -> Figure`` for the inline picture (None: none)."""
    from .figures import normalised

    weights = normalised(result.log_weights)
    head = html.escape(repr(result).split("\n")[0])
    table = html_table(["weight", "particles", "text"], weighted_rows(result.texts, weights, rows))
    pic = inline_figure(lambda: figure(result)) if figure is not None else ""
    return f"<div><p>{head}</p>{log_z_line(result)}{table}{pic}</div>"


def samples_html(samples, figure="default", rows: int = 12) -> str:
    """The notebook display of unweighted samples (``texts``, ``log_probs``, ``num_tokens``,
    ``finished``): every sample has weight 1/n and there is no log Z to estimate."""
    from .figures import sample_stats

    head = html.escape(repr(samples).split("\n")[0])
    n = len(samples.texts)
    table = html_table(["#", "weight", "log p", "tokens", "EOS", "text"], [
        (str(i), f"{1 / n:.3f}", f"{lp:.2f}", str(k), "✓" if f else "", code(t))
        for i, (t, lp, k, f) in enumerate(zip(samples.texts, samples.log_probs, samples.num_tokens, samples.finished))
    ], rows)
    make = sample_stats if figure == "default" else figure
    pic = inline_figure(lambda: make(samples)) if make is not None else ""
    return (f"<div><p>{head}</p><p>log Z: not estimated (unweighted samples, weight 1/n each)</p>"
            f"{table}{pic}</div>")
