"""The step-level reward particle filter targets the distribution it states."""

import math

import pytest

import numpy as np

from genppl import ppl
from genppl.inference import smc

from .enumeration import (CAP, EOS, assert_unbiased_measure, assert_unbiased_z, exact, random_lm, run_many)


def _step_texts(seq, lm):
    """Prefixes of seq at each step boundary (after each 'a' token, and at the end)."""
    body = [t for t in seq if t != EOS]
    cuts = [k + 1 for k, t in enumerate(body) if t == 1]
    if not cuts or cuts[-1] != len(body) or (seq and seq[-1] == EOS):
        cuts.append(len(body))
    cuts = sorted(set(cuts))
    return [lm.tokenizer.decode(body[:c]) for c in cuts]


def reward(text):
    return 0.2 + 0.6 * ((text.count("b") + len(text)) % 3) / 2


@pytest.mark.parametrize("target", ["product", "final"])
def test_reward_particle_filter_targets_what_it_states(target):
    lm = random_lm(11)

    def log_phi_reward(seq):
        texts = _step_texts(seq, lm)
        if target == "final":
            return math.log(reward(texts[-1]))
        return sum(math.log(reward(t)) for t in texts)

    support, pi, log_z, prior = exact(lm, log_phi=log_phi_reward)
    factor = ppl.StepReward(reward, lm.tokenizer, target=target, batched=False)
    program = ppl.Program(lm, [1], CAP, potential=factor, step_delimiter="a")
    log_z_hat, logw, seqs = run_many(program, 8, runs=300, ess_threshold=1.0, proposal="prior", seed=11)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_reward_particle_filter_convenience_runs():
    lm = random_lm(12)
    result = smc.reward_particle_filter(lm, [1], lambda ts: [reward(t) for t in ts], 16, 0,
                                              max_new_tokens=CAP, step_delimiter="a")
    assert "product" in result.method
    assert np.isfinite(result.log_z)
    assert result.num_resampling >= 1 or len(result.ess) == 1
