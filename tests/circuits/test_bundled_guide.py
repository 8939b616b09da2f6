"""The HMM guide on the bundled model: every finished sentence uses the keywords, and SMC with
the guide keeps a higher ESS than SMC with the DFA mask alone (same particles, same seeds)."""

import jax
import numpy as np
import pytest

from genppl import circuits, models, ppl
from genppl.inference import smc
from genppl.tasks import sentences

KEYWORDS = ("dog", "ball", "park")
T = 24


@pytest.mark.slow
def test_guided_smc_satisfies_keywords_and_beats_the_mask_alone():
    lm = models.load()
    tok = lm.tokenizer
    prompt = [tok.bos_id if tok.bos_id is not None else lm.eos_id] + tok.encode(sentences.prompt_text())
    hmm, info = circuits.distill_hmm(lm, prompt, 32, num_samples=2048, max_new_tokens=T,
                                     key=jax.random.key(0), em_epochs=4)
    assert np.all(np.diff(info["em_log_likelihood"]) > -1e-3)
    tdfa = circuits.constraint_dfa(lm, keywords=KEYWORDS)
    guided = ppl.Program(lm, prompt, T, potential=circuits.HMMGuide(hmm, tdfa, T))
    masked = ppl.Program(lm, prompt, T, potential=ppl.DFAPotential(tdfa))
    ess = {"guided": [], "masked": []}
    for seed in range(4):
        for name, program in (("guided", guided), ("masked", masked)):
            result = smc.run(program, 32, jax.random.key(seed))
            ess[name].append(result.final_ess)
            if name == "guided":
                assert result.message is None, result.message
                live = [t for t, w in zip(result.texts, result.weights) if w > 0]
                assert live and all(sentences.satisfies_keywords(t, KEYWORDS) for t in live), live
                finished = [t for t, e in zip(result.texts, result.log_weights) if np.isfinite(e)]
                assert all(sentences.satisfies_keywords(t, KEYWORDS) for t in finished)
    assert np.mean(ess["guided"]) > np.mean(ess["masked"]), ess
