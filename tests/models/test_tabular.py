import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.models import TabularLM
from tests.compile_count import count_compiles

# the verbs do not jit themselves: these tests call them through their own jit
extend = jax.jit(TabularLM.extend)
advance = jax.jit(TabularLM.advance)
score = jax.jit(TabularLM.score)
truncate = jax.jit(TabularLM.truncate)


@pytest.fixture(params=[(3, 3, 0), (5, 4, 2), (6, 5, 5)], ids=lambda p: f"V{p[0]}L{p[1]}eos{p[2]}")
def lm(request):
    v, length, eos = request.param
    return TabularLM.random(jax.random.key(v * 10 + length), vocab_size=v, max_len=length, eos_id=eos)


def test_enumeration_is_a_distribution(lm):
    for cap in range(1, lm.max_len + 1):
        seqs, logp = lm.enumerate(cap)
        assert len(set(seqs)) == len(seqs)
        np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-5)


def test_log_prob_matches_step_by_step_extension(lm):
    seqs, logp = lm.enumerate()
    for seq, lp in list(zip(seqs, logp))[:: max(1, len(seqs) // 25)]:
        state = lm.prefill([1], 1, lm.max_len)
        total = 0.0
        for t in seq:
            total += float(lm.log_probs(state)[0, t])
            state = extend(lm, state, jnp.array([t]))
        assert total == pytest.approx(lp, abs=1e-5)
        assert lm.log_prob(seq) == pytest.approx(lp, abs=1e-9)


def test_score_equals_sum_of_steps_and_respects_mask(lm):
    seqs, _ = lm.enumerate()
    batch = seqs[-4:] + seqs[:4]
    L = lm.max_len
    tokens = np.zeros((len(batch), L), np.int32)
    mask = np.zeros((len(batch), L), bool)
    for i, s in enumerate(batch):
        tokens[i, : len(s)] = s
        mask[i, : len(s)] = True
    state = lm.prefill([2, 1], len(batch), L)
    logp = np.asarray(score(lm, state, tokens, mask))
    assert np.all(logp[~mask] == 0)
    for i, s in enumerate(batch):
        assert logp[i].sum() == pytest.approx(lm.log_prob(s), abs=1e-5)


def test_advance_then_state_equals_stepwise_state(lm):
    seqs, _ = lm.enumerate()
    seq = max(seqs, key=len)
    a = lm.prefill([1], 1, lm.max_len)
    a, _ = advance(lm, a, jnp.array([seq]))
    b = lm.prefill([1], 1, lm.max_len)
    for t in seq:
        b = extend(lm, b, jnp.array([t]))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_truncate_recovers_the_earlier_state(lm):
    seqs, _ = lm.enumerate()
    seq = max(seqs, key=len)
    state = lm.prefill([1], 1, lm.max_len)
    states = [state]
    for t in seq:
        state = extend(lm, state, jnp.array([t]))
        states.append(state)
    for m in range(len(seq)):
        cut = truncate(lm, state, state.prompt_length + m)
        np.testing.assert_allclose(np.asarray(cut.logits), np.asarray(states[m].logits), atol=1e-6)
        assert int(cut.length[0]) == int(states[m].length[0])


def test_gather_selects_particles(lm):
    state = lm.prefill([1], 3, lm.max_len)
    state = extend(lm, state, jnp.array([1, 2, 1]) % lm.vocab_size)
    picked = lm.gather(state, jnp.array([2, 2, 0]))
    np.testing.assert_array_equal(np.asarray(picked.tokens), np.asarray(state.tokens)[[2, 2, 0]])


def test_lm_is_a_pytree_usable_inside_jit(lm):
    @jax.jit
    def first_logits(model):
        return model.logits(model.prefill(jnp.array([1]), 2, 2))

    np.testing.assert_allclose(np.asarray(first_logits(lm))[0], np.asarray(lm.table[0]), atol=1e-6)


def test_eager_extension_reuses_its_compiled_ops():
    """advance is not jitted: called eagerly, each op compiles once per shape and is then reused
    (a scan would be re-traced and re-compiled on every eager call)."""
    lm = TabularLM.random(jax.random.key(2), vocab_size=3, max_len=3)
    state = lm.prefill([1], 2, lm.max_len)
    state = lm.extend(state, jnp.array([1, 1]))  # warm up
    with count_compiles() as compiles:
        for _ in range(2):
            state = lm.extend(state, jnp.array([1, 1]))
    assert compiles.count == 0, compiles


def test_long_blocks_use_a_scan_with_the_same_result():
    lm = TabularLM.random(jax.random.key(3), vocab_size=3, max_len=12, eos_boost=-5.0)
    seq = (1, 2, 1, 1, 2, 2, 1, 2, 1, 1, 2)  # 11 > 8 tokens: the scan path
    state, logp = advance(lm, lm.prefill([1], 1, 12), jnp.array([seq]))
    np.testing.assert_allclose(np.asarray(logp[0]), [lm.log_prob(seq[: i + 1]) - lm.log_prob(seq[:i])
                                                     for i in range(len(seq))], atol=1e-4)
    np.testing.assert_allclose(np.asarray(state.logits[0]), np.asarray(lm.table[lm.code(seq)]), atol=1e-6)
