"""The Flax NNX decoder (models/architectures/decoder.py) against transformers (PyTorch) on tiny
random checkpoints made on the spot: for each architecture, logits parity (float32, no cache),
cached incremental decoding equals the full pass, per-row positions equal per-row runs, and a
bfloat16 load stays close to float32; then the cache's write rule and a training step.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.hlo import elements, loop_body_ops
from tests.models.architectures.common import (
    COMMON, TOL, B, L, V, arange_positions, archs, jitted, random_tokens, torch_logits, transformers,
)
from flax import nnx  # noqa: E402

from genppl.models.architectures import (  # noqa: E402
    ArchConfig, build_decoder, cache_bytes, cache_storage_dtype, init_cache, load_checkpoint, save_checkpoint,
)


# ---------------------------------------------------------------------------------- per architecture
def test_logits_match_transformers(arch):
    tokens = random_tokens(1, (B, L))
    ours, cache = arch["forward"](tokens, arange_positions(B, L))
    assert cache is None and ours.dtype == jnp.float32 and ours.shape == (B, L, V)
    diff = np.abs(np.asarray(ours) - torch_logits(arch["torch"], tokens)).max()
    print(f"{arch['name']}: max |logit diff| vs transformers = {diff:.2e}")
    assert diff <= TOL


def test_cached_incremental_decoding_equals_full_pass(arch):
    config, forward = arch["config"], arch["forward"]
    tokens = random_tokens(2, (B, L))
    full, _ = forward(tokens, arange_positions(B, L))
    prefix = 7
    cache = init_cache(config, B, 32, jnp.float32)
    assert all(leaf.shape[0] == B for leaf in jax.tree.leaves(cache))
    step_logits, cache = forward(tokens[:, :prefix], arange_positions(B, prefix), cache)
    pieces = [step_logits]
    for t in range(prefix, L):
        logits, cache = forward(tokens[:, t:t + 1], arange_positions(B, 1, t), cache)
        pieces.append(logits)
    incremental = np.concatenate([np.asarray(p) for p in pieces], axis=1)
    assert np.abs(incremental - np.asarray(full)).max() <= TOL


@pytest.mark.parametrize("arch", archs("gpt2", "qwen2", "phi3"), indirect=True)
def test_rows_at_different_positions_equal_per_row_runs(arch):
    """Rows of different lengths share one cache batch; stale entries past a row's length are harmless."""
    config, forward = arch["config"], arch["forward"]
    lengths = np.array([4, 9, 13])
    total = 18
    tokens = random_tokens(3, (B, total))
    junk = random_tokens(4, (B, 13))  # prefill writes junk past each row's true length
    prompt = np.where(np.arange(13)[None] < lengths[:, None], tokens[:, :13], junk)
    cache = init_cache(config, B, 24, jnp.float32)
    _, cache = forward(prompt, arange_positions(B, 13), cache)
    got = {r: [] for r in range(B)}
    pos = lengths.copy()
    for _ in range(2):  # extend every row by chunks of 2 tokens at its own positions
        idx = pos[:, None] + np.arange(2)[None]
        chunk = np.take_along_axis(tokens, idx, axis=1)
        logits, cache = forward(chunk, jnp.asarray(idx, jnp.int32), cache)
        for r in range(B):
            got[r].append(np.asarray(logits[r]))
        pos += 2
    for r in range(B):  # reference: row r alone, no cache (causal, so later tokens do not matter)
        ref, _ = forward(tokens[r:r + 1], arange_positions(1, total))
        n = lengths[r] + 4
        np.testing.assert_allclose(np.concatenate(got[r]), np.asarray(ref[0, lengths[r]:n]), atol=TOL, rtol=0)


@pytest.mark.parametrize("arch", archs("gpt2", "llama3"), indirect=True)
def test_bfloat16_load_stays_close_to_float32(arch):
    decoder16, _ = load_checkpoint(arch["path"], dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(decoder16, nnx.Param))
    assert all(p.dtype == jnp.bfloat16 for p in params)
    tokens = random_tokens(5, (B, L))
    ours16, _ = jitted(decoder16)(tokens, arange_positions(B, L))
    ours32, _ = arch["forward"](tokens, arange_positions(B, L))
    assert ours16.dtype == jnp.float32 and np.isfinite(np.asarray(ours16)).all()
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2%) on every weight and activation; through
    # two blocks the error stays a few percent of the logit scale. 5% of the largest logit is far below the
    # spread of the logits themselves, so a wrong mapping or a float32-only bug would still fail.
    scale = np.abs(np.asarray(ours32)).max()
    err = np.abs(np.asarray(ours16) - np.asarray(ours32)).max()
    assert err <= 0.05 * scale, (err, scale)
    # and the bf16 model ranks tokens the same way almost everywhere
    agree = np.mean(np.argmax(np.asarray(ours16), -1) == np.argmax(np.asarray(ours32), -1))
    assert agree >= 0.9


