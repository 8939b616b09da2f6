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
# # The reward particle filter
#
# Step-level particle filtering: a transition generates tokens up to a delimiter (". " ends
# one equation of a worked answer), then a reward model scores the partial solution.
# Target: $\pi(x) \propto p(x) \prod_k r(x_{\le k})^\beta$. Here the reward is the
# arithmetic task's step checker, `tasks.arithmetic.step_reward`: the share of the written
# equations that hold, smoothed into (0, 1).

# %%
import jax
import numpy as np

from genppl import models
from genppl.inference import smc
from genppl.tasks import arithmetic

lm = models.load()
problem = arithmetic.eval_problems(3)[2]
prompt = [lm.eos_id] + lm.tokenizer.encode(arithmetic.prompt_text(problem))
print(arithmetic.prompt_text(problem))

# %%
result = smc.reward_particle_filter(lm, prompt, arithmetic.step_reward, 16, key=0, max_new_tokens=64,
                                    step_delimiter=". ", beta=4.0)
print("weighted vote:", result.vote(arithmetic.extract_answer), "correct:", problem.answer)
result

# %% [markdown]
# Each SMC step is one reasoning step. The genealogy shows where the reward pruned lines of
# reasoning (grey lineages died at resampling).

# %%
result.figure("genealogy")

# %%
result.genealogy()

# %% [markdown]
# The filter against plain sampling with the same number of samples: accuracy of the
# (weighted) answers.

# %%
plain = models.sample(lm, prompt, 16, 64, key=0)
plain_acc = np.mean([arithmetic.extract_answer(t) == problem.answer for t in plain.texts])
pf_acc = sum(w for a, w in result.vote(arithmetic.extract_answer).items() if a == problem.answer)
print(f"plain sampling: {plain_acc:.2f} of samples correct; particle filter: {pf_acc:.2f} of the weight on the correct answer")
