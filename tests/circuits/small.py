"""Shared small circuits and brute-force enumeration for the circuit tests (<= 6 ternary variables)."""

import itertools

import jax
import numpy as np

from genppl import circuits

D, K = 5, 3
ALL = np.array(list(itertools.product(range(K), repeat=D)), np.float64)


def rbt(seed=0, gaussian=False):
    return circuits.random_binary_tree(D, None if gaussian else K, num_units=2, num_repetitions=2,
                                       key=jax.random.key(seed))


def enumerate_logp(c, params):
    return np.asarray(c.log_likelihood(params, ALL), np.float64)


