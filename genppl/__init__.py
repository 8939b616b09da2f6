"""genppl: probabilistic programming for inference over language-model generations, on JAX.

The installed package maps the repository's top-level folders into one namespace::

    from genppl import models, ppl, inference, circuits   # and genppl.tasks, genppl.cli, genppl.viz

Subpackages load on first use, so ``import genppl`` alone is cheap.
"""

import importlib

__version__ = "0.2.0"
__all__ = ["circuits", "cli", "distributed", "inference", "models", "ppl", "tasks", "viz"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'genppl' has no attribute {name!r}")
