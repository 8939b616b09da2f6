"""Circuit queries (likelihood, marginals, conditionals, sampling) against brute-force enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from genppl import circuits
from tests.helpers import assert_matches_law
from tests.circuits.small import ALL, D, enumerate_logp, rbt


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
