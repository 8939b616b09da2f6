"""A training history: the list of per-step records a trainer returns, with a display."""

from __future__ import annotations

import html

from .display import html_table, inline_figure

__all__ = ["History"]


class History(list):
    """Per-step records (dicts with ``step``, ``loss`` and metrics; evaluations under
    ``"eval"``). A plain list with a notebook display (last steps, evaluations, loss and ESS
    curves) and :meth:`plot`."""

    def plot(self, path=None):
        from .figures import training_curves

        return training_curves(self, path)

    def evaluations(self) -> list[dict]:
        return [dict(r["eval"], step=r.get("step")) for r in self if isinstance(r.get("eval"), dict)]

    def __repr__(self) -> str:
        if not self:
            return "History(0 steps)"
        last = self[-1]
        return f"History({len(self)} steps, last step {last.get('step')}: loss {last.get('loss', float('nan')):.4g})"

    def _repr_html_(self) -> str:
        metrics = [k for k in (self[-1] if self else {}) if k not in ("step", "eval")]
        rows = [[str(r.get("step"))] + [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k))
                                         for k in metrics] for r in self[-5:]]
        evals = self.evaluations()
        parts = [f"<p>{html.escape(repr(self))}</p>", html_table(["step"] + metrics, rows)]
        if evals:
            last = evals[-1]
            if "smc_lower" in last:
                se = last.get("smc_lower_se", float("nan"))
                parts.append(f"<p><b>log Z ≥ {last['smc_lower']:.4f} ± {se:.4f}</b> <small>(SMC with the "
                             f"learned proposal at step {last['step']}; ± one standard error)</small></p>")
            keys = [k for k in last if k != "step"]
            parts.append(html_table(["step"] + keys, [[str(e["step"])] + [f"{e[k]:.4g}" if isinstance(e.get(k), float)
                                                                          else str(e.get(k)) for k in keys]
                                                      for e in evals[-5:]]))
        parts.append(inline_figure(self.plot))
        return "<div>" + "".join(parts) + "</div>"
