"""One config-driven Flax NNX decoder for GPT-2, Llama, Mistral, Qwen2, Qwen3 and Phi-3.

The module tree is canonical (separate q/k/v projections, separate gate/up projections);
``checkpoint.py`` maps it to and from each architecture's Hugging Face tensor names (fusing
or splitting Phi-3's ``qkv_proj``/``gate_up_proj`` and GPT-2's ``c_attn``).

Call: ``logits, cache = decoder(tokens, positions, cache)`` with ``tokens``/``positions`` int32
``[B, L]``. With a cache, the new keys/values are first scattered at ``positions`` (positions
at or past the capacity are dropped), then a query at position ``p`` attends to cache slots
``<= p`` (and ``> p - window`` for sliding-window layers). Without a cache, the L tokens attend
to each other under the same position rule (plain causal attention for increasing positions).

A cache may also hold a prompt shared by every row (``prompt_k``/``prompt_v`` per layer, leading
axis 1, and ``offset`` [B], each row's prompt length): row b then reads positions
``< offset[b]`` from the shared part and keeps only its generated keys, position
``offset[b] + s`` in slot s of ``k``/``v`` (see ``Attention._with_prompt``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import ArchConfig, rope_inv_freq

_NEG = -1e30  # finite "minus infinity": a fully masked row gives a uniform softmax, never NaN


def _init(rngs: nnx.Rngs, shape, dtype, std=0.02):
    return (jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype)


class Linear(nnx.Module):
    """y = x @ kernel (+ bias); kernel stored [in, out]."""

    def __init__(self, d_in: int, d_out: int, bias: bool, *, rngs: nnx.Rngs, dtype):
        self.kernel = nnx.Param(_init(rngs, (d_in, d_out), dtype))
        self.bias = nnx.Param(jnp.zeros((d_out,), dtype)) if bias else None

    def __call__(self, x):
        kernel = self.kernel[...]
        # accumulated in float32 and rounded once; with bfloat16 weights this also lets XLA:CPU
        # use its native bf16 x bf16 -> f32 kernels (with a bf16 result the products ran at
        # float32 speed: measured, benchmarks/RESULTS.md "bfloat16 on a CPU")
        y = jnp.dot(x.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(kernel.dtype)


class Embed(nnx.Module):
    def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs, dtype):
        self.embedding = nnx.Param(_init(rngs, (num, dim), dtype))

    def __call__(self, ids):
        return jnp.take(self.embedding[...], ids, axis=0, mode="clip")


class RMSNorm(nnx.Module):
    """Computed in float32, cast back to the input dtype, then scaled (as transformers does)."""

    def __init__(self, dim: int, eps: float, *, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * x32.astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


def _norm(config: ArchConfig, dim: int, dtype):
    if config.norm == "rms":
        return RMSNorm(dim, config.norm_eps, dtype=dtype)
    return LayerNorm(dim, config.norm_eps, dtype=dtype)


def _activation(name: str):
    if name == "silu":
        return jax.nn.silu
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}")


def _rotate(x, cos, sin):
    """Rotate-half rope on the leading ``rotary_dim`` features of x [B, L, H, Dh]."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    out = x_rot * cos + rotated * sin
    if x_pass.shape[-1]:
        out = jnp.concatenate([out, x_pass], axis=-1)
    return out