# ---------------------------------------------------------------------------------- cache and training
def test_writes_past_capacity_are_dropped_not_clamped():
    config = ArchConfig.from_hf(transformers.LlamaConfig(**COMMON))
    forward = jitted(build_decoder(config, rngs=nnx.Rngs(0)))
    cache = init_cache(config, 2, 8, jnp.float32)
    tokens = jnp.asarray(random_tokens(7, (2, 8)))
    _, cache = forward(tokens, arange_positions(2, 8), cache)
    _, after = forward(tokens[:, :1], jnp.array([[8], [3]], jnp.int32), cache)
    for before_k, after_k in zip(cache["k"], after["k"]):
        np.testing.assert_array_equal(np.asarray(after_k[0]), np.asarray(before_k[0]))  # row 0: dropped
        assert not np.array_equal(np.asarray(after_k[1, 3]), np.asarray(before_k[1, 3]))  # row 1: rewritten


def test_random_init_trains_and_saves(tmp_path):
    """The path the training script takes: build, split Params, grad, save, reload with transformers."""
    config = ArchConfig.from_hf(transformers.LlamaConfig(**COMMON | {"tie_word_embeddings": True}))
    decoder = build_decoder(config, rngs=nnx.Rngs(0), dtype=jnp.float32)
    graphdef, params, rest = nnx.split(decoder, nnx.Param, ...)
    tokens = jnp.asarray(random_tokens(8, (2, 12)))

    def loss(params):
        logits, _ = nnx.merge(graphdef, params, rest)(tokens[:, :-1], arange_positions(2, 11), None)
        logp = jax.nn.log_softmax(logits, -1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert value == pytest.approx(np.log(V), abs=0.1)
    save_checkpoint(decoder, config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"] and saved["tie_word_embeddings"] is True
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ours, _ = decoder(tokens, arange_positions(2, 12), None)
    assert np.abs(torch_logits(torch_model, tokens) - np.asarray(ours)).max() <= TOL


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])


def test_cache_bytes_is_the_size_of_init_cache(dtype):
    config = ArchConfig.from_hf(transformers.LlamaConfig(**COMMON))
    cache = jax.eval_shape(lambda: init_cache(config, 3, 24, dtype))
    size = sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(cache))
    stored = cache_storage_dtype(dtype)  # float32 for a bfloat16 model on a CPU
    assert {x.dtype for x in jax.tree.leaves(cache)} == {stored}
    assert cache_bytes(config, 3, 24, dtype) == size == 2 * 2 * 3 * 24 * 2 * 16 * stored.itemsize


