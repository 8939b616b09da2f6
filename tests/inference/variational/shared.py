"""Programs and guides shared by the variational tests (built once per session).

Target pi ∝ p^2 (power sampling) on a random tabular LM: every prefix may end, so every
objective applies; BANNED adds a hard constraint, for the locally optimal base.
"""

import jax
import jax.numpy as jnp

from genppl import models, ppl
from genppl.inference import variational


def tabular(seed=0, vocab=4, cap=3):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=vocab, max_len=cap, eos_boost=0.5)


LM = tabular()
POWER = ppl.Program(LM, [1], 3, alpha=2.0)
EXACT = variational.exact_batch(POWER)
LM_GUIDE = variational.Guide(proposal=models.TabularAdapter(LM), log_q=variational.adapted_lm)  # q starts as p
BANNED = ppl.Program(LM, [1], 3, alpha=2.0, potential=ppl.BannedTokens([2]))
TARGET_GUIDE = variational.Guide(proposal=models.TabularAdapter(LM))  # q starts locally optimal
GUIDE_BOTH = variational.Guide(proposal=models.TabularAdapter(LM), twist=models.TabularTwist(LM))

# gradients and the trainer: a smaller model
TINY = tabular(1, vocab=3, cap=2)
TINY_PROGRAM = ppl.Program(TINY, [1], 2, alpha=2.0)
TINY_EXACT = variational.exact_batch(TINY_PROGRAM)
TINY_GUIDE = variational.Guide(proposal=models.TabularAdapter(TINY), log_q=variational.adapted_lm)
TINY_TWIST = variational.Guide(twist=models.TabularTwist(TINY))


def random_guide_params(seed=3):
    return jax.tree.map(lambda x: 0.3 * jax.random.normal(jax.random.key(seed), x.shape),
                        GUIDE_BOTH.init(jax.random.key(0)))


def random_params(objective, seed=3):
    params = objective.init(jax.random.key(0))
    return jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.key(seed), jnp.shape(x)), params)


def train(objective, program, steps, lr=0.05, batch=None, seed=0, **options):
    import optax

    trainer = variational.Trainer(objective, optax.adam(lr), program, batch=batch)
    return trainer.fit(trainer.init(seed), steps, progress=False, **options)