def cache_storage_dtype(dtype):
    """The dtype a KV cache for a model in ``dtype`` is stored in. On a CPU, a bfloat16 model
    keeps float32 caches: XLA:CPU writes into a bfloat16 array by converting the WHOLE array to
    float32 and back at every decode step (and reads it through slow conversions), which cost
    more than the bf16 matmuls save (measured: benchmarks/RESULTS.md, "bfloat16 on a CPU").
    The values are the same (keys and values are rounded to bfloat16 before they are stored);
    only the bytes double. On other backends the cache has the model's dtype."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
        return jnp.dtype(jnp.float32)
    return dtype


class Attention(nnx.Module):
    def __init__(self, config: ArchConfig, layer_idx: int, *, rngs: nnx.Rngs, dtype):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, c.qkv_bias, rngs=rngs, dtype=dtype)
        self.k_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, c.qkv_bias, rngs=rngs, dtype=dtype)
        self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, c.qkv_bias, rngs=rngs, dtype=dtype)
        self.o_proj = Linear(c.num_heads * c.head_dim, c.hidden_size, c.o_bias, rngs=rngs, dtype=dtype)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.norm_eps, dtype=dtype)
            self.k_norm = RMSNorm(c.head_dim, c.norm_eps, dtype=dtype)
        else:
            self.q_norm = self.k_norm = None
        scale = c.attn_scale if c.attn_scale is not None else c.head_dim ** -0.5
        if c.scale_attn_by_inverse_layer_idx:
            scale = scale / float(layer_idx + 1)
        self.scale = float(scale)
        self.window = c.layer_windows[layer_idx]

    def __call__(self, x, positions, rope, layer_cache):
        B, L, _ = x.shape
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, L, H, D)
        k = self.k_proj(x).reshape(B, L, K, D)
        v = self.v_proj(x).reshape(B, L, K, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = _rotate(q, cos, sin).astype(x.dtype), _rotate(k, cos, sin).astype(x.dtype)

        if layer_cache is not None and "prompt_k" in layer_cache:
            return self._with_prompt(x, q, k, v, positions, layer_cache)
        if layer_cache is None:
            keys, values, key_pos = k, v, positions                      # [B, S=L]
            new_cache = None
        else:
            rows = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, L))
            keys = layer_cache["k"].at[rows, positions].set(k.astype(layer_cache["k"].dtype), mode="drop")
            values = layer_cache["v"].at[rows, positions].set(v.astype(layer_cache["v"].dtype), mode="drop")
            new_cache = {"k": keys, "v": values}
            key_pos = jnp.arange(keys.shape[1], dtype=jnp.int32)[None, :]  # [1, S=capacity]

        if layer_cache is not None and L == 1:  # one token per row: the decode step
            out = decode_attention(q[:, 0].reshape(B, K, H // K, D), keys, values, positions[:, 0],
                                   self.scale, self.window)
            return self.o_proj(out.reshape(B, 1, H * D).astype(x.dtype)), new_cache

        qpos = positions[:, :, None]                                     # [B, L, 1]
        kpos = key_pos[:, None, :]                                       # [B|1, 1, S]
        mask = kpos <= qpos
        if self.window is not None:
            mask = mask & (kpos > qpos - self.window)

        G = H // K
        qg = q.reshape(B, L, K, G, D)
        keys = keys.astype(q.dtype)
        scores = jnp.einsum("blkgd,bskd->bkgls", qg, keys, preferred_element_type=jnp.float32) * self.scale
        scores = jnp.where(mask[:, None, None, :, :], scores, _NEG)
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bkgls,bskd->blkgd", probs.astype(x.dtype), values.astype(x.dtype),
                         preferred_element_type=jnp.float32).astype(x.dtype)
        return self.o_proj(out.reshape(B, L, H * D)), new_cache


    def _with_prompt(self, x, q, k, v, positions, layer_cache):
        """Attention over a shared prompt cache plus each row's own cache of generated keys.

        ``prompt_k``/``prompt_v`` [1, P, K, D] hold positions 0..P-1 (row b uses the first
        ``offset[b]``: its prompt); ``k``/``v`` [B, Sg, K, D] hold position ``offset[b] + s`` in
        slot s. The new keys/values go to slots ``positions - offset`` (dropped outside
        [0, Sg)); the prompt part is never written (a position before ``offset`` is a prompt
        position, whose keys the shared cache already holds).
        """
        B, L, H, D = q.shape
        K = self.num_kv_heads
        offset = layer_cache["offset"].astype(jnp.int32)                   # [B]
        gen_k, gen_v = layer_cache["k"], layer_cache["v"]
        Sg = gen_k.shape[1]
        slots = positions - offset[:, None]
        slots = jnp.where(slots >= 0, slots, Sg)                           # out of range: dropped
        rows = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, L))
        gen_k = gen_k.at[rows, slots].set(k.astype(gen_k.dtype), mode="drop")
        gen_v = gen_v.at[rows, slots].set(v.astype(gen_v.dtype), mode="drop")
        new_cache = {"k": gen_k, "v": gen_v}
        pk, pv = layer_cache["prompt_k"], layer_cache["prompt_v"]
        if L == 1:
            out = decode_attention(q[:, 0].reshape(B, K, H // K, D), gen_k, gen_v, positions[:, 0], self.scale,
                                   self.window, prompt_keys=pk, prompt_values=pv, offset=offset)
            return self.o_proj(out.reshape(B, 1, H * D).astype(x.dtype)), new_cache
        G = H // K
        qg = q.reshape(B, L, K, G, D)
        qpos = positions[:, :, None]                                       # [B, L, 1]
        ppos = jnp.arange(pk.shape[1], dtype=jnp.int32)[None, None, :]     # [1, 1, P]
        gpos = offset[:, None, None] + jnp.arange(Sg, dtype=jnp.int32)[None, None, :]  # [B, 1, Sg]
        pmask = (ppos < offset[:, None, None]) & (ppos <= qpos)
        gmask = gpos <= qpos
        if self.window is not None:
            pmask = pmask & (ppos > qpos - self.window)
            gmask = gmask & (gpos > qpos - self.window)
        sp = jnp.einsum("blkgd,skd->bkgls", qg, pk[0].astype(q.dtype), preferred_element_type=jnp.float32)
        sg = jnp.einsum("blkgd,bskd->bkgls", qg, gen_k.astype(q.dtype), preferred_element_type=jnp.float32)
        mask = jnp.concatenate([jnp.broadcast_to(pmask, (B, L, pk.shape[1])), gmask], -1)
        scores = jnp.concatenate([sp, sg], -1) * self.scale
        scores = jnp.where(mask[:, None, None], scores, _NEG)
        probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
        P = pk.shape[1]
        out = (jnp.einsum("bkgls,skd->blkgd", probs[..., :P], pv[0].astype(x.dtype), preferred_element_type=jnp.float32)
               + jnp.einsum("bkgls,bskd->blkgd", probs[..., P:], gen_v.astype(x.dtype),
                            preferred_element_type=jnp.float32)).astype(x.dtype)
        return self.o_proj(out.reshape(B, L, H * D)), new_cache


#: the smallest length bucket (cache slots) of the decode step's attention (:func:`decode_attention`)
DECODE_BLOCK = 16


def fill_buckets(capacity: int, smallest: int | None = None) -> tuple[int, ...]:
    """The static prefix lengths a cache of ``capacity`` slots is read at: ``smallest * 2**i``
    and ``1.5 * smallest * 2**i`` below ``capacity``, then ``capacity`` (``smallest`` defaults
    to :data:`DECODE_BLOCK`, read at trace time). Two buckets per doubling: a bucket holds at
    most 1.5x the slots it is chosen for (past the smallest), at ``2 ceil(log2(capacity / smallest)) + 1``
    compiled branches at most (one bucket per doubling wasted up to 2x: measured slower)."""
    smallest = max(int(DECODE_BLOCK if smallest is None else smallest), 1)
    sizes, size = set(), smallest
    while size < capacity:
        sizes.update(s for s in (size, size + size // 2) if s < capacity)
        size *= 2
    return tuple(sorted(sizes)) + (int(capacity),)


def bucket_index(need, sizes) -> jax.Array:
    """Index of the first of ``sizes`` (ascending) that is ``>= need`` (a traced int scalar),
    the same for every prompt of a batch run (the longest prompt decides: under ``vmap`` a
    per-prompt index would make ``lax.switch`` run every branch)."""
    from genppl.models.batch import max_over_prompts  # here: models.batch imports the models package

    need = max_over_prompts(need)
    return sum((need > size).astype(jnp.int32) for size in sizes[:-1]) + jnp.int32(0)


def decode_attention(q, keys, values, qpos, scale: float, window: int | None = None, block: int | None = None,
                     prompt_keys=None, prompt_values=None, offset=None):
    """Attention of one query per row over the filled part of a KV cache (the decode step).

    q [B, K, G, D] (G query heads per KV head), keys/values [B, S, K, D] (the cache in its
    stored layout), qpos [B] int32: row b attends to the keys at positions ``<= qpos[b]`` (and
    ``> qpos[b] - window`` with a sliding window), with weights ``softmax(scale * q.k)``.
    Without ``offset``, slot s of the cache holds position s. With a shared prompt cache,
    ``prompt_keys``/``prompt_values`` [1, P, K, D] hold positions 0..P-1 of every row (row b
    uses its first ``offset[b]`` slots, its prompt) and slot s of ``keys``/``values`` holds
    position ``offset[b] + s``: the two segments are folded into one softmax (an online
    softmax in float32: running max ``m``, normaliser ``l``, weighted sum ``acc``, rescaled
    by ``exp(m_old - m_new)``), so the result equals the full softmax.

    Cost follows the filled length, not the capacity S: the cache of generated keys (the
    whole cache without ``offset``) is read up to a static length bucket (:func:`fill_buckets`:
    ``block`` (default :data:`DECODE_BLOCK`) times 1, 1.5, 2, 3, 4, 6, ... slots, then S), the
    smallest that holds the longest filled row, chosen by a ``lax.switch`` whose branch L
    reads the static slice ``keys[:, :L]``: one compiled program whatever the length (one
    branch per bucket, at most ``2 ceil(log2(S / block)) + 1``), reverse-mode differentiable. Under
    ``jax.vmap`` (many prompts) the longest prompt picks the bucket. The shared prompt cache
    is read whole (it is filled). Within a bucket the cost is that of L slots (at most 1.5x
    the filled length past the smallest bucket).

    No relayout and no copy of the whole cache: scores are a multiply-and-reduce over the
    minor (head_dim) axis of the cache as stored, ``sum_d q[b,k,g,d] * K[b,s,k,d]``, and the
    output a reduce over the slot axis, ``sum_s p[b,s,k,g] * V[b,s,k,d]`` (a batched dot makes
    XLA copy every layer's K and V into a [B, K, S, D] layout at every step). XLA:CPU hands
    these reductions to YNNPACK, which reads whole buffers: the bucket's slice (L < S) is
    copied out first, a copy of the filled part, never of the whole cache (the last bucket,
    L = S, reads the cache in place). Checked on the optimised HLO
    (``jax.jit(f).lower(...).compile().as_text()``) of a loop of decode steps:
    tests/models/architectures/test_decoder.py asserts that the loop body and every switch
    branch hold no transpose or copy of a cache-sized array and that every slice of the cache
    they take is a bucket shorter than the capacity. Products are taken in float32 (bfloat16
    caches are read as stored and converted inside the fusion).
    """
    B, K, G, D = q.shape
    qpos = qpos.astype(jnp.int32)
    q32 = q.astype(jnp.float32)[:, None]                                  # [B, 1, K, G, D]
    carry = (jnp.full((B, K, G), _NEG, jnp.float32), jnp.zeros((B, K, G), jnp.float32),
             jnp.zeros((B, K, G, D), jnp.float32))
    if offset is None:
        carry = _fold_filled(carry, q32, keys, values, jnp.zeros_like(qpos), qpos + 1, qpos, scale, window, block)
    else:
        offset = offset.astype(jnp.int32)
        # the prompt segment is read whole: it is filled (up to the padding of its bucket)
        carry = _fold_filled(carry, q32, prompt_keys, prompt_values, jnp.zeros_like(qpos),
                             jnp.minimum(offset, qpos + 1), qpos, scale, window, prompt_keys.shape[1])
        carry = _fold_filled(carry, q32, keys, values, offset, jnp.clip(qpos - offset + 1, 0, keys.shape[1]),
                             qpos, scale, window, block)
    _, l, acc = carry
    return acc / l[..., None]


def _fold_filled(carry, q32, keys, values, base, count, qpos, scale, window, block):
    """Fold slots ``s < count[b]`` of keys/values [B or 1, S, K, D] (at positions base[b] + s)
    into the online-softmax carry (m, l, acc), reading the smallest bucket of slots that holds
    every row's count (see :func:`decode_attention`)."""
    sizes = fill_buckets(keys.shape[1], block)

    def fold(size, carry):
        m, l, acc = carry
        kb = keys[:, :size].astype(jnp.float32)                           # a static slice: no cache-sized copy
        vb = values[:, :size].astype(jnp.float32)
        slot = jnp.arange(size, dtype=jnp.int32)
        valid = slot[None] < count[:, None]                                # [B, size]
        if window is not None:
            valid = valid & (base[:, None] + slot[None] > qpos[:, None] - window)
        scores = jnp.sum(q32 * kb[:, :, :, None, :], axis=-1) * scale      # [B, size, K, G]
        valid = valid[:, :, None, None]
        scores = jnp.where(valid, scores, _NEG)
        m_new = jnp.maximum(m, jnp.max(scores, axis=1))                    # [B, K, G]
        p = jnp.where(valid, jnp.exp(scores - m_new[:, None]), 0.0)
        corr = jnp.exp(m - m_new)
        l = l * corr + jnp.sum(p, axis=1)
        acc = acc * corr[..., None] + jnp.sum(p[..., None] * vb[:, :, :, None, :], axis=1)
        return m_new, l, acc

    if len(sizes) == 1:
        return fold(sizes[0], carry)
    branches = [functools.partial(fold, size) for size in sizes]
    return jax.lax.switch(bucket_index(jnp.max(count), sizes), branches, carry)


class MLP(nnx.Module):
    def __init__(self, config: ArchConfig, *, rngs: nnx.Rngs, dtype):
        c = config
        self.gated = c.gated_mlp
        if c.gated_mlp:
            self.gate_proj = Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, rngs=rngs, dtype=dtype)
        else:
            self.gate_proj = None
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, rngs=rngs, dtype=dtype)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, c.mlp_bias, rngs=rngs, dtype=dtype)
        self.act = _activation(c.activation)

    def __call__(self, x):
        if self.gated:
            h = self.act(self.gate_proj(x)) * self.up_proj(x)
        else:
            h = self.act(self.up_proj(x))
        return self.down_proj(h)


