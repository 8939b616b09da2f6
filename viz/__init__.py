"""Pictures and notebook displays of inference runs: figures, HTML tables, genealogies.

A leaf package: it imports nothing else of genppl and works on any results object that
follows a small protocol (duck typing), so new kernels' results get every view for free:

* weighted results: ``texts`` (list of str), ``log_weights`` [n], ``log_z`` (float); and,
  when the kernel is sequential, ``ess`` [T], ``resampled`` [T], ``ancestors`` [T, n]
  (``ancestors[t, i]``: the index, among the particles after step t-1, of the parent of
  particle i after step t) and ``step_log_weights`` [T, n] (the log-weights after each step);
* MCMC results: ``texts``, ``trace_accepted`` and ``trace_log_target`` [blocks, steps, n];
* training histories: a list of per-step dicts with ``step``, ``loss`` and metrics (see
  :class:`History`).

Figures (:mod:`.figures`) are matplotlib ``Figure`` objects built without pyplot (no global
figure state), imported lazily: ``import genppl`` works without matplotlib, and a figure
function without it raises an ImportError that says what to install.

>>> import numpy as np
>>> from genppl import viz
>>> viz.eve_indices(np.array([[0, 0, 2], [1, 1, 0]]))   # two steps, three particles
array([0, 0, 0])
"""

from . import figures
from .display import html_table, results_html, samples_html
from .genealogy import GenealogyView, genealogy_view
from .history import History
from .lineage import eve_indices, log_z_uncertainty, lineage, surviving

__all__ = ["GenealogyView", "History", "eve_indices", "figures", "genealogy_view", "html_table",
           "lineage", "log_z_uncertainty", "results_html", "samples_html", "surviving"]
