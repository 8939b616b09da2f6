"""Programs and potentials: what distribution over generations we want.

A target is ``pi(x) ∝ p_LM(x)^alpha * phi(x)``; a :class:`Program` bundles the LM, the prompt,
the potential ``phi`` and the proposal, and inference kernels run it.
"""

from . import proposals
from .constraints import BannedTokens, MaxLength, MinLength, TokenMask
from .potential import Potential, Power, Product
from .program import Program, ProgramState, where_rows

__all__ = [
    "BannedTokens", "MaxLength", "MinLength", "Potential", "Power", "Product", "Program",
    "ProgramState", "TokenMask", "proposals", "where_rows",
]

# sequence-level scorers, twists, and effect-handler programs
from .handlers import (EffectProgram, HandlerPotential, NextToken, StepContext, condition, factor,
                       observe, sample)
from .scorers import FinalReward, HostScorer, SequenceScorer, StepReward, StepVerifier, Twist

__all__ += [
    "EffectProgram", "FinalReward", "HandlerPotential", "HostScorer", "NextToken", "SequenceScorer", "StepContext",
    "StepReward", "StepVerifier", "Twist", "condition", "factor", "observe", "sample",
]

# hard constraints (regexes and strings compiled to token tables) and the automata behind them
from . import automata
from .constraints import BannedStrings, DFAPotential, Regex, StopStrings, TruncatedLM

__all__ += ["BannedStrings", "DFAPotential", "Regex", "StopStrings", "TruncatedLM", "automata"]

# many prompts in one compiled call: programs stacked on a leading prompt axis
from .batch import map_prompts, prompt_keys, stack, unstack

__all__ += ["map_prompts", "prompt_keys", "stack", "unstack"]
# structured generation: context-free grammars (Lark EBNF) and JSON Schema, lowered to token DFAs
from .grammar import Grammar
from .jsonschema import JSONSchema

__all__ += ["Grammar", "JSONSchema"]

# a trained process reward model (models.ProcessRewardModel) as a step reward, on device
from .prm import PRMFinalReward, PRMReward

__all__ += ["PRMFinalReward", "PRMReward"]
