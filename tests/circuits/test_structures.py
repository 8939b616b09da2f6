"""Circuit structures (the HMM circuit, Chow–Liu trees) against the models they encode."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import enable_x64

from genppl import circuits
from tests.circuits.brute import joint
from tests.circuits.small import ALL, D, K, enumerate_logp


def test_hmm_circuit_equals_the_hmm_and_enumeration():
    with enable_x64():
        hmm = circuits.HMM.random(jax.random.key(6), num_states=3, vocab_size=K).astype(jnp.float64)
        c, params = circuits.hmm_circuit(hmm, 4)
        seqs = np.array(list(itertools.product(range(K), repeat=4)))
        got = np.asarray(c.log_likelihood(params, seqs.astype(float)))
        want = [np.log(joint(hmm, tuple(s))) for s in seqs[:20]]
        np.testing.assert_allclose(got[:20], want, atol=1e-9)
        np.testing.assert_allclose(got, np.asarray(circuits.log_likelihood(hmm, seqs)), atol=1e-9)
        missing = np.array([[False, True, False, True]])
        m = float(circuits.marginal(c, params, seqs[:1].astype(float), missing)[0])
        agree = np.all((seqs == seqs[0]) | missing, axis=1)
        assert abs(m - np.logaddexp.reduce(got[agree])) < 1e-9


def test_chow_liu_map_equals_the_enumerated_argmax():
    with enable_x64():
        rng = np.random.default_rng(7)
        base = rng.integers(0, K, size=(400, 1))
        data = (base + (rng.random((400, D)) < 0.3) * rng.integers(0, K, size=(400, D))) % K
        c, params, parent = circuits.chow_liu_tree(data, K)
        assert sorted(parent).count(-1) == 1
        logp = enumerate_logp(c, params)
        assert abs(np.logaddexp.reduce(logp)) < 1e-9
        best, value = circuits.map_assignment(c, params)
        assert np.array_equal(np.asarray(best[0]), ALL[np.argmax(logp)])
        assert abs(float(value[0]) - logp.max()) < 1e-9
        # MAP completion given x_1 = 0
        missing = np.ones((1, D), bool)
        missing[0, 1] = False
        best, _ = circuits.map_assignment(c, params, np.zeros((1, D)), missing)
        agree = ALL[:, 1] == 0
        assert np.array_equal(np.asarray(best[0]), ALL[agree][np.argmax(logp[agree])])
