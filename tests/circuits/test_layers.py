"""Circuit blocks: the structural checks name the offending block."""

import jax
import numpy as np
import pytest

from genppl.circuits import Circuit, Input, Product, Sum
from genppl.models.interface import InputError
from tests.circuits.small import D, rbt


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
