import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.models import InputError, NonFiniteLogitsError, Processing, TabularLM, process_logits, sample
from genppl.models import sampling
from tests.compile_count import count_compiles
from tests.helpers import assert_matches_law
from tests.models.faults import FaultyLM

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


PROCESSINGS = {"plain": Processing(), "temp0.5": Processing(temperature=0.5), "topk2": Processing(top_k=2),
               "temp2-topp0.7": Processing(temperature=2.0, top_p=0.7)}
# each processing at one cap in the default suite, the other cap with -m slow (same code path)
DEFAULT_CAP = {"plain": 3, "temp0.5": 2, "topk2": 3, "temp2-topp0.7": 2}


@pytest.mark.parametrize("processing, cap", [
    pytest.param(proc, cap, id=f"{cap}-{name}", marks=() if cap == DEFAULT_CAP[name] else
                 pytest.mark.slow(reason="the same processing at the other cap"))
    for cap in (2, 3) for name, proc in PROCESSINGS.items()])
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
    assert not hasattr(sampling, "TRACE_COUNTS")
    with count_compiles() as compiles:
        for seed in range(3):
            sample(lm, [1], 16, 3, jax.random.key(seed), temperature=0.9)
    assert compiles.count_of(sampling.generate) == 1, "the decode loop was recompiled"
    with count_compiles() as compiles:
        sample(lm, [1], 16, 3, jax.random.key(0), temperature=0.8)   # a new static configuration
    assert compiles.count_of(sampling.generate) == 1


def test_prompts_of_different_lengths_in_one_bucket_compile_once(lm):
    """Prompts are padded to a bucket of 16 tokens: every program is reused, int or key seeds alike."""
    sample(lm, [1], 12, 3, 0, temperature=0.77)
    with count_compiles() as compiles:
        for seed, prompt in enumerate([[2], [1, 2, 3], [3] * 9, [1, 2] * 8]):
            out = sample(lm, prompt, 12, 3, seed if seed % 2 else jax.random.key(seed), temperature=0.77)
            assert out.token_ids.shape == (12, 3)
    assert compiles.count == 0, compiles


def test_decode_loop_compiles_once_on_a_transformer(llama_lm):
    with count_compiles() as compiles:
        for seed in range(3):
            out = sample(llama_lm, [1, 2], 4, 8, jax.random.key(seed), temperature=0.7)
    assert compiles.count_of(sampling.generate) == 1
    assert out.token_ids.shape == (4, 8)


# ---- tiny temperatures (issue 11, case 6) ------------------------------------------------
@pytest.mark.parametrize("temperature", [1e-10, 1e-30, 1e-45, 5e-324])
def test_tiny_temperatures_are_greedy(temperature):
    logits = jnp.array([[0.1, 3.0, -2.0, -jnp.inf], [5.0, 5.0, 1.0, 0.0], [1e30, 0.0, -1e30, 2.0]])
    q = np.exp(np.asarray(process_logits(logits, Processing(temperature=temperature))))
    np.testing.assert_allclose(q, [[0, 1, 0, 0], [0.5, 0.5, 0, 0], [1, 0, 0, 0]], atol=1e-6)


def test_processing_is_stable_at_any_scale():
    logits = jnp.array([[1e30, 1e30 - 1e24, 0.0], [-1e30, -1e30, -1e30]])
    q = np.exp(np.asarray(process_logits(logits, Processing(temperature=1e-3))))
    assert np.all(np.isfinite(q)) and np.allclose(q.sum(-1), 1.0)
    huge = np.exp(np.asarray(process_logits(logits, Processing(temperature=1e300))))
    np.testing.assert_allclose(huge, np.full((2, 3), 1 / 3), atol=1e-6)  # T -> inf: uniform


def test_tiny_temperature_sampling_is_greedy_decoding(lm):
    out = sample(lm, [1], 32, 3, 0, temperature=1e-10)
    greedy, prefix = [], []
    table = np.asarray(lm.table)
    for _ in range(3):
        t = int(np.argmax(table[lm.code(prefix)]))
        greedy.append(t)
        if t == lm.eos_id:
            break
        prefix.append(t)
    assert all(seq == tuple(greedy) for seq in out.sequences())
    assert np.all(np.isfinite(out.log_probs))


