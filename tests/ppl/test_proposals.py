"""Proposals: normalised log q, and weights with sum_v q(v) exp(log w(v)) = sum_v exp(target(v))
exactly, so every proposal leaves the SMC estimate of Z unbiased."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models, ppl
from genppl.models.interface import InputError

LM = models.TabularLM.random(jax.random.key(3), vocab_size=6, max_len=3)
PROGRAM = ppl.Program(LM, [1], 3, potential=ppl.BannedTokens([2]), alpha=1.5)


def learned(program, state):
    return jnp.log(jnp.full(state.lm.logits.shape, 1.0 / state.lm.logits.shape[-1]))


@pytest.mark.parametrize("proposal", [ppl.proposals.locally_optimal(), ppl.proposals.prior(),
                                      ppl.proposals.tempered(0.5), ppl.proposals.from_log_q(learned)],
                         ids=["optimal", "prior", "tempered", "from_log_q"])
def test_weights_correct_the_proposal_exactly(proposal):
    state = PROGRAM.init(3)
    _, target = PROGRAM.next_token_weights(state)
    log_q, log_w = proposal(PROGRAM, state, target)
    log_w = jnp.broadcast_to(log_w, log_q.shape)
    np.testing.assert_allclose(jax.nn.logsumexp(log_q, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(jax.nn.logsumexp(log_q + log_w, -1), jax.nn.logsumexp(target, -1), atol=1e-5)
    assert not np.isnan(np.asarray(log_w)).any()


def test_locally_optimal_never_proposes_a_ruled_out_token():
    state = PROGRAM.init(2)
    _, target = PROGRAM.next_token_weights(state)
    log_q, _ = ppl.proposals.locally_optimal()(PROGRAM, state, target)
    assert np.all(np.isneginf(np.asarray(log_q)[:, 2]))


def test_proposals_compare_by_value_and_refuse_bad_settings():
    assert ppl.proposals.tempered(0.5) == ppl.proposals.tempered(0.5)
    assert hash(ppl.proposals.prior()) == hash(ppl.proposals.prior())
    for bad in (0.0, -1.0, float("inf"), True, 1e-6):
        with pytest.raises(InputError, match="temperature"):
            ppl.proposals.tempered(bad)
    with pytest.raises(InputError, match="function"):
        ppl.proposals.from_log_q("not a function")
