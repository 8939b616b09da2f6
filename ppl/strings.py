"""TEMP shim (deleted once ppl/__init__ imports from .automata and .constraints)."""
from .automata import substring_dfa  # noqa: F401
from .constraints import BannedStrings, StopStrings  # noqa: F401
