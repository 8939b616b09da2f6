"""SMC runs with a learned guide: unbiased log Z, and one compiled program for new parameters."""

import jax
import numpy as np
import pytest

from genppl import ppl
from genppl.inference import variational
from tests.compile_count import count_compiles

from .shared import BANNED, GUIDE_BOTH, LM, random_guide_params


@pytest.mark.slow
def test_smc_with_a_learned_proposal_and_twist_is_unbiased():
    banned = variational.exact_batch(BANNED)
    log_z_hat, _ = variational.smc_log_z(GUIDE_BOTH.program(random_guide_params(), BANNED), 0, 8, 400,
                                         proposal=GUIDE_BOTH.proposal_fn)
    ratio = np.exp(log_z_hat - banned["log_z"])
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / np.sqrt(len(ratio))


def test_new_parameters_and_prompts_reuse_the_compiled_runs():
    def run(seed, prompt):
        program = ppl.Program(LM, prompt, 3, alpha=2.0, potential=ppl.BannedTokens([2]))
        guided = GUIDE_BOTH.program(random_guide_params(seed), program)
        return variational.smc_log_z(guided, seed, 4, 2, proposal=GUIDE_BOTH.proposal_fn)

    run(0, [1])
    with count_compiles() as compiles:
        run(1, [1])
        run(2, [3, 1])
    assert compiles.count_of(variational.many_log_z) == 0, compiles


def test_smc_samples_are_weighted_particles():
    guided = GUIDE_BOTH.program(random_guide_params(), BANNED)
    tokens, logw = jax.jit(variational.smc_samples, static_argnums=(1, 3))(
        guided, GUIDE_BOTH.proposal_fn, jax.random.key(0), 8)
    assert tokens.shape == (8, 3) and logw.shape == (8,)
    assert not np.any(np.asarray(tokens) == 2)  # the banned token is never proposed
    assert np.all(np.isfinite(np.asarray(logw)))
