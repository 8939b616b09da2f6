"""Teacher forcing and rollouts: a learned twist never changes the target."""

import jax
import numpy as np
import pytest

from genppl.inference import variational

from .shared import BANNED, GUIDE_BOTH, random_guide_params


def test_a_learned_twist_telescopes_to_the_target():
    banned = variational.exact_batch(BANNED)
    tr = jax.jit(variational.trace, static_argnums=2)(
        GUIDE_BOTH.program(random_guide_params(), BANNED), banned["tokens"], GUIDE_BOTH.proposal_fn)
    np.testing.assert_allclose(np.asarray(tr.log_target_total), np.asarray(banned["log_weights"]) + banned["log_z"],
                               atol=1e-4)  # the twist never changes the final target


@pytest.mark.slow
def test_rollout_weights_are_log_target_minus_log_q():
    guided = GUIDE_BOTH.program(random_guide_params(), BANNED)
    tokens, logw = jax.jit(variational.rollout, static_argnums=(2, 3))(guided, jax.random.key(0), 16,
                                                                        GUIDE_BOTH.proposal_fn)
    tr = jax.jit(variational.trace, static_argnums=2)(guided, tokens, GUIDE_BOTH.proposal_fn)
    np.testing.assert_allclose(np.asarray(logw), np.asarray(tr.log_target_total - tr.log_q_total), atol=1e-4)
