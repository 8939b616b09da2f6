"""ppl.effects.token_effects against the exact tables of a tabular model."""

import jax
import numpy as np
import pytest

from genppl import models, ppl
from genppl.models.interface import InputError
from genppl.ppl import effects


def test_token_effects_are_exact():
    lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=4)
    program = ppl.Program(lm, [1], max_new_tokens=4, potential=ppl.BannedTokens([2, 3]))
    ids = [4, 1, 2]                      # the last token is banned
    fx = effects.token_effects(program, ids)
    state = lm.prefill([1], 1, 4)
    for t, tok in enumerate(ids):
        logp = np.asarray(jax.nn.log_softmax(lm.logits(state)[0]), np.float64)
        assert fx.log_p[t] == pytest.approx(logp[tok], abs=1e-5)
        # the constraint keeps every token but 2 and 3 (EOS 0 included)
        assert fx.log_kept[t] == pytest.approx(np.log(np.exp(logp[[0, 1, 4]]).sum()), abs=1e-5)
        state = lm.extend(state, jax.numpy.array([tok]))
    np.testing.assert_array_equal(fx.log_phi, [0.0, 0.0, -np.inf])
    assert len(fx.tokens) == 3
    with pytest.raises(InputError, match="1 to max_new_tokens"):
        effects.token_effects(program, [4] * 5)