# ---------------------------------------------------------------------------------- decode attention
def _reference_attention(q, keys, values, qpos, scale, window):
    B, S, K, D = keys.shape
    kpos = np.arange(S)[None]
    mask = kpos <= np.asarray(qpos)[:, None]
    if window is not None:
        mask &= kpos > np.asarray(qpos)[:, None] - window
    s = np.einsum("bkgd,bskd->bkgs", np.asarray(q, np.float64), np.asarray(keys, np.float64)) * scale
    s = np.where(mask[:, None, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bkgs,bskd->bkgd", p, np.asarray(values, np.float64))


@pytest.mark.parametrize("window", [None, 5])
def test_decode_attention_over_blocks_equals_the_full_softmax(window):
    """The blocked online softmax equals the exact softmax over the filled slots, for rows of
    different lengths, a capacity that is not a multiple of the block (the last block overlaps
    the one before) and a sliding window."""
    from genppl.models.architectures.decoder import decode_attention

    B, S, K, G, D = 4, 37, 2, 3, 8
    ks = jax.random.split(jax.random.key(5), 3)
    q = jax.random.normal(ks[0], (B, K, G, D))
    keys, values = jax.random.normal(ks[1], (B, S, K, D)), jax.random.normal(ks[2], (B, S, K, D))
    qpos = jnp.array([0, 9, 30, 36], jnp.int32)
    for block in (8, 64):  # 5 blocks, the last overlapping; one block holding the whole cache
        got = jax.jit(decode_attention, static_argnums=(4, 5, 6))(q, keys, values, qpos, 0.3, window, block)
        np.testing.assert_allclose(np.asarray(got), _reference_attention(q, keys, values, qpos, 0.3, window),
                                   atol=1e-5, rtol=1e-5)


def _cache_sized_ops(lm, op_pattern: str, steps: int = 4) -> list[str]:
    """Instructions matching ``op_pattern`` on an array at least as large as one layer's K cache,
    in the optimised HLO of a loop of ``steps`` decode steps of ``lm`` (3 rows)."""
    n = 3
    state = lm.prefill([1, 2, 3], n, 40)
    size = int(np.prod(state.cache["k"][0].shape))

    def decode(lm, state):
        tokens = jnp.full((n,), 5, jnp.int32)
        return jax.lax.fori_loop(0, steps, lambda i, s: lm.extend(s, tokens), state)

    ops = loop_body_ops(jax.jit(decode).lower(lm, state).compile().as_text())
    assert any("dynamic-update-slice" in op or "scatter" in op for op in ops), "no decode step found in the loop"
    return [op.strip()[:160] for op in ops if re.search(op_pattern, op) and elements(op) >= size]


def test_decode_steps_read_the_kv_cache_in_place(llama_lm, monkeypatch):
    """The optimised HLO of a loop of decode steps holds no transpose and no copy of an array as
    large as a layer's K or V cache: the cache is read in its stored layout (this check fails on
    a batched-dot attention, which relayouts every layer's cache at every step)."""
    from genppl.models.architectures import decoder

    monkeypatch.setattr(decoder, "DECODE_BLOCK", 16)  # several blocks: the loop path is compiled
    relayouts = _cache_sized_ops(llama_lm, r"\b(transpose|copy)\(")
    assert not relayouts, f"the decode step copies or transposes the KV cache: {relayouts}"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the float32 cache of a bf16 model is a CPU rule")
def test_bfloat16_decode_steps_convert_no_cache(llama_lm):
    """A bfloat16 model's decode loop converts no cache-sized array: on a CPU its KV caches are
    float32 (``cache_storage_dtype``), because XLA:CPU writes into a bf16 cache by converting all
    of it to float32 and back at every step (this check fails with bf16 caches)."""
    from genppl.models.transformer import TransformerLM

    lm = llama_lm
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, lm.params)
    lm16 = TransformerLM(lm.graphdef, params, lm.config, lm.tokenizer, jnp.bfloat16)
    assert lm16.prefill([1, 2], 2, 4).cache["k"][0].dtype == cache_storage_dtype(jnp.bfloat16)
    converts = _cache_sized_ops(lm16, r"\bconvert\(|wrapped_convert")
    assert not converts, f"the bfloat16 decode step converts whole caches: {converts}"


@pytest.mark.parametrize("arch", ["mistral"], indirect=True)
def test_shared_prompt_cache_equals_the_full_pass(arch):
    """A prompt's cache held once for all rows (``prompt_k``/``prompt_v`` with a leading axis of
    1, ``offset`` = prompt length) plus each row's own generated keys: one-token decode steps
    and a multi-token pass give the logits of the full causal pass. Run on Mistral, whose
    sliding window crosses the prompt/generated boundary (without a window the path is the same
    code, and every TransformerLM test in tests/models and tests/inference runs through it)."""
    config, forward = arch["config"], arch["forward"]
    P, prompt_len = 8, 6  # the prompt is padded to P slots; rows use the first prompt_len
    tokens = random_tokens(9, (B, L))
    tokens[:, :prompt_len] = tokens[0, :prompt_len]  # one prompt, shared by the B rows
    full, _ = forward(tokens, arange_positions(B, L))
    padded = np.concatenate([tokens[:1, :prompt_len], random_tokens(10, (1, P - prompt_len))], 1)
    _, prompt_cache = forward(padded, arange_positions(1, P), init_cache(config, 1, P, jnp.float32))
    own = init_cache(config, B, 16, jnp.float32)
    cache = {"k": own["k"], "v": own["v"], "prompt_k": prompt_cache["k"], "prompt_v": prompt_cache["v"],
             "offset": jnp.full((B,), prompt_len, jnp.int32)}
    pieces = []
    for t in range(prompt_len, prompt_len + 6):  # decode steps
        logits, cache = forward(tokens[:, t:t + 1], arange_positions(B, 1, t), cache)
        pieces.append(logits)
        assert cache["prompt_k"][0].shape[0] == 1
    start = prompt_len + 6
    logits, cache = forward(tokens[:, start:L], arange_positions(B, L - start, start), cache)  # one pass of L - start
    pieces.append(logits)
    got = np.concatenate([np.asarray(p) for p in pieces], axis=1)
    assert got.shape[1] == L - prompt_len
    assert np.abs(got - np.asarray(full)[:, prompt_len:]).max() <= TOL


# ------------------------------------------------------------------- length buckets (issue 12)
def test_length_buckets_grow_by_half_and_whole_steps():
    from genppl.models.architectures.decoder import fill_buckets

    assert fill_buckets(192, 16) == (16, 24, 32, 48, 64, 96, 128, 192)
    assert fill_buckets(37, 4) == (4, 6, 8, 12, 16, 24, 32, 37)
    assert fill_buckets(16, 16) == (16,) and fill_buckets(5, 16) == (5,)
    for capacity in (1, 17, 100, 2048):
        sizes = fill_buckets(capacity, 16)
        assert sizes[-1] == capacity and list(sizes) == sorted(set(sizes))
        assert len(sizes) <= 2 * max(np.ceil(np.log2(capacity / 16)), 0) + 1
        assert all(b <= 1.5 * a for a, b in zip(sizes, sizes[1:]))  # at most 1.5x the slots needed


@pytest.mark.parametrize("window", [None, 5])
def test_decode_attention_in_every_length_bucket_equals_the_full_softmax(window):
    """Rows whose longest filled length falls in each bucket (block 4, capacity 37: buckets 4, 6,
    8, ..., 32, 37), with and without a shared prompt segment: the bucket read equals the exact
    softmax over the filled slots."""
    from genppl.models.architectures.decoder import decode_attention

    B, S, K, G, D, P = 3, 37, 2, 3, 8, 6
    ks = jax.random.split(jax.random.key(6), 5)
    q = jax.random.normal(ks[0], (B, K, G, D))
    keys, values = jax.random.normal(ks[1], (B, S, K, D)), jax.random.normal(ks[2], (B, S, K, D))
    pk, pv = jax.random.normal(ks[3], (1, P, K, D)), jax.random.normal(ks[4], (1, P, K, D))
    offset = np.array([4, 6, 5], np.int32)  # each row's prompt length (<= P)
    own = jax.jit(decode_attention, static_argnums=(4, 5, 6))
    shared = jax.jit(lambda q, k, v, qpos, pk, pv, off: decode_attention(q, k, v, qpos, 0.3, window, 4, pk, pv, off))
    for top in range(S):
        qpos = jnp.array([0, top // 2, top], jnp.int32)
        np.testing.assert_allclose(np.asarray(own(q, keys, values, qpos, 0.3, window, 4)),
                                   _reference_attention(q, keys, values, qpos, 0.3, window), atol=1e-5, rtol=1e-5)
        # shared prompt: row b's position p < offset[b] is prompt slot p, then generated slot p - offset[b]
        full_k = np.stack([np.concatenate([np.asarray(pk[0, :o]), np.asarray(keys[b, :S - o])]) for b, o in enumerate(offset)])
        full_v = np.stack([np.concatenate([np.asarray(pv[0, :o]), np.asarray(values[b, :S - o])]) for b, o in enumerate(offset)])
        qpos_shared = jnp.asarray(offset) + qpos // 2  # generated slots up to top // 2 filled
        np.testing.assert_allclose(np.asarray(shared(q, keys, values, qpos_shared, pk, pv, jnp.asarray(offset))),
                                   _reference_attention(q, full_k, full_v, qpos_shared, 0.3, window), atol=1e-5, rtol=1e-5)


def test_decode_steps_read_a_length_bucket_never_the_whole_cache(llama_lm):
    """The optimised HLO of a loop of decode steps: each layer's attention over the generated keys
    is a switch with one branch per length bucket (4 buckets for a 40-slot cache: one compiled
    program for every length), and every slice of a cache array taken in the loop is a bucket
    shorter than the capacity (XLA:CPU copies a slice out before its YNNPACK reduction: the
    filled part, never the whole cache); ``test_decode_steps_read_the_kv_cache_in_place`` checks
    that no cache-sized copy or transpose remains."""
    from genppl.models.architectures.decoder import fill_buckets

    n, steps = 3, 4
    state = llama_lm.prefill([1, 2, 3], n, 40)
    _, S, K, D = state.cache["k"][0].shape
    buckets = fill_buckets(S)
    assert buckets == (16, 24, 32, 40)

    def decode(lm, state):
        tokens = jnp.full((n,), 5, jnp.int32)
        return jax.lax.fori_loop(0, steps, lambda i, s: lm.extend(s, tokens), state)

    ops = loop_body_ops(jax.jit(decode).lower(llama_lm, state).compile().as_text())
    switches = [op for op in ops if " conditional(" in op]
    assert len(switches) == llama_lm.config.num_layers
    assert all(op.count("branch_computations") == 1 and
               len(re.search(r"branch_computations=\{([^}]*)\}", op).group(1).split(",")) == len(buckets)
               for op in switches)
    sliced = [int(m.group(1)) for op in ops if re.search(r"\b(slice|dynamic-slice)\(", op)
              for m in [re.search(rf"= f32\[{n},(\d+),{K},{D}\]", op)] if m]
    assert sliced, "no slice of the cache found: the bucketed path was not compiled"
    assert set(sliced) <= set(buckets[:-1]), sliced
