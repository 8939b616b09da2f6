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
# # Circuit guidance: an HMM plans ahead for a keyword constraint
#
# Target: $\pi(x) \propto p(x \mid \text{"S:"})\,\mathbf 1[x \text{ uses every keyword}]$.
# A mask (the keyword DFA) only knows which tokens keep the constraint *possible*; the
# HMM × DFA guide (`circuits.HMMGuide`) weights each next token by
# $p_{\text{HMM}}(\text{all keywords appear by the end} \mid \text{prefix}, \text{token})$,
# computed exactly in the tractable HMM, so the particles plan ahead. The HMM is distilled
# from the model first (samples, clustering of next-token distributions, EM).

# %%
import jax
import numpy as np

from genppl import circuits, models, ppl, viz
from genppl.inference import smc
from genppl.tasks import sentences

lm = models.load()
prompt = [lm.eos_id] + lm.tokenizer.encode(sentences.prompt_text())
keywords = ["dog", "ball"]
T = 16

# %%
hmm, info = circuits.distill_hmm(lm, prompt, 16, num_samples=256, max_new_tokens=T, key=jax.random.key(0),
                                 em_epochs=5)
em = viz.History({"step": i + 1, "loss": -ll} for i, ll in enumerate(info["em_log_likelihood"]))
em.plot()   # EM: negative mean log-likelihood per sentence

# %%
tdfa = circuits.constraint_dfa(lm, keywords=keywords)
results = {}
for name, potential in (("DFA mask", ppl.DFAPotential(tdfa)), ("HMM guide", circuits.HMMGuide(hmm, tdfa, T))):
    results[name] = smc.run(ppl.Program(lm, prompt, T, potential=potential), 16, key=1)
    r = results[name]
    ok = np.mean([sentences.satisfies_keywords(t, keywords) for t, w in zip(r.texts, r.weights) if w > 0] or [0])
    print(f"{name:10s} log Z = {r.log_z:8.3f} ± {r.log_z_sd:.3f}  final ESS {r.final_ess:5.1f}  live satisfy {ok:.2f}")

# %%
results["HMM guide"]

# %%
results["DFA mask"].figure("genealogy")
