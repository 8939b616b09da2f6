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
# # A tour of genppl
#
# Generation is a **state-space program**: particles are partial generations, a transition
# adds a token, potentials weight the result. This notebook runs the main pieces on the
# bundled model (a small transformer trained on arithmetic word problems and short sentences):
# plain sampling, SMC under a constraint, the pictures of what the sampler did, and a run
# record that replays bit for bit.

# %%
import jax
import numpy as np

from genppl import inference, models, ppl, viz
from genppl.inference import smc

lm = models.load()                                        # the bundled model
prompt = [lm.eos_id] + lm.tokenizer.encode("S:")          # BOS (= EOS) + the sentence prompt

# %% [markdown]
# ## Plain sampling
# `models.sample` draws continuations; the notebook display is a table of texts with their
# log-probabilities and a picture of their spread. Unweighted samples have no log Z.

# %%
samples = models.sample(lm, prompt, n=8, max_new_tokens=16, key=0)
samples

# %% [markdown]
# ## SMC under a constraint
# Target: $\pi(x) \propto p(x)\,\mathbf 1[x \text{ has no letter e}]$. SMC with the locally
# optimal proposal keeps every particle inside the constraint; the weights correct for what
# the constraint removed, and their mean estimates $Z = P(\text{no e})$. The display shows the
# weighted texts, log Z with its uncertainty (estimated from this one run's genealogy) and the
# ESS and log-weight traces.

# %%
program = ppl.Program(lm, prompt, max_new_tokens=16, potential=ppl.BannedStrings(["e", "E"], lm))
result = smc.run(program, 16, key=0)
assert all("e" not in t.lower() for t, w in zip(result.texts, result.weights) if w > 0)
result

# %% [markdown]
# ## What the sampler did
# The genealogy: each particle is joined to its parent; shaded steps resampled; dark lineages
# reach the final weighted particles.

# %%
result.figure("genealogy")

# %% [markdown]
# The same genealogy as an interactive tree: click a node to open its descendants, and a
# particle to see its text and its weight history.

# %%
result.genealogy()

# %% [markdown]
# Which tokens did the constraint act on? Walk the heaviest text through the program: bars are
# $\log p(x_t \mid x_{<t})$, colours the log of the next-token mass the constraint kept.

# %%
from genppl.ppl import effects

best = int(np.argmax(result.log_weights))
effects.token_effects(program, result.token_ids[best]).figure()

# %% [markdown]
# ## Run records
# `result.save(path)` writes the configuration, the key, the package versions, the
# checkpoint's hash, the per-step ancestors, weights and ESS, and the texts;
# `inference.replay` reruns it and checks that the output is bit-identical. A record made with
# other versions or another checkpoint is refused with a message naming the difference.

# %%
import tempfile
from pathlib import Path

path = Path(tempfile.mkdtemp()) / "tour.npz"
result.save(path)
record = inference.load(path)
again = inference.replay(record, program=program)
print(record)
print("replayed: identical log Z", again.log_z == result.log_z)

# %%
record.versions["jax"] = "0.0.0"
try:
    inference.replay(record, program=program)
except inference.records.RecordError as err:
    print("refused:", err)

# %% [markdown]
# From the command line, `genppl --method smc --ban e --task sentences --record run.npz`
# writes a record that replays by itself: `inference.replay("run.npz")`.
