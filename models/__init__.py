"""Language models behind one functional, batched interface.

>>> import jax
>>> from genppl import models
>>> lm = models.load()                      # the bundled default model (or models.load("path/to/hf-dir"))
>>> state = lm.prefill(lm.tokenizer.encode("S:"), n=8, max_new_tokens=16)
>>> lm.logits(state).shape[0]
8
"""

from pathlib import Path

from . import chat
from .interface import InputError, LanguageModel, LMState, NonFiniteLogitsError, as_key, nonfinite_rows
from .lora import LoRA, GuidedLM, TabularAdapter, TabularTwist, TwistHead
from .sampling import Processing, Samples, categorical, process_logits, sample
from .tabular import TabularLM
from .tokenizer import CharTokenizer, Tokenizer

BUNDLED = Path(__file__).parent / "bundled"


def bundled_path() -> Path:
    """Directory of the bundled default checkpoint (Hugging Face format)."""
    return BUNDLED


def load(path=None, dtype="float32", eos_id=None, mesh=None):
    """Load a local Hugging Face checkpoint directory (default: the bundled model).

    ``eos_id`` overrides the EOS token the files name (needed when they name none). Every
    fault in the directory raises one :class:`~models.architectures.CheckpointError` (an
    :class:`InputError`) naming the file and what to do; see ``TransformerLM.from_pretrained``.
    ``mesh`` (a ``genppl.distributed.make_mesh`` mesh, or a number of devices): the weights are
    placed on it, split over its model axis (tensor parallelism) and replicated over its data
    axis (``genppl.distributed.place_model``).
    """
    from .transformer import TransformerLM  # imports the architectures only when needed

    lm = TransformerLM.from_pretrained(BUNDLED if path is None else path, dtype=dtype, eos_id=eos_id)
    if mesh is None:
        return lm
    from genppl import distributed  # imported here: genppl.distributed builds on this package

    return distributed.place_model(lm, distributed.as_mesh(mesh))


__all__ = [
    "InputError", "LanguageModel", "LMState", "NonFiniteLogitsError", "Processing", "Samples", "TabularLM", "Tokenizer",
    "CharTokenizer", "as_key", "bundled_path", "categorical", "load", "nonfinite_rows", "process_logits", "sample",
]
__all__ += ["chat"]
__all__ += ["GuidedLM", "LoRA", "TabularAdapter", "TabularTwist", "TwistHead"]

# many prompts per call: a batch of prompts in, one result per prompt out
from . import batch
from .batch import Batch

__all__ += ["Batch", "batch"]
