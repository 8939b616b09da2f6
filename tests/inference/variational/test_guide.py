"""The guide: parameters, the guided program and its proposal, bad input."""

import jax
import numpy as np
import pytest

from genppl import models, ppl
from genppl.inference import variational
from genppl.models.interface import InputError

from .shared import GUIDE_BOTH, LM, TARGET_GUIDE, TINY, random_guide_params


def test_the_guided_program_keeps_the_target_and_carries_the_parameters():
    params = GUIDE_BOTH.init(jax.random.key(0))
    program = ppl.Program(LM, [1], 3, alpha=2.0)
    guided = GUIDE_BOTH.program(params, program)
    assert isinstance(guided.lm, models.GuidedLM) and guided.lm.base is LM
    assert guided.max_new_tokens == program.max_new_tokens
    # the parameters are data: other values give the same structure with other leaves
    assert any(x is params["twist"]["log_psi"] for x in jax.tree.leaves(guided))
    other = GUIDE_BOTH.program(random_guide_params(), program)
    assert jax.tree.structure(other) == jax.tree.structure(guided)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(guided)))
    # equal guides give equal (hashable) proposals; a twist alone keeps the locally optimal q
    assert GUIDE_BOTH.proposal_fn == TARGET_GUIDE.proposal_fn
    assert hash(GUIDE_BOTH.proposal_fn) == hash(TARGET_GUIDE.proposal_fn)
    assert variational.Guide(twist=models.TabularTwist(LM)).proposal_fn == ppl.proposals.locally_optimal()


def test_bad_guides_get_clear_errors():
    with pytest.raises(InputError):
        variational.Guide()
    with pytest.raises(InputError, match="log_q"):
        variational.Guide(proposal=models.TabularAdapter(TINY), log_q="lm")
    with pytest.raises(InputError, match="init"):
        variational.Guide(proposal=TINY)
    with pytest.raises(InputError, match="keys"):
        TARGET_GUIDE.check({"twist": {}})
    guided = TARGET_GUIDE.program(TARGET_GUIDE.init(jax.random.key(0)), ppl.Program(LM, [1], 3))
    with pytest.raises(InputError, match="already carries a guide"):
        TARGET_GUIDE.program(TARGET_GUIDE.init(jax.random.key(0)), guided)
