"""Fault injection for tests: a language model whose logits turn NaN or infinite at a chosen
generation step for a chosen particle (the model is otherwise the wrapped one).

>>> import jax
>>> from genppl import models
>>> base = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=4)
>>> bad = FaultyLM(base, step=2, particle=1, prompt_length=1)
>>> bool(models.nonfinite_rows(bad.prefill([1], 3, 4).logits).any())
False
"""

import jax
import jax.numpy as jnp

from genppl.models.interface import LanguageModel

_VALUES = {"nan": jnp.nan, "inf": jnp.inf, "-inf": -jnp.inf}


@jax.tree_util.register_pytree_node_class
class FaultyLM(LanguageModel):
    """``base`` with the next-token logits of particle ``particle`` set to ``value`` ("nan",
    "inf" or "-inf": every entry) after ``step`` generated tokens (step 0: after the prompt,
    which must have ``prompt_length`` tokens). ``particle=None`` hits every particle."""

    def __init__(self, base, step: int, particle: int | None, prompt_length: int, value: str = "nan"):
        self.base, self.step, self.particle = base, int(step), particle
        self.prompt_length, self.value = int(prompt_length), value
        self.vocab_size, self.eos_id = base.vocab_size, base.eos_id
        self.tokenizer, self.max_length = base.tokenizer, base.max_length

    def tree_flatten(self):
        return (self.base,), (self.step, self.particle, self.prompt_length, self.value)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    def _initial(self, prompt, prompt_length, capacity):
        logits, cache = self.base._initial(prompt, prompt_length, capacity)
        if self.step == 0:  # one prompt for every particle: the fault hits them all
            logits = jnp.full_like(logits, _VALUES[self.value])
        return logits, cache

    def _forward(self, cache, tokens, positions, mask):
        logits, cache = self.base._forward(cache, tokens, positions, mask)
        rows = jnp.arange(tokens.shape[0])[:, None]
        # logits after the token at position prompt_length + s - 1 are those of step s
        hit = positions == self.prompt_length + self.step - 1
        if self.particle is not None:
            hit = hit & (rows == self.particle)
        return jnp.where(hit[..., None], _VALUES[self.value], logits), cache
