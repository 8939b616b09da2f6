"""The LanguageModel verbs (models/interface.py) on a real transformer checkpoint, and the
interface's public helpers: as_key, nonfinite_rows / check_finite_logits, prompt validation,
state_bytes and the memory check in prefill."""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.models import interface
from genppl.models.interface import (
    PROMPT_BUCKET, InputError, NonFiniteLogitsError, as_key, as_token_ids, check_finite_logits, nonfinite_rows,
)
from tests.compile_count import count_compiles
from tests.models.faults import FaultyLM


@pytest.fixture(scope="module")
def lm(llama_lm):
    return llama_lm


@pytest.fixture(scope="module")
def checkpoint(llama_checkpoint):
    return llama_checkpoint


# The verbs do not jit themselves; eager loops here call them through the caller's own jit.
extend = jax.jit(models.LanguageModel.extend)
advance = jax.jit(models.LanguageModel.advance)
truncate = jax.jit(models.LanguageModel.truncate)
score = jax.jit(models.LanguageModel.score)


def torch_logits(torch_model, ids):
    import torch

    with torch.no_grad():
        return torch_model(torch.tensor([ids])).logits[0].numpy()


# ---- the verbs ---------------------------------------------------------------------------
def test_prefill_then_extend_matches_transformers(lm, checkpoint):
    prompt = [3, 17, 42, 5]
    cont = [7, 99, 250, 11, 64]
    state = lm.prefill(prompt, 2, len(cont))
    ref = torch_logits(checkpoint[1], prompt + cont)
    np.testing.assert_allclose(np.asarray(state.logits[0]), ref[len(prompt) - 1], atol=1e-4)
    for i, t in enumerate(cont):
        state = extend(lm, state, jnp.array([t, t]))
        np.testing.assert_allclose(np.asarray(state.logits[1]), ref[len(prompt) + i], atol=1e-4)


def test_batched_extension_equals_per_sequence_runs(lm):
    prompt = [1, 2, 3]
    conts = np.array([[5, 6, 7, 8], [9, 10, 11, 12], [100, 200, 300, 301]])
    batch = lm.prefill(prompt, 3, 4)
    for t in range(4):
        batch = extend(lm, batch, jnp.asarray(conts[:, t]))
    for i in range(3):
        single = lm.prefill(prompt, 1, 4)
        for t in range(4):
            single = extend(lm, single, jnp.asarray(conts[i : i + 1, t]))
        np.testing.assert_allclose(np.asarray(batch.logits[i]), np.asarray(single.logits[0]), atol=1e-5)


def test_inactive_particles_do_not_move(lm):
    state = lm.prefill([1, 2], 2, 3)
    moved = extend(lm, state, jnp.array([5, 5]), active=jnp.array([True, False]))
    assert moved.length.tolist() == [3, 2]
    np.testing.assert_array_equal(np.asarray(moved.logits[1]), np.asarray(state.logits[1]))


