"""TEMP shim (deleted once ppl/__init__ imports from .automata and .constraints)."""
from .automata import ByteDFA, TokenDFA, compile_regex, vocabulary  # noqa: F401
from .constraints import DFAPotential, Regex  # noqa: F401
