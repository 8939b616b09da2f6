"""Exact enumeration: the support, exact samples and exact KLs on tabular LMs."""

import math

import jax
import numpy as np
import pytest

from genppl import ppl
from genppl.inference import variational

from .shared import BANNED, EXACT, LM, LM_GUIDE, POWER, TARGET_GUIDE, TINY_EXACT, TINY_PROGRAM


def test_exact_kl_of_the_base_lm_matches_direct_enumeration():
    seqs, logp = LM.enumerate(3)
    logu = 2.0 * logp
    log_z = np.logaddexp.reduce(logu)
    logpi = logu - log_z
    kl_pq, kl_qp, got_log_z = variational.exact_kl(LM_GUIDE, LM_GUIDE.init(jax.random.key(0)), POWER, EXACT)
    assert got_log_z == pytest.approx(log_z, abs=1e-4)
    assert kl_pq == pytest.approx(np.sum(np.exp(logpi) * (logpi - logp)), abs=1e-4)
    assert kl_qp == pytest.approx(np.sum(np.exp(logp) * (logp - logpi)), abs=1e-4)


def test_enumerated_tokens_follow_the_tabular_lm():
    seqs, _ = LM.enumerate(3)
    want = np.array([list(s) + [LM.eos_id] * (3 - len(s)) for s in seqs])
    np.testing.assert_array_equal(variational.enumerate_tokens(LM.vocab_size, LM.eos_id, 3), want)


def test_exact_samples_are_the_exact_batch_under_jit():
    tokens, logw = jax.jit(variational.exact_samples, static_argnums=(1, 3))(
        TINY_PROGRAM, ppl.proposals.locally_optimal(), jax.random.key(0), 4)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(TINY_EXACT["tokens"]))
    np.testing.assert_allclose(np.asarray(logw), np.asarray(TINY_EXACT["log_weights"]), atol=1e-5)


@pytest.mark.slow
def test_exact_kl_is_infinite_where_q_leaves_the_support():
    # with a banned token the base LM covers more than the target: KL(q||pi) = inf
    banned = variational.exact_batch(BANNED)
    assert variational.exact_kl(LM_GUIDE, LM_GUIDE.init(jax.random.key(0)), BANNED, banned)[1] == math.inf
    assert np.isfinite(variational.exact_kl(TARGET_GUIDE, TARGET_GUIDE.init(jax.random.key(0)), BANNED, banned)[1])
