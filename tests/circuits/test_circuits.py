"""Circuit queries and learning against brute-force enumeration (<= 6 ternary variables)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from genppl import circuits
from genppl.circuits import Circuit, Input, Product, Sum
from genppl.models.interface import InputError
from tests.circuits.brute import joint
from tests.helpers import assert_matches_law

D, K = 5, 3
ALL = np.array(list(itertools.product(range(K), repeat=D)), np.float64)


def rbt(seed=0, gaussian=False):
    return circuits.random_binary_tree(D, None if gaussian else K, num_units=2, num_repetitions=2,
                                       key=jax.random.key(seed))


def enumerate_logp(c, params):
    return np.asarray(c.log_likelihood(params, ALL), np.float64)


def test_likelihood_marginals_and_conditionals_equal_enumeration():
    with enable_x64():
        c = rbt()
        params = c.init(jax.random.key(1))
        logp = enumerate_logp(c, params)
        assert abs(np.logaddexp.reduce(logp)) < 1e-9
        rng = np.random.default_rng(0)
        for _ in range(5):
            missing = rng.random(D) < 0.5
            x = ALL[rng.integers(len(ALL))]
            agree = np.all((ALL == x) | missing, axis=1)
            want = np.logaddexp.reduce(logp[agree])
            got = float(circuits.marginal(c, params, x[None], missing[None])[0])
            assert abs(got - want) < 1e-6
            # conditional of the first two observed variables given the other observed ones
            observed = np.flatnonzero(~missing)
            query = np.zeros(D, bool)
            query[observed[:2]] = True
            evidence = ~missing & ~query
            agree_e = np.all((ALL == x) | ~evidence, axis=1)
            want_c = want - np.logaddexp.reduce(logp[agree_e])
            got_c = float(circuits.conditional(c, params, x[None], query[None], evidence[None])[0])
            assert abs(got_c - want_c) < 1e-6


@pytest.mark.slow
def test_sampling_matches_the_enumerated_law_unconditionally_and_given_evidence():
    c = rbt(2)
    params = c.init(jax.random.key(3))
    with enable_x64():
        p = np.exp(enumerate_logp(c, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)))
    support = [tuple(r) for r in ALL.astype(int)]
    xs = np.asarray(circuits.circuit_sample(c, params, jax.random.key(4), n=20000)).astype(int)
    assert_matches_law([tuple(r) for r in xs], support, p)
    # given x_0 = 2 and x_3 = 0, the rest follows the conditional law
    missing = np.ones((20000, D), bool)
    missing[:, [0, 3]] = False
    x = np.zeros((20000, D))
    x[:, 0] = 2
    xs = np.asarray(circuits.circuit_sample(c, params, jax.random.key(5), x=x, missing=missing)).astype(int)
    keep = (ALL[:, 0] == 2) & (ALL[:, 3] == 0)
    assert_matches_law([tuple(r) for r in xs], [s for s, k in zip(support, keep) if k], p[keep] / p[keep].sum())


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


def em_data():
    # data with structure: variables copy a shared one with noise
    rng = np.random.default_rng(10)
    base = rng.integers(0, K, size=(300, 1))
    return ((base + (rng.random((300, D)) < 0.3)) % K).astype(np.float64)


def test_em_never_lowers_the_likelihood_with_missing_values():
    with enable_x64():
        data = em_data()
        c = rbt(11)
        params = c.init(jax.random.key(12))
        missing = np.random.default_rng(1).random(data.shape) < 0.2
        _, history = circuits.fit_em(c, params, data, missing, epochs=6)
        assert np.all(np.diff(history) >= -1e-9) and history[-1] > history[0]


@pytest.mark.slow
def test_gaussian_em_never_lowers_the_likelihood_and_sgd_improves_it():
    with enable_x64():
        data = em_data()
        g = rbt(13, gaussian=True)
        _, gh = circuits.fit_em(g, g.init(jax.random.key(14)), data, epochs=5)
        assert np.all(np.diff(gh) >= -1e-9) and gh[-1] > gh[0]
        c = rbt(11)
        params = c.init(jax.random.key(12))
        start = float(jnp.mean(c.log_likelihood(params, data)))
        _, sh = circuits.fit_sgd(c, params, data, epochs=3, batch_size=100)
        assert sh[-1] > start
        _, mb = circuits.fit_em(c, params, data, epochs=3, batch_size=100, step_size=0.5)
        assert mb[-1] > start


def test_gaussian_marginal_equals_numerical_integration():
    with enable_x64():
        g = rbt(15, gaussian=True)
        params = g.init(jax.random.key(16))
        grid = np.linspace(-12, 12, 6001)
        x = np.tile([0.3, -1.0, 0.5, 2.0, 0.0], (len(grid), 1))
        x[:, 2] = grid
        dens = np.exp(np.asarray(g.log_likelihood(params, x)))
        integral = np.log(np.trapezoid(dens, grid))
        missing = np.zeros((1, D), bool)
        missing[0, 2] = True
        assert abs(float(circuits.marginal(g, params, x[:1], missing)[0]) - integral) < 1e-6


def test_structural_checks_name_the_block():
    with pytest.raises(InputError, match="block 2 is not decomposable"):
        Circuit([Input(0, 2, 2), Input(0, 2, 2), Product((0, 1)), Sum((2,), 1)], num_vars=1)
    with pytest.raises(InputError, match="block 2 is not smooth"):
        Circuit([Input(0, 2, 2), Input(1, 2, 2), Sum((0, 1), 1)], num_vars=2)
    with pytest.raises(InputError, match="misses variables"):
        Circuit([Input(0, 2, 2), Sum((0,), 1)], num_vars=2)
    with pytest.raises(InputError, match="integers"):
        c = rbt()
        c.log_likelihood(c.init(jax.random.key(0)), np.full((1, D), 5.0))
