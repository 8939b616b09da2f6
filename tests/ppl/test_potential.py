"""Potentials are pytrees: tables are leaves, kinds and shapes are static, and the algebra
(products, powers) keeps both."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models, ppl
from genppl.ppl.potential import has_boundary

LM = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=3)


def structure(x):
    return jax.tree_util.tree_structure(x)


def test_equal_kinds_and_shapes_share_a_structure_and_values_are_leaves():
    a, b = ppl.BannedTokens([2]), ppl.BannedTokens([3])
    assert structure(a) == structure(b)
    assert [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(a)] == [[2]]
    assert structure(a * ppl.MinLength(2, 0)) == structure(b * ppl.MinLength(3, 0))
    # another shape is the same structure with leaves of another shape (jit keys on both)
    assert jax.tree_util.tree_leaves(ppl.BannedTokens([2, 3]))[0].shape == (2,)
    assert structure(a) != structure(ppl.MinLength(2, 0))  # another kind


def test_products_and_powers_flatten_and_rebuild():
    p = (ppl.BannedTokens([2]) * ppl.MinLength(2, 0)) ** 2.0
    leaves, treedef = jax.tree_util.tree_flatten(p)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(rebuilt, ppl.Power) and isinstance(rebuilt.base, ppl.Product)
    assert rebuilt.token_level and repr(rebuilt) == repr(p)
    state = LM.prefill([1], 2, 3)
    np.testing.assert_array_equal(rebuilt.logw_next(rebuilt.init(state), state),
                                  p.logw_next(p.init(state), state))


def test_a_potential_passes_through_jit_as_data():
    @jax.jit
    def row(potential, state):
        return potential.logw_next(potential.init(state), state)

    state = LM.prefill([1], 1, 3)
    assert np.isneginf(row(ppl.BannedTokens([2]), state)[0, 2])
    assert np.isneginf(row(ppl.BannedTokens([4]), state)[0, 4])  # same program, other data
    assert row._cache_size() == 1


def test_the_boundary_hook_is_found_through_the_algebra():
    scorer = ppl.SequenceScorer(lambda tokens, length, start: jnp.zeros(length.shape))
    assert not has_boundary(ppl.BannedTokens([1]) * ppl.MinLength(1, 0))
    assert has_boundary((ppl.BannedTokens([1]) * scorer) ** 0.5)


def test_powers_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ppl.BannedTokens([1]) ** 0