class Block(nnx.Module):
    def __init__(self, config: ArchConfig, layer_idx: int, *, rngs: nnx.Rngs, dtype):
        self.attn_norm = _norm(config, config.hidden_size, dtype)
        self.attn = Attention(config, layer_idx, rngs=rngs, dtype=dtype)
        self.mlp_norm = _norm(config, config.hidden_size, dtype)
        self.mlp = MLP(config, rngs=rngs, dtype=dtype)

    def __call__(self, x, positions, rope, layer_cache):
        h, new_cache = self.attn(self.attn_norm(x), positions, rope, layer_cache)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return x, new_cache


class Decoder(nnx.Module):
    """Decoder-only transformer; ``__call__(tokens, positions, cache) -> (logits f32, cache)``."""

    def __init__(self, config: ArchConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.embed = Embed(config.vocab_size, config.hidden_size, rngs=rngs, dtype=dtype)
        if config.position_embedding == "learned":
            self.pos_embed = Embed(config.max_position_embeddings, config.hidden_size, rngs=rngs, dtype=dtype)
        else:
            self.pos_embed = None
        self.layers = nnx.List([Block(config, i, rngs=rngs, dtype=dtype) for i in range(config.num_layers)])
        self.final_norm = _norm(config, config.hidden_size, dtype)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, False, rngs=rngs, dtype=dtype)

    def _rope(self, positions, dtype):
        if self.config.position_embedding != "rope":
            return None
        inv_freq, scaling = rope_inv_freq(self.config)
        freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, L, rot/2]
        emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]            # [B, L, 1, rot]
        cos, sin = jnp.cos(emb), jnp.sin(emb)
        if scaling != 1.0:
            cos, sin = cos * scaling, sin * scaling
        return cos.astype(dtype), sin.astype(dtype)

    def __call__(self, tokens, positions, cache=None, return_hidden: bool = False):
        tokens = jnp.asarray(tokens, jnp.int32)
        positions = jnp.asarray(positions, jnp.int32)
        if tokens.ndim != 2 or positions.shape != tokens.shape:
            raise ValueError(f"tokens and positions must both be [batch, length]; got {tokens.shape} and {positions.shape}")
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
        rope = self._rope(positions, x.dtype)
        new_layers = []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else {"k": cache["k"][i], "v": cache["v"][i]}
            if cache is not None and "prompt_k" in cache:  # a prompt cache shared by every row
                layer_cache.update(prompt_k=cache["prompt_k"][i], prompt_v=cache["prompt_v"][i], offset=cache["offset"])
            x, nc = layer(x, positions, rope, layer_cache)
            new_layers.append(nc)
        x = self.final_norm(x)
        hidden = x  # [B, L, hidden_size]: returned only when asked (learned twist heads)
        if self.lm_head is None:
            emb = self.embed.embedding[...]
            logits = jnp.einsum("bld,vd->blv", x, emb, preferred_element_type=jnp.float32)
        else:
            kernel = self.lm_head.kernel[...]
            logits = jnp.einsum("bld,dv->blv", x, kernel, preferred_element_type=jnp.float32)
        new_cache = None if cache is None else \
            {"k": tuple(c["k"] for c in new_layers), "v": tuple(c["v"] for c in new_layers)}
        if cache is not None and "prompt_k" in cache:
            new_cache.update(prompt_k=cache["prompt_k"], prompt_v=cache["prompt_v"], offset=cache["offset"])
        if return_hidden:
            return logits.astype(jnp.float32), new_cache, hidden
        return logits.astype(jnp.float32), new_cache


