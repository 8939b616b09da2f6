"""Language models behind one functional, batched interface.

>>> import jax
>>> from genppl import models
>>> lm = models.load()                      # the bundled default model (or models.load("path/to/hf-dir"))
>>> state = lm.prefill(lm.tokenizer.encode("S:"), n=8, max_new_tokens=16)
>>> lm.logits(state).shape[0]
8
"""

from pathlib import Path

from .interface import InputError, LanguageModel, LMState
from .lora import LoRA, GuidedLM, TabularAdapter, TabularTwist, TwistHead
from .sampling import Processing, Samples, process_logits, sample
from .tabular import TabularLM
from .tokenizer import CharTokenizer, Tokenizer

BUNDLED = Path(__file__).parent / "bundled"


def bundled_path() -> Path:
    """Directory of the bundled default checkpoint (Hugging Face format)."""
    return BUNDLED


def load(path=None, dtype="float32"):
    """Load a local Hugging Face checkpoint directory (default: the bundled model)."""
    from .transformer import TransformerLM  # imports the architectures only when needed

    return TransformerLM.from_pretrained(BUNDLED if path is None else path, dtype=dtype)


__all__ = [
    "InputError", "LanguageModel", "LMState", "Processing", "Samples", "TabularLM", "Tokenizer",
    "CharTokenizer", "bundled_path", "load", "process_logits", "sample",
]
__all__ += ["GuidedLM", "LoRA", "TabularAdapter", "TabularTwist", "TwistHead"]
