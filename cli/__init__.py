"""The ``genppl`` command (entry point :func:`genppl.cli.main.main`), one job per module:

* :mod:`.config` — argument parsing and the frozen :class:`~.config.RunConfig` (defaults
  resolved and every value checked once; the only place where names map to library
  functions: resamplers, proposals, MH moves);
* :mod:`.methods` — the method table ``METHODS``: name -> a small function calling the
  library's public function (``models.sample``, ``inference.smc.run``,
  ``inference.smc.reward_particle_filter``, ``inference.mcmc.power_mcmc``,
  ``inference.power.power_smc`` / ``power_rollout``), and the per-run :class:`~.methods.Session`;
* :mod:`.main` — runs the method over the task's prompts, scores them with ``tasks``, prints
  the summary; errors are one line ``genppl: error: ...`` with exit code 2.
"""
