"""A trained process reward model (:class:`models.ProcessRewardModel`) as a potential, on device.

The PRM reads the particle's tokens (prompt with the question, then the partial solution)
with the policy's tokenizer and gives r(x_<=k) in (0, 1) at the end of each step (the last
token before the boundary; a trailing EOS is skipped, so the finished text is scored on its
last real token). It runs inside the compiled sweep (no host round trip) and keeps its own
state per particle, a KV cache like the policy's: each boundary reads only the tokens since
the last one (``models.ProcessRewardModel.catch_up``), so scoring all K steps of a solution
costs one pass over it instead of K passes over the whole buffer. The state doubles the
particles' cache memory. Its weights are the potential's data: two programs with PRMs of one
shape share one compiled sweep.

* :class:`PRMReward`: pi(x) ∝ p(x) * prod_k r(x_<=k)^beta, each step's reward a likelihood
  (step-level particle filtering, Puri et al. 2025); every boundary adds beta log r(x_<=k).
* :class:`PRMFinalReward`: pi(x) ∝ p(x) * r(x)^beta, the partial rewards a twist: boundary k
  adds beta (log r(x_<=k) - log r(x_<=k-1)) with r of the empty prefix taken as 1, which
  telescopes to beta log r(x) on a finished sequence.

As for :class:`ppl.StepReward`, a sequence that ends with a step's last token and then EOS
adds nothing at the EOS (its text is the last step's), and a particle at -inf stays there.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models.interface import InputError
from genppl.models.prm import ProcessRewardModel

from .scorers import FinalReward, StepReward, content_length

__all__ = ["PRMReward", "PRMFinalReward"]


class _DevicePRM:
    """What both PRM potentials share: validation, and log r on device."""

    on_host = False
    data_fields = ("prm",)

    def _setup(self, prm, tokenizer, beta):
        if not isinstance(prm, ProcessRewardModel):
            raise InputError(f"a PRM potential needs a models.ProcessRewardModel (models.load_prm()), "
                             f"got {type(prm).__name__}")
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 < beta < np.inf:
            raise InputError(f"beta must be a positive number, got {beta!r}")
        eos_id = getattr(tokenizer, "eos_id", None)
        if eos_id is None:
            raise InputError("a PRM potential needs the policy's tokenizer with its eos_id (e.g. lm.tokenizer)")
        theirs, ours = getattr(prm.tokenizer, "token_bytes", None), getattr(tokenizer, "token_bytes", None)
        if theirs is not None and ours is not None and list(theirs) != list(ours):
            raise InputError("the PRM was trained on another tokenizer than the policy's: it reads the policy's "
                             "token ids directly, so use the PRM trained for this policy (models.load_prm() "
                             "goes with models.load('reasoner'))")
        vocab = getattr(tokenizer, "vocab_size", None)
        if vocab is not None and vocab > prm.vocab_size:
            raise InputError(f"the policy's vocabulary ({vocab}) is larger than the PRM's ({prm.vocab_size}): "
                             "use the PRM trained for this policy")
        self.every_step = True
        self.prm, self.beta, self.eos_id = prm, float(beta), int(eos_id)

    # The PRM keeps its own state per particle (a KV cache over the buffer, the tokens read so
    # far, the likelihood features' running values): each boundary reads only the tokens
    # generated since the last one (models.ProcessRewardModel.catch_up), not the whole buffer.
    def init(self, lm_state):
        tokens = lm_state.tokens
        if tokens.shape[1] > self.prm.max_length:
            raise InputError(f"the program's buffer holds {tokens.shape[1]} tokens (prompt + max_new_tokens) but "
                             f"the PRM reads at most {self.prm.max_length}: lower max_new_tokens")
        return {"base": super().init(lm_state),
                "prm": self.prm.start(tokens[0], lm_state.prompt_length[0], tokens.shape[0])}

    def logw_boundary(self, pstate, lm_state, at_boundary, final):
        content = jnp.maximum(content_length(lm_state, self.eos_id), 1)
        prm = self.prm.catch_up(pstate["prm"], lm_state.tokens, content)
        scores = self.beta * jax.nn.log_sigmoid(prm["value"])
        # the scorer's bookkeeping (StepReward's or FinalReward's) around these values
        base, inc = self._account(pstate["base"], lm_state, at_boundary, final, lambda rows: scores)
        return {"base": base, "prm": prm}, inc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prm!r}, beta={self.beta:g})"


class PRMReward(_DevicePRM, StepReward):
    """pi(x) ∝ p(x) * prod_k r(x_<=k)^beta with r a :class:`models.ProcessRewardModel`
    evaluated on device at every step boundary (see the module docstring).

    prm: the reward model; tokenizer: the policy's (``lm.tokenizer``: its EOS, and the check
    that the PRM reads the same token ids); beta > 0 sharpens (beta > 1) or flattens the reward.

    >>> from genppl import models, ppl                                   # doctest: +SKIP
    >>> lm, prm = models.load("reasoner"), models.load_prm()             # doctest: +SKIP
    >>> reward = ppl.PRMReward(prm, lm.tokenizer, beta=2.0)              # doctest: +SKIP
    """

    def __init__(self, prm, tokenizer, beta: float = 1.0):
        self._setup(prm, tokenizer, beta)


class PRMFinalReward(_DevicePRM, FinalReward):
    """pi(x) ∝ p(x) * r(x)^beta with the PRM's partial rewards as a twist (see the module
    docstring); arguments as :class:`PRMReward`. With the prior proposal, the importance
    weight of a finished sample is beta log r(x): best-of-N by the PRM is
    ``search.best_of_n(program)`` on a program with this potential."""

    def __init__(self, prm, tokenizer, beta: float = 1.0):
        self._setup(prm, tokenizer, beta)
