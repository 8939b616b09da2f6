"""An interactive view of a particle genealogy: a tree of collapsible HTML ``<details>``
nodes (no JavaScript, no widget library: it works in Jupyter, VS Code and exported HTML).

Each branching point of the genealogy is a node; clicking it opens its children; clicking a
final particle shows its text, its weight, and its weight history (the normalised weight of
its ancestor after every step, as a table and a small line drawing).
:meth:`GenealogyView.treescope` renders the same tree with treescope when it is installed.
"""

from __future__ import annotations

import html

import numpy as np

from .figures import normalised
from .lineage import lineage, surviving

__all__ = ["GenealogyView", "genealogy_view"]


def genealogy_view(result) -> "GenealogyView":
    """The interactive genealogy of a sequential result (needs ``ancestors``; uses
    ``step_log_weights`` for the weight histories when present)."""
    return GenealogyView(result)


class GenealogyView:
    """Tree of a result's particle lineages; display it in a notebook (``_repr_html_``)."""

    def __init__(self, result):
        if getattr(result, "ancestors", None) is None:
            raise ValueError(f"{type(result).__name__} has no ancestors: the genealogy view needs a "
                             "sequential (SMC-like) result")
        self.ancestors = np.asarray(result.ancestors, np.int64)
        self.texts = list(result.texts)
        self.weights = normalised(result.log_weights)
        steps, n = self.ancestors.shape
        logw = getattr(result, "step_log_weights", None)
        self.step_weights = normalised(logw) if logw is not None else None
        self.lineage = lineage(self.ancestors)            # [T + 1, n]
        self.alive = surviving(self.ancestors)            # every final particle, weighted or not

    # ---- the tree -----------------------------------------------------------------------
    def history(self, i: int) -> np.ndarray | None:
        """[T] normalised weight of final particle i's ancestor after each step."""
        if self.step_weights is None:
            return None
        steps = self.ancestors.shape[0]
        return self.step_weights[np.arange(steps), self.lineage[1:, i]]

    def children(self, t: int, slot: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.alive[t + 1] & (self.ancestors[t] == slot))]

    def node(self, t: int, slot: int) -> dict:
        """{"step", "first", "slot", "until", "children" | "particle"}: from slot ``first``
        after step ``step`` down to slot ``slot`` after step ``until``, where it branches;
        chains without branching are collapsed into one node."""
        steps = self.ancestors.shape[0]
        start, first = t, slot
        kids = self.children(t, slot) if t < steps else []
        while t < steps and len(kids) == 1:
            t, slot = t + 1, kids[0]
            kids = self.children(t, slot) if t < steps else []
        if t == steps:
            return {"step": start, "first": first, "until": t, "particle": slot}
        return {"step": start, "first": first, "until": t, "slot": slot,
                "children": [self.node(t + 1, k) for k in kids]}

    def tree(self) -> list[dict]:
        roots = np.flatnonzero(self.alive[0])
        return [self.node(0, int(r)) for r in roots]

    # ---- HTML ---------------------------------------------------------------------------
    def leaves(self, node) -> list[int]:
        if "particle" in node:
            return [node["particle"]]
        return [p for c in node["children"] for p in self.leaves(c)]

    def sparkline(self, values) -> str:
        v = np.asarray(values, np.float64)
        if v.size < 2:
            return ""
        x = np.linspace(2, 158, v.size)
        y = 28 - 26 * np.clip(v, 0, None) / max(float(np.nanmax(v)), 1e-12)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, np.nan_to_num(y, nan=28.0)))
        return (f"<svg width='160' height='30' style='vertical-align:middle'><polyline points='{pts}' "
                "fill='none' stroke='steelblue' stroke-width='1.5'/></svg>")

    def particle_html(self, i: int) -> str:
        hist = self.history(i)
        rows = ""
        if hist is not None:
            rows = ("<br/>weight history (normalised weight of its ancestor after each step): "
                    f"{self.sparkline(hist)}<br/><small><code>"
                    + " ".join(f"{w:.3g}" for w in hist) + "</code></small>")
        slots = " → ".join(str(s) for s in self.lineage[:, i])
        return (f"<details style='margin-left:1em'><summary>particle {i}: weight {self.weights[i]:.3f}"
                f"</summary><div style='margin-left:1em'><code>{html.escape(self.texts[i])}</code>"
                f"<br/><small>lineage (slot after each step): {slots}</small>{rows}</div></details>")

    def node_html(self, node) -> str:
        if "particle" in node:
            return self.particle_html(node["particle"])
        leaves = self.leaves(node)
        mass = float(self.weights[leaves].sum())
        inner = "".join(self.node_html(c) for c in node["children"])
        return (f"<details style='margin-left:1em'><summary>slot {node['slot']} (steps {node['step']}–"
                f"{node['until']}): {len(leaves)} descendants, weight {mass:.3f}</summary>{inner}</details>")

    def _repr_html_(self) -> str:
        roots = self.tree()
        steps, n = self.ancestors.shape
        head = (f"<p>genealogy: {n} particles, {steps} steps, {len(roots)} of {n} initial particles "
                "have descendants at the end (click a node to open it, a particle to see its text "
                "and weight history)</p>")
        return "<div>" + head + "".join(self.node_html(r) for r in roots) + "</div>"

    def __repr__(self) -> str:
        steps, n = self.ancestors.shape
        return f"<GenealogyView {n} particles, {steps} steps, {len(self.tree())} surviving roots>"

    def as_dicts(self) -> list[dict]:
        """The tree as nested plain dicts (what :meth:`treescope` renders)."""

        def plain(node):
            if "particle" in node:
                i = node["particle"]
                hist = self.history(i)
                return {"particle": i, "weight": float(self.weights[i]), "text": self.texts[i],
                        "weight_history": None if hist is None else [float(w) for w in hist]}
            return {"slot": node["slot"], "steps": (node["step"], node["until"]),
                    "children": [plain(c) for c in node["children"]]}

        return [plain(r) for r in self.tree()]

    def treescope(self) -> str:
        """HTML of the tree rendered by treescope (``pip install treescope``): foldable nodes."""
        try:
            import treescope
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the treescope view needs treescope: pip install treescope") from err
        return treescope.render_to_html(self.as_dicts(), roundtrip_mode=False)
