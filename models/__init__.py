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


#: Bundled checkpoints by name: the default model, the second policy trained on the harder
#: task (``tasks.chains``), and the process reward model trained on its rollouts.
BUNDLED_MODELS = {"default": BUNDLED, "reasoner": Path(__file__).parent / "bundled-reasoner",
                  "prm": Path(__file__).parent / "bundled-prm"}


def bundled_path(name: str = "default") -> Path:
    """Directory of a bundled checkpoint (Hugging Face format): ``"default"``, ``"reasoner"``
    or ``"prm"``."""
    if name not in BUNDLED_MODELS:
        raise InputError(f"no bundled model {name!r}: choose one of {sorted(BUNDLED_MODELS)}")
    return BUNDLED_MODELS[name]


def load(path=None, dtype="float32", eos_id=None, mesh=None):
    """Load a local Hugging Face checkpoint directory (default: the bundled model;
    ``"reasoner"`` names the second bundled model, trained on ``tasks.chains``).

    ``dtype``: ``"float32"`` (default) or ``"bfloat16"``: bfloat16 weights and activations,
    products accumulated in float32 and log-probabilities in float32; on a CPU the KV caches
    stay float32 (``architectures.cache_storage_dtype``). On the 2-core CI machine bfloat16
    decodes 1.2-1.4x faster than float32 at 16 to 256 particles and equally fast at one
    (benchmarks/RESULTS.md, "bfloat16 on a CPU").

    ``eos_id`` overrides the EOS token the files name (needed when they name none). Every
    fault in the directory raises one :class:`~models.architectures.CheckpointError` (an
    :class:`InputError`) naming the file and what to do; see ``TransformerLM.from_pretrained``.
    ``mesh`` (a ``genppl.distributed.make_mesh`` mesh, or a number of devices): the weights are
    placed on it, split over its model axis (tensor parallelism) and replicated over its data
    axis (``genppl.distributed.place_model``).
    """
    from .transformer import TransformerLM  # imports the architectures only when needed

    if path is None:
        path = BUNDLED
    elif isinstance(path, str) and path in ("default", "reasoner") and not Path(path).exists():
        path = BUNDLED_MODELS[path]  # a bundled model by name (a local directory of that name wins)
    lm = TransformerLM.from_pretrained(path, dtype=dtype, eos_id=eos_id)
    if mesh is None:
        return lm
    from genppl import distributed  # imported here: genppl.distributed builds on this package

    return distributed.place_model(lm, distributed.as_mesh(mesh))


def load_prm(path=None):
    """Load a process reward model (:class:`ProcessRewardModel`, a ``LlamaForTokenClassification``
    checkpoint with one label); default: the bundled PRM of the ``"reasoner"`` model."""
    from .prm import ProcessRewardModel

    return ProcessRewardModel.from_pretrained(BUNDLED_MODELS["prm"] if path is None else path)


__all__ = [
    "InputError", "LanguageModel", "LMState", "NonFiniteLogitsError", "Processing", "Samples", "TabularLM", "Tokenizer",
    "CharTokenizer", "as_key", "bundled_path", "categorical", "load", "nonfinite_rows", "process_logits", "sample",
]
__all__ += ["chat", "load_prm", "BUNDLED_MODELS"]
__all__ += ["GuidedLM", "LoRA", "TabularAdapter", "TabularTwist", "TwistHead"]

# many prompts per call: a batch of prompts in, one result per prompt out
from . import batch
from .batch import Batch

__all__ += ["Batch", "batch"]

# a process reward model (a value head on a small decoder), for ppl.PRMReward
from .prm import ProcessRewardModel

__all__ += ["ProcessRewardModel"]