def test_nonfinite_logits_stay_nonfinite():
    """A NaN, +inf or all -inf row is not turned into a distribution (the fault stays visible)."""
    logits = jnp.array([[jnp.nan, 0.0], [jnp.inf, 0.0], [-jnp.inf, -jnp.inf]])
    out = process_logits(logits, Processing(temperature=1e-5))
    assert not np.any(np.isfinite(np.asarray(out)).all(-1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=np.float32(0.0)), "temperature must be a positive number"),
    (dict(temperature=float("inf")), "temperature must be a positive number"),
    (dict(temperature="1"), "temperature must be a positive number"),
    (dict(top_k=2.0), "top_k must be a positive integer"),
    (dict(top_k=True), "top_k must be a positive integer"),
    (dict(top_p=0.0), "top_p must lie in (0, 1]"),
    (dict(top_p=float("nan")), "top_p must lie in (0, 1]"),
    (dict(top_p="0.5"), "top_p must lie in (0, 1]"),
])
def test_processing_validation(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        Processing(**kwargs)


def test_processing_settings_are_normalised_and_hashable():
    a = Processing(temperature=np.float32(0.5), top_k=np.int64(3), top_p=np.float64(0.9))
    b = Processing(temperature=0.5, top_k=3, top_p=0.9)
    assert a == b and hash(a) == hash(b) and type(a.temperature) is float and type(a.top_k) is int


# ---- NaN / inf logits (issue 11, case 5) -------------------------------------------------
@pytest.fixture(scope="module")
def long_lm():
    """EOS is very unlikely before the length cap, so every particle reaches step 2."""
    return TabularLM.random(jax.random.key(11), vocab_size=4, max_len=4, eos_boost=-30.0)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nonfinite_logits_raise_naming_the_step_and_particle(long_lm, value):
    bad = FaultyLM(long_lm, step=2, particle=3, prompt_length=1, value=value)
    with pytest.raises(NonFiniteLogitsError, match=r"models.sample: .* at generation step 2 .* particle\(s\) 3 "
                                                   r"\(of 6\).* broken checkpoint") as err:
        sample(bad, [1], 6, 4, 0)
    assert err.value.step == 2 and err.value.particles == (3,)


def test_nonfinite_logits_can_be_flagged_instead(long_lm):
    bad = FaultyLM(long_lm, step=2, particle=3, prompt_length=1)
    out = sample(bad, [1], 6, 4, 0, check_finite=False)
    np.testing.assert_array_equal(out.nonfinite, [0, 0, 0, 1, 0, 0])
    assert out.num_tokens[3] == 2 and not out.finished[3]  # stopped where its logits broke
    assert np.all(np.isfinite(out.log_probs))  # log p of the tokens drawn before the fault
    good = sample(long_lm, [1], 6, 4, 0)
    np.testing.assert_array_equal(out.token_ids[[0, 1, 2, 4, 5]], good.token_ids[[0, 1, 2, 4, 5]])
    assert out.sequences()[3] == good.sequences()[3][:2]
    assert not good.nonfinite.any() and "non-finite" in repr(out)


# ---- keys (issue 11, case 11) ------------------------------------------------------------
def test_sample_accepts_an_int_key_like_every_kernel(lm):
    a = sample(lm, [1], 8, 3, 5)
    b = sample(lm, [1], 8, 3, jax.random.key(5))
    c = sample(lm, [1], 8, 3, jax.random.PRNGKey(5))
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    np.testing.assert_array_equal(a.token_ids, c.token_ids)
    np.testing.assert_array_equal(sample(lm, [1], 8, 3).token_ids, sample(lm, [1], 8, 3, 0).token_ids)


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
    (dict(prompt_ids=[1.0]), "must be integer token ids"),
    (dict(prompt_ids=[2**70]), "prompt token ids must lie in"),
    (dict(key=None), "key must be an int seed"),
    (dict(key=2**70), "outside the 64-bit seed range"),
    (dict(min_new_tokens=-1), "min_new_tokens must be a non-negative integer"),
])
def test_bad_input_is_a_clear_error(lm, kwargs, message):
    args = dict(prompt_ids=[1], n=4, max_new_tokens=3, key=jax.random.key(0))
    args.update(kwargs)
    with pytest.raises(InputError, match=re.escape(message)):
        sample(lm, **args)


def test_categorical_matches_the_exact_law_with_one_uniform_per_row():
    """``models.categorical`` (inverse CDF, one uniform per row) against the exact softmax law.

    Three rows: a plain one, one with -inf entries (never drawn, also at the ends of the row)
    and one with a tiny but positive probability. 20,000 draws per row: each frequency within 5
    binomial standard errors (a bias of 0.02 on a probability near 0.3 is ~6 standard errors, so
    it would be detected) and TV within twice its noise floor.
    """
    from genppl.models import categorical

    logits = jnp.array([[0.3, -1.2, 2.0, 0.0, -0.5],
                        [-jnp.inf, 1.0, -jnp.inf, 0.2, -jnp.inf],
                        [5.0, -3.0, 1.0, 4.0, 0.5]], jnp.float32)
    reps = 20_000
    draws = jax.jit(jax.vmap(categorical, (0, None)))(jax.random.split(jax.random.key(11), reps), logits)
    draws = np.asarray(draws)
    assert draws.shape == (reps, 3) and draws.dtype == np.int32
    w = np.exp(np.asarray(logits, np.float64) - np.asarray(logits, np.float64).max(-1, keepdims=True))
    p = w / w.sum(-1, keepdims=True)
    for row in range(3):
        assert_matches_law([(int(v),) for v in draws[:, row]], [(v,) for v in range(5)], p[row])
    assert not np.isin(draws[:, 1], [0, 2, 4]).any(), "a -inf logit was drawn"
    # one uniform per row: the draw of a row depends on its uniform alone (vmappable, batch-independent)
    key = jax.random.key(3)
    one = categorical(key, logits)
    u = jax.random.uniform(key, (3, 1))
    cdf = np.cumsum(np.asarray(jax.nn.softmax(logits, -1)), -1)
    np.testing.assert_array_equal(np.asarray(one), (cdf <= np.asarray(u) * cdf[:, -1:]).sum(-1))