def test_score_equals_sum_of_step_log_probs(lm):
    prompt = [4, 8, 15]
    conts = np.array([[16, 23, 42, 0], [1, 1, 2, 3], [300, 301, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
    state = lm.prefill(prompt, 3, 4)
    logp = np.asarray(score(lm, state, conts, mask))
    for i in range(3):
        s = lm.prefill(prompt, 1, 4)
        total = 0.0
        for t in conts[i][mask[i]]:
            total += float(lm.log_probs(s)[0, t])
            s = extend(lm, s, jnp.array([t]))
        assert logp[i].sum() == pytest.approx(total, abs=1e-4)
    assert np.all(logp[~mask] == 0)


def test_advance_and_truncate_round_trip(lm):
    state = lm.prefill([1, 2, 3], 2, 6)
    grown, _ = advance(lm, state, jnp.array([[5, 6, 7], [8, 9, 10]]))
    back = truncate(lm, grown, jnp.array([4, 3]))
    ref = extend(lm, state, jnp.array([5, 0]), active=jnp.array([True, False]))
    np.testing.assert_allclose(np.asarray(back.logits), np.asarray(ref.logits), atol=1e-5)
    assert back.length.tolist() == [4, 3]


def test_advance_does_not_jit_itself():
    """Called eagerly, advance runs op by op (no compiled program of its own) and agrees with
    the same call inside a caller's jit."""
    tab = models.TabularLM.random(jax.random.key(1), vocab_size=4, max_len=4)
    state = tab.prefill([1, 2], 2, 4)
    tokens = jnp.array([[1, 2], [3, 0]])
    with count_compiles() as compiles:
        eager, eager_logp = tab.advance(state, tokens)
    assert not any("advance" in name or "extend" in name for name in compiles.names), compiles
    traced, traced_logp = advance(tab, state, tokens)
    for a, b in zip(jax.tree.leaves((eager, eager_logp)), jax.tree.leaves((traced, traced_logp))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert not hasattr(interface, "_advance_jit")


def test_prompts_in_one_bucket_compile_prefill_once(lm):
    # a token cap and particle counts no other test uses, so that the counts below do not depend
    # on which tests ran before (clearing JAX's caches instead would make later tests recompile)
    cap = 13
    lm.prefill([7] * 5, 4, cap)  # warm up this (bucket, n, max_new_tokens)
    with count_compiles() as compiles:
        for length in (1, 2, 9, PROMPT_BUCKET):
            state = lm.prefill(list(range(3, 3 + length)), 4, cap)
            assert np.asarray(state.prompt_length)[0] == length
    assert compiles.count == 0, compiles
    with count_compiles() as compiles:
        lm.prefill([7] * 3, 11, cap)  # another particle count: only the (cheap) broadcast compiles
    assert compiles.count_of("_prompt_state") == 0 and compiles.count_of("broadcast_particles") == 1, compiles
    with count_compiles() as compiles:
        lm.prefill([7] * (PROMPT_BUCKET + 1), 4, cap)  # the next bucket: one new prompt program
    assert compiles.count_of("_prompt_state") == 1, compiles


def test_initial_state_is_traceable_with_the_prompt_as_data(lm):
    """initial_state takes the padded prompt and its length as (traced) data."""
    @jax.jit
    def run(model, tokens, length):
        return model.initial_state(tokens, length, 2, 24).logits

    tokens = np.zeros(PROMPT_BUCKET, np.int32)
    tokens[:3] = [4, 8, 15]
    with count_compiles() as compiles:
        a = run(lm, tokens, np.int32(3))
        tokens2 = tokens.copy()
        tokens2[:5] = [1, 2, 3, 4, 5]
        b = run(lm, tokens2, np.int32(5))
    assert compiles.count_of(run) == 1
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(lm.prefill([4, 8, 15], 1, 8).logits[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(b[1]), np.asarray(lm.prefill([1, 2, 3, 4, 5], 1, 8).logits[0]), atol=1e-5)


@pytest.mark.parametrize("n, max_new, prompt, message", [
    (0, 4, [1], "n (the number of particles) must be a positive integer"),
    (2, 0, [1], "max_new_tokens must be a positive integer"),
    (2, 4, [], "the prompt is empty"),
    (2, 40, list(range(1, 30)), "exceeds the model's context of 64 tokens"),
])
def test_bad_input(lm, n, max_new, prompt, message):
    with pytest.raises(InputError, match=re.escape(message)):
        lm.prefill(prompt, n, max_new)


# ---- prompt ids (issue 11, case 11) ------------------------------------------------------
@pytest.mark.parametrize("ids, message", [
    ([1.0, 2.0], "must be integer token ids, got float64"),
    (np.array([1.7, 2.2]), "floats are not truncated"),
    ([True, False], "must be integer token ids, got bool"),
    ([1, 2**40], "prompt token ids must lie in [0, 384), got 1..1099511627776"),
    ([1, 2**70], "prompt token ids must lie in [0, 384)"),
    (np.array([1, 2**40]), "prompt token ids must lie in [0, 384)"),
    ([-1, 2], "prompt token ids must lie in [0, 384), got -1..2"),
    ([[1, 2]], "1-D sequence of token ids"),
    ("hello", "encode text"),
])
def test_prompt_ids_are_integers_in_range(lm, ids, message):
    with pytest.raises(InputError, match=re.escape(message)):
        lm.prefill(ids, 2, 4)


def test_valid_id_forms_are_accepted():
    for ids in ([1, 2], (1, 2), np.array([1, 2], np.int64), np.array([1, 2], np.uint8), jnp.array([1, 2])):
        out = as_token_ids(ids, 10)
        assert out.dtype == np.int32 and out.tolist() == [1, 2]


# ---- keys (issue 11, case 11) ------------------------------------------------------------
def test_as_key_accepts_ints_and_keys():
    typed = jax.random.key(3)
    assert jax.dtypes.issubdtype(as_key(3).dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(as_key(3)), jax.random.key_data(typed))
    assert as_key(typed) is typed
    raw = jax.random.PRNGKey(3)
    assert as_key(raw) is raw
    np.testing.assert_array_equal(jax.random.key_data(as_key(np.int64(3))), jax.random.key_data(typed))
    assert as_key(-1) is not None and as_key(2**63 - 1) is not None
    traced = jax.jit(lambda s: jax.random.key_data(as_key(s)))(jnp.int32(3))
    np.testing.assert_array_equal(traced, jax.random.key_data(typed))


@pytest.mark.parametrize("key, message", [
    (None, "key must be an int seed (e.g. 0), a key from jax.random.key(seed)"),
    (2**70, "outside the 64-bit seed range"),
    (-(2**63) - 1, "outside the 64-bit seed range"),
    (1.5, "key must be an int seed"),
    (True, "key must be an int seed"),
    ("0", "key must be an int seed"),
    (np.zeros(3, np.float32), "key must be an int seed"),
])
def test_as_key_rejects_everything_else(key, message):
    with pytest.raises(InputError, match=re.escape(message)):
        as_key(key)


def test_as_key_rejects_a_batch_of_keys():
    with pytest.raises(InputError, match="one key, got a batch of keys"):
        as_key(jax.random.split(jax.random.key(0), 3))


# ---- non-finite logits (issue 11, case 5) ------------------------------------------------
def test_nonfinite_rows():
    ninf = -jnp.inf
    logits = jnp.array([[0.0, 1.0, 2.0], [0.0, ninf, 1.0], [jnp.nan, 0.0, 0.0], [jnp.inf, 0.0, 0.0],
                        [ninf, ninf, ninf], [-1e30, 0.0, 1e30]])
    np.testing.assert_array_equal(np.asarray(nonfinite_rows(logits)), [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(np.asarray(jax.jit(nonfinite_rows)(logits)), [0, 0, 1, 1, 1, 0])
    check_finite_logits(logits[:2])
    with pytest.raises(NonFiniteLogitsError, match=r"at generation step 4 .* particle\(s\) 2, 3, 4 \(of 6\)") as err:
        check_finite_logits(logits, "my kernel", step=4)
    assert err.value.step == 4 and err.value.particles == (2, 3, 4)
    assert isinstance(err.value, InputError) and "broken checkpoint" in str(err.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_prefill_reports_nonfinite_prompt_logits(value):
    base = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    bad = FaultyLM(base, step=0, particle=None, prompt_length=1, value=value)
    with pytest.raises(NonFiniteLogitsError, match="after the prompt"):
        bad.prefill([1], 3, 3)


# ---- memory (issue 11, case 10) ----------------------------------------------------------
def test_state_bytes_counts_the_kv_cache_logits_and_tokens(lm):
    c = lm.config
    n, capacity = 1000, 80
    # issue 12: the prompt's cache (P = PROMPT_BUCKET padded positions) is stored once; each
    # particle keeps capacity - P positions of its own, and its prompt offset (one int32)
    P = interface.PROMPT_BUCKET
    per_position = c.num_layers * 2 * c.num_kv_heads * c.head_dim * 4
    kv = P * per_position + n * (capacity - P) * per_position
    assert lm.state_bytes(n, capacity) == kv + n * c.vocab_size * 4 + n * capacity * 4 + 3 * n * 4
    tab = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=3)
    assert tab.state_bytes(10, 20) == 10 * (5 * 4 + 20 * 4 + 2 * 4 + 2 * 20 * 4)


def test_ten_million_particles_fail_up_front(lm):
    """~160 GB of KV cache for this tiny model: refused in well under 2 s, with the estimate."""
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"10000000 particles .* need about [\d.]+ GiB .* lower n") as err:
        models.sample(lm, [1, 2], n=10**7, max_new_tokens=40, key=0)
    assert time.perf_counter() - start < 2.0
    needed = lm.state_bytes(10**7, 56)
    assert f"{needed:,} bytes" in str(err.value)


def test_memory_check_uses_the_available_memory(lm, monkeypatch):
    needed = lm.state_bytes(8, 20)
    monkeypatch.setattr(interface, "available_memory_bytes", lambda device=None: needed - 1)
    with pytest.raises(InputError, match="of memory is available"):
        lm.prefill([1, 2], 8, 4)
    monkeypatch.setattr(interface, "available_memory_bytes", lambda device=None: needed)
    assert lm.prefill([1, 2], 8, 4).num_particles == 8
    monkeypatch.setattr(interface, "available_memory_bytes", lambda device=None: None)  # unknown: no check
    assert lm.prefill([1, 2], 8, 4).num_particles == 8


def test_available_memory_is_positive():
    free = interface.available_memory_bytes()
    assert free is None or free > 0


# ---- the memory planner (issue 12) ---------------------------------------------------------
def test_memory_plan_matches_the_live_buffers_of_the_state(lm):
    """The planner's state estimate, from shapes alone, equals the bytes JAX holds after prefill."""
    plan = lm.plan_memory(6, 8, prompt_length=20, num_prompts=1)
    before = jax.live_arrays()  # held, so that no new array can reuse the id of a freed one
    seen = {id(x) for x in before}
    state = jax.block_until_ready(lm.prefill(list(range(1, 21)), 6, 8))
    live = sum(x.nbytes for x in jax.live_arrays() if id(x) not in seen)
    assert live == plan.state
    assert plan.capacity == state.capacity and plan.weights == lm.weight_bytes() > 0
    assert lm.plan_memory(6, 8, 20, num_prompts=3).state == 3 * plan.state
    assert plan.total == plan.weights + plan.state + plan.working


def test_memory_plan_refuses_a_budget_naming_the_numbers(lm, monkeypatch):
    plan = lm.plan_memory(64, 16, 4)
    with pytest.raises(InputError, match=r"64 particles .* need about .*weights .*model state .* lower n") as err:
        plan.check(budget=plan.total - 1)
    assert f"{plan.total:,} bytes" in str(err.value)
    assert plan.check(budget=plan.total) is plan
    with pytest.raises(InputError, match="of memory is available"):
        plan.check(available=plan.state + plan.working - 1)
    monkeypatch.setenv(interface.MEMORY_BUDGET_ENV, "1KiB")
    with pytest.raises(InputError, match="memory budget"):
        models.sample(lm, [1, 2], n=4, max_new_tokens=4, key=0)
    monkeypatch.setenv(interface.MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(InputError, match="8GiB"):
        plan.check()


def test_the_prompt_cache_is_stored_once_and_never_moved_by_resampling(lm):
    """prefill keeps the prompt's KV cache once (interface.Shared, leading axis 1); gather moves
    only the per-particle leaves, whose bytes are particle_bytes; the state's total is
    state_bytes (prompt once + n x own part)."""
    n = 5
    state = lm.prefill(list(range(1, 21)), n, 8)
    shared = state.cache["prompt"]
    assert isinstance(shared, interface.Shared)
    assert all(x.shape[0] == 1 for x in jax.tree.leaves(shared))
    assert all(x.shape[0] == n for x in jax.tree.leaves(interface.map_particles(lambda x: x, state),
                                                        is_leaf=lambda x: isinstance(x, interface.Shared))
               if not isinstance(x, interface.Shared))
    moved = lm.gather(state, jnp.array([4, 4, 0, 1, 2]))
    assert moved.cache["prompt"] is shared or all(
        a is b for a, b in zip(jax.tree.leaves(moved.cache["prompt"]), jax.tree.leaves(shared)))
    total = sum(x.nbytes for x in jax.tree.leaves(state))
    assert total == lm.plan_memory(n, 8, 20).state
    assert interface.particle_bytes(state) == total - sum(x.nbytes for x in jax.tree.leaves(shared))
    np.testing.assert_array_equal(np.asarray(moved.cache["k"][0][0]), np.asarray(state.cache["k"][0][4]))
