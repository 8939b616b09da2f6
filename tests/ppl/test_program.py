"""Programs are pytrees of data: the prompt (padded to its bucket), alpha and the potential's
tables are leaves, so programs differing only in them share compiled code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models, ppl
from genppl.models.interface import InputError

LM = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)


def test_prompt_and_alpha_are_data():
    a = ppl.Program(LM, [1], 4, potential=ppl.BannedTokens([2]), alpha=2.0)
    b = ppl.Program(LM, [3, 1, 4], 4, potential=ppl.BannedTokens([3]), alpha=3.0)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert a.prompt_ids == (1,) and b.prompt_ids == (3, 1, 4)
    assert a.prompt.shape == b.prompt.shape == (16,)  # one prompt bucket
    rebuilt = jax.tree_util.tree_unflatten(*reversed(jax.tree_util.tree_flatten(b)))
    assert rebuilt.prompt_ids == (3, 1, 4) and float(rebuilt.alpha) == 3.0
    assert "3 tokens" in repr(b) and "alpha=3" in repr(b)


def test_init_is_traceable_and_agrees_with_the_eager_prefill():
    program = ppl.Program(LM, [3, 1], 4)
    eager = program.init(3)
    traced = jax.jit(lambda p: p.init(3))(program)
    np.testing.assert_allclose(traced.lm.logits, eager.lm.logits, atol=1e-6)
    np.testing.assert_array_equal(traced.lm.tokens, eager.lm.tokens)
    assert int(traced.lm.length[0]) == 2 and int(traced.fault[0]) == -1


def test_replace_keeps_the_rest():
    program = ppl.Program(LM, [1], 4, potential=ppl.BannedTokens([2]))
    other = program.replace(alpha=jnp.float32(2.0))
    assert float(other.alpha) == 2.0 and other.potential is program.potential
    with pytest.raises(InputError, match="unknown fields"):
        program.replace(proposal="optimal")


def test_a_step_delimiter_marks_the_tokens_that_end_a_step():
    program = ppl.Program(LM, [1], 4, step_delimiter="b")
    assert np.asarray(program.ends_step).tolist() == [b"b" in t for t in LM.tokenizer.token_bytes]


@pytest.mark.parametrize("kwargs, fix", [
    (dict(prompt_ids="hello"), "token ids"),
    (dict(prompt_ids=[1.5]), "floats"),
    (dict(prompt_ids=[9]), r"\[0, 5\)"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(alpha=float("inf")), "alpha"),
    (dict(alpha=0.0), "alpha"),
    (dict(potential="no e"), "ppl.Potential"),
    (dict(step_delimiter=""), "step_delimiter"),
])
def test_bad_input(kwargs, fix):
    args = dict(lm=LM, prompt_ids=[1], max_new_tokens=4) | kwargs
    with pytest.raises(InputError, match=fix):
        ppl.Program(**args)
