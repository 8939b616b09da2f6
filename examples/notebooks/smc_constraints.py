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
# # SMC with constraints
#
# Hard constraints are potentials whose log weight is 0 or $-\infty$. `ppl.Regex` compiles a
# regular expression into a token-level automaton; `ppl.BannedStrings` rules out substrings.
# Target: $\pi(x) \propto p(x \mid \text{prompt})\,\mathbf 1[x \in C]$, and
# $Z = P_{\text{LM}}(x \in C)$.

# %%
import jax
import numpy as np

from genppl import models, ppl, viz
from genppl.inference import smc
from genppl.tasks import arithmetic

lm = models.load()
problem = arithmetic.eval_problems(1)[0]
prompt = [lm.eos_id] + lm.tokenizer.encode(arithmetic.prompt_text(problem))
print(arithmetic.prompt_text(problem))

# %% [markdown]
# ## A worked answer in a fixed format
# The pattern admits one to three equations, then the answer sentence. The weighted vote over
# the particles gives the answer.

# %%
pattern = r"( \d{1,3} [-+*] \d{1,3} = \d{1,3}\.){1,3} The answer is \d{1,3}\."
program = ppl.Program(lm, prompt, max_new_tokens=48, potential=ppl.Regex(pattern, lm))
result = smc.run(program, 16, key=0)
print("vote:", result.vote(arithmetic.extract_answer), "correct:", problem.answer)
result

# %% [markdown]
# ## Proposal matters: bootstrap against locally optimal
# Banning the letter "a" from a sentence. The bootstrap (prior) proposal lets particles walk
# into the constraint and die, so the weights degenerate and SMC resamples often; the locally
# optimal proposal $q \propto p \cdot \phi$ never proposes a banned token. Same target, same
# particles. (With the letter "e" banned, every bootstrap particle dies within 16 tokens:
# log Z = -inf, reported as a result, not an error.)

# %%
sentence = [lm.eos_id] + lm.tokenizer.encode("S:")
banned = ppl.Program(lm, sentence, max_new_tokens=16, potential=ppl.BannedStrings(["a", "A"], lm))
runs = {name: smc.run(banned, 32, key=1, proposal=proposal)
        for name, proposal in (("prior", ppl.proposals.prior()), ("locally optimal", ppl.proposals.locally_optimal()))}
for name, r in runs.items():
    print(f"{name:16s} log Z = {r.log_z:8.3f} ± {r.log_z_sd:.3f}   resamplings {r.num_resampling:2d}   final ESS {r.final_ess:5.1f}")

# %%
runs["prior"].figure("weights")

# %%
runs["locally optimal"].figure("genealogy")

# %% [markdown]
# ## Where did the constraint act?
# Per-token log-probabilities of the heaviest particle, coloured by the log of the next-token
# mass the constraint kept (0: the constraint removed nothing at that position).

# %%
from genppl.ppl import effects

r = runs["locally optimal"]
best = int(np.argmax(r.log_weights))
print(repr(r.texts[best]))
effects.token_effects(banned, r.token_ids[best]).figure()

# %% [markdown]
# The interactive genealogy of the same run (click a particle for its text and weight history):

# %%
r.genealogy()
