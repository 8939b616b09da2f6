# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Power sampling
#
# Sharpen the model without training: target $\pi(x) \propto p(x)^\alpha$ with $\alpha > 1$,
# which favours sequences that are likely *as a whole* (unlike low-temperature sampling,
# which sharpens each next-token distribution on its own). Two samplers of the same target:
#
# * blockwise Metropolis–Hastings (`mcmc.power_mcmc`): extend each chain by a block of tokens
#   from the proposal $p^{1/\alpha}$-tempered, then run MH moves that resample a suffix;
# * Power-SMC (`power.power_smc`): particles weighted by $p^{\alpha-1}$ per token, with the
#   locally optimal proposal, and an estimate of $Z = \sum_x p(x)^\alpha$.

# %%
import numpy as np

from genppl import models
from genppl.inference import mcmc, power
from genppl.tasks import arithmetic

lm = models.load()
problem = arithmetic.eval_problems(2)[1]
prompt = [lm.eos_id] + lm.tokenizer.encode(arithmetic.prompt_text(problem))
print(arithmetic.prompt_text(problem))

# %% [markdown]
# ## Blockwise MH
# The display shows the chains' texts and the MH diagnostics: acceptance per block and every
# chain's log target $\alpha \log p(x)$ after each move (MH has no log Z estimate).

# %%
chains = mcmc.power_mcmc(lm, prompt, n=8, max_new_tokens=48, key=0, alpha=4.0, block_size=16, num_mcmc=3)
chains

# %%
chains.figure()

# %% [markdown]
# ## Power-SMC
# Weighted particles for the same target, with log Z and the ESS trace.

# %%
particles = power.power_smc(lm, prompt, 16, 48, key=0, alpha=4.0)
particles

# %%
particles.figure("genealogy")

# %% [markdown]
# Both sharpen towards the model's most likely worked answer; compare with plain sampling:

# %%
plain = models.sample(lm, prompt, 16, 48, key=1)
for name, texts, w in (("plain", plain.texts, None), ("power MH", chains.texts, None),
                       ("Power-SMC", particles.texts, particles.weights)):
    answers = [arithmetic.extract_answer(t) for t in texts]
    w = np.full(len(texts), 1 / len(texts)) if w is None else w
    acc = float(sum(wi for a, wi in zip(answers, w) if a == problem.answer))
    print(f"{name:10s} weight on the correct answer ({problem.answer}): {acc:.2f}")