def build_decoder(config: ArchConfig, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> Decoder:
    """A randomly initialised decoder (normal(0, 0.02) weights, unit norms) with params in ``dtype``."""
    if rngs is None:
        rngs = nnx.Rngs(0)
    return Decoder(config, rngs=rngs, dtype=dtype)


def init_cache(config: ArchConfig, batch: int, capacity: int, dtype=jnp.float32) -> dict:
    """An empty KV cache: ``{"k": (layer arrays), "v": (...)}``, each ``[batch, capacity, n_kv_heads, head_dim]``
    in :func:`cache_storage_dtype` ``(dtype)``."""
    shape = (int(batch), int(capacity), config.num_kv_heads, config.head_dim)
    zeros = lambda: jnp.zeros(shape, cache_storage_dtype(dtype))  # noqa: E731
    return {"k": tuple(zeros() for _ in range(config.num_layers)),
            "v": tuple(zeros() for _ in range(config.num_layers))}


def cache_bytes(config: ArchConfig, batch: int, capacity: int, dtype=jnp.float32) -> int:
    """Size of ``init_cache(config, batch, capacity, dtype)`` in bytes."""
    itemsize = cache_storage_dtype(dtype).itemsize
    return 2 * config.num_layers * batch * capacity * config.num_kv_heads * config.head_dim * itemsize
