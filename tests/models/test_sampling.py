import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.models import InputError, Processing, TabularLM, process_logits, sample
from genppl.models import sampling
from tests.helpers import assert_matches_law

NUM = 4000


@pytest.fixture(scope="module")
def lm():
    return TabularLM.random(jax.random.key(7), vocab_size=4, max_len=3, eos_id=0)


def processed_law(lm, processing, cap):
    """Exact law of ancestral sampling with processed next-token distributions."""
    table = jnp.asarray(lm.table)
    q = np.asarray(jnp.exp(process_logits(table, processing)), np.float64)
    seqs, _ = lm.enumerate(cap)
    probs = []
    for seq in seqs:
        p, prefix = 1.0, []
        for t in seq:
            p *= q[lm.code(prefix), t]
            prefix.append(t)
        probs.append(p)
    return seqs, np.array(probs)


@pytest.mark.parametrize("processing", [
    Processing(), Processing(temperature=0.5), Processing(top_k=2), Processing(temperature=2.0, top_p=0.7),
], ids=["plain", "temp0.5", "topk2", "temp2-topp0.7"])
@pytest.mark.parametrize("cap", [2, 3])
def test_sampler_matches_exact_law(lm, processing, cap):
    seqs, p = processed_law(lm, processing, cap)
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)
    out = sample(lm, [1], NUM, cap, jax.random.key(cap), processing.temperature, processing.top_k, processing.top_p)
    assert_matches_law(out.sequences(), seqs, p)
    finished = np.array([s[-1] == lm.eos_id for s in out.sequences()])
    np.testing.assert_array_equal(out.finished, finished)


def test_reported_log_probs_are_raw_model_log_probs(lm):
    out = sample(lm, [1], 64, 3, jax.random.key(3), temperature=0.7)
    for seq, lp in zip(out.sequences(), out.log_probs):
        assert lp == pytest.approx(lm.log_prob(seq), abs=1e-5)


def test_top_k_and_top_p_supports():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda pr: np.isfinite(np.asarray(process_logits(logits, pr)))[0]
    np.testing.assert_array_equal(keep(Processing(top_k=2)), [1, 1, 0, 0])
    np.testing.assert_array_equal(keep(Processing(top_p=0.5)), [1, 0, 0, 0])
    np.testing.assert_array_equal(keep(Processing(top_p=0.81)), [1, 1, 1, 0])
    np.testing.assert_array_equal(keep(Processing(top_p=1.0)), [1, 1, 1, 1])


def test_decode_loop_compiles_once_per_configuration(lm):
    before = sampling.TRACE_COUNTS["generate"]
    for seed in range(3):
        sample(lm, [1], 16, 3, jax.random.key(seed), temperature=0.9)
    assert sampling.TRACE_COUNTS["generate"] - before == 1, "the decode loop was retraced"
    sample(lm, [1], 16, 3, jax.random.key(0), temperature=0.8)   # a new static configuration
    assert sampling.TRACE_COUNTS["generate"] - before == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n (the number of particles) must be a positive integer"),
    (dict(n=-3), "n (the number of particles) must be a positive integer"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
    (dict(temperature=0.0), "temperature must be a positive number"),
    (dict(temperature=-1.0), "temperature must be a positive number"),
    (dict(temperature=float("nan")), "temperature must be a positive number"),
    (dict(top_k=0), "top_k must be a positive integer"),
    (dict(top_p=1.5), "top_p must lie in"),
    (dict(prompt_ids=[]), "the prompt is empty"),
    (dict(prompt_ids="hello"), "encode text"),
    (dict(prompt_ids=[99]), "prompt token ids must lie in"),
])
def test_bad_input_is_a_clear_error(lm, kwargs, message):
    args = dict(prompt_ids=[1], n=4, max_new_tokens=3, key=jax.random.key(0))
    args.update(kwargs)
    with pytest.raises(InputError, match=re.escape(message)):
        sample(lm, **args)
