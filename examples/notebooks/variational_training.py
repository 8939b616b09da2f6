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
# # Variational training of a proposal
#
# Amortise a constraint: learn a LoRA adapter on the model so that its proposal matches the
# target $\pi(x) \propto p(x)\,\mathbf 1[\text{no letter e}]$, trained with trajectory balance
# (the squared residual of $\log Z_\theta + \log q(x) - \log \tilde\pi(x)$, i.e. the variance of
# the importance weights). The target does not change: SMC with the learned proposal estimates
# the same log Z with more even weights. `Trainer.fit` shows a progress bar per training step
# and returns a `History` whose display has the loss and the evaluations' ESS.

# %%
import jax
import numpy as np
import optax

from genppl import models, ppl
from genppl.inference import smc, variational

lm = models.load()
prompt = [lm.eos_id] + lm.tokenizer.encode("S:")
program = ppl.Program(lm, prompt, 10, potential=ppl.BannedStrings(["e", "E"], lm))
guide = variational.Guide(proposal=models.LoRA(lm, rank=4))
trainer = variational.Trainer(variational.trajectory_balance(guide, 8), optax.adam(1e-2), program)
params = trainer.objective.init(jax.random.key(0))

# %% [markdown]
# The baseline: SMC with the locally optimal proposal (it never proposes an "e", but the
# weights spread). Its log Z estimate also starts TB's $\log Z_\theta$.

# %%
baseline = smc.run(program, 16, key=4)
params["log_z"] = np.float32(baseline.log_z)
baseline

# %%
state, history = trainer.fit(trainer.init(0, params), 8, eval_every=4, eval_particles=8, eval_runs=2)
history

# %% [markdown]
# The SMC run with the learned proposal: same target; compare the ESS trace and log Z with
# the baseline's.

# %%
learned = guide.program(state.params["guide"], program)
result = smc.run(learned, 16, key=3, proposal=guide.proposal_fn)
assert all("e" not in t.lower() for t in result.texts)
result

# %%
history.plot()
