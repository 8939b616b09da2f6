"""Tensor parallelism: logits over a model axis of 2 and 4 equal the one-device logits.

Every supported architecture, as a tiny random-initialised checkpoint made with transformers
(the architecture tests' configurations, with 8 query heads over 4 key/value heads so that a
model axis of 4 divides both and grouped-query attention is kept; GPT-2 has 4 heads). The
prefill logits, the logits after each of several decode steps and a ``score`` pass are compared
with the unsharded model's to 1e-5, and the KV cache (the particles' part and the shared
prompt part) must be split over the key/value heads.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from genppl import distributed
from genppl.models.architectures import load_checkpoint
from genppl.models.interface import InputError
from genppl.models.transformer import TransformerLM
from tests.models.architectures.common import ARCHS, V, make_torch_model

TOL = 1e-5
N, NEW, STEPS, SCORED = 3, 12, 5, 4
PROMPT = [1, 5, 7, 9, 11, 13, 2]


def _lm(name, tmp_path_factory, **extra):
    overrides = dict(extra) if name == "gpt2" else dict(extra, num_attention_heads=8, num_key_value_heads=4)
    path = tmp_path_factory.mktemp(f"tp-{name}")
    make_torch_model(name, **overrides).save_pretrained(str(path))
    decoder, config = load_checkpoint(path)
    return TransformerLM.from_module(decoder, config)


@jax.jit
def _decode_and_score(lm, state, tokens, continuation):
    """Logits after each of ``tokens.shape[1]`` decode steps, then a ``score`` of ``continuation``."""
    def step(state, token):
        state = lm.extend(state, token)
        return state, lm.logits(state)

    state, logits = jax.lax.scan(step, state, tokens.T)
    return logits, lm.score(state, continuation), state


def _run(lm):
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randint(0, V, (N, STEPS)), jnp.int32)
    continuation = jnp.asarray(rng.randint(0, V, (N, SCORED)), jnp.int32)
    state = lm.prefill(PROMPT, N, NEW)
    logits, scores, final = _decode_and_score(lm, state, tokens, continuation)
    return dict(prefill=state.logits, decode=logits, score=scores, state=final)


def _assert_tensor_parallel(lm, reference, model_parallel):
    mesh = distributed.make_mesh(model_parallel, model_parallel=model_parallel)
    out = _run(distributed.shard_model(lm, mesh))
    for what in ("prefill", "decode", "score"):
        np.testing.assert_allclose(np.asarray(out[what]), np.asarray(reference[what]), rtol=0, atol=TOL,
                                   err_msg=f"{what} logits over a model axis of {model_parallel}")
    cache = out["state"].cache
    K = lm.config.num_kv_heads
    for array in (cache["k"][0], cache["v"][-1], cache["prompt"].value["k"][0]):
        assert array.sharding.spec[2] == distributed.MODEL
        assert len(array.sharding.device_set) == model_parallel
        assert {shard.data.shape[2] for shard in array.addressable_shards} == {K // model_parallel}
    kernel = lm.params["layers"][0]["attn"]["q_proj"]["kernel"]
    assert kernel.shape[1] % model_parallel == 0


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request, tmp_path_factory):
    lm = _lm(request.param, tmp_path_factory)
    return lm, _run(lm)


@pytest.mark.slow  # 7 architectures x (one device, 2, 4): about 2 min of compiling on 2 CPU cores
@pytest.mark.parametrize("model_parallel", [2, 4])
def test_tensor_parallel_logits_equal_one_device(arch, model_parallel):
    lm, reference = arch
    _assert_tensor_parallel(lm, reference, model_parallel)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _lm("llama3", tmp_path_factory, num_hidden_layers=1)  # one layer: less to compile


def test_tensor_parallel_prefill_over_two_devices(llama):
    # the default suite's sample of the slow test above (which adds decode steps and score on every
    # architecture): Llama-3 (GQA, rope scaling, untied head), the prompt's logits and cache only
    want = llama.prefill(PROMPT, N, NEW)
    got = distributed.shard_model(llama, distributed.make_mesh(2, model_parallel=2)).prefill(PROMPT, N, NEW)
    np.testing.assert_allclose(np.asarray(got.logits), np.asarray(want.logits), rtol=0, atol=TOL)
    for array in (got.cache["k"][0], got.cache["prompt"].value["v"][0]):
        assert array.sharding.spec[2] == distributed.MODEL
        assert {shard.data.shape[2] for shard in array.addressable_shards} == {llama.config.num_kv_heads // 2}


def test_weights_follow_the_megatron_layout(llama):
    lm = distributed.shard_model(llama, distributed.make_mesh(2, model_parallel=2))
    layer = lm.params["layers"][0]
    model = distributed.MODEL
    assert layer["attn"]["q_proj"]["kernel"][...].sharding.spec == P(None, model)
    assert layer["attn"]["k_proj"]["kernel"][...].sharding.spec == P(None, model)
    assert layer["attn"]["o_proj"]["kernel"][...].sharding.spec == P(model, None)
    assert layer["mlp"]["gate_proj"]["kernel"][...].sharding.spec == P(None, model)
    assert layer["mlp"]["down_proj"]["kernel"][...].sharding.spec == P(model, None)
    assert lm.params["lm_head"]["kernel"][...].sharding.spec == P(None, model)
    assert lm.params["embed"]["embedding"][...].sharding.spec == P(model, None)  # over the vocabulary
    assert lm.params["final_norm"]["scale"][...].sharding.is_fully_replicated
    assert lm.kv_sharding.spec[2] == model


def test_indivisible_heads_are_an_input_error(llama):
    # 8 query heads, 4 key/value heads, MLP width 128: a model axis of 8 splits no key/value head
    with pytest.raises(InputError, match="key/value heads.*model_parallel in \\[1, 2, 4\\]"):
        distributed.shard_model(llama, distributed.make_mesh(8, model_parallel=8))


def test_model_axis_of_one_replicates(llama):
    lm = distributed.shard_model(llama, distributed.make_mesh(2))
    assert lm.kv_sharding is None
    kernel = lm.params["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    assert kernel.sharding.is_fully_replicated and len(kernel.sharding.device_set) == 2


@pytest.mark.slow  # compiles an SMC sweep twice (one device; 4 x 2 devices): about 30 s on 2 CPU cores
def test_smc_over_data_and_model_axes_equals_one_device(llama):
    from genppl import ppl
    from genppl.inference import smc

    program = ppl.Program(llama, PROMPT, 8, potential=ppl.BannedTokens([3, 4, 5]))
    want = smc.run(program, 8, key=1)
    got = smc.run(program, 8, key=1, mesh=distributed.make_mesh(8, model_parallel=2))
    assert got.layout.mesh_shape == {distributed.DATA: 4, distributed.MODEL: 2}
    assert [list(t) for t in got.token_ids] == [list(t) for t in want.token_ids]
    np.testing.assert_allclose(got.log_z, want.log_z, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.log_weights, want.log_weights, rtol=0, atol=TOL)


def test_a_tabular_model_is_replicated():
    from genppl import models

    rows = models.TabularLM.num_prefixes(3, 2)
    table = np.log(np.random.RandomState(0).dirichlet(np.ones(3), size=rows)).astype(np.float32)
    lm = models.TabularLM(table, vocab_size=3, eos_id=0, max_len=2)
    placed = distributed.shard_model(lm, distributed.make_mesh(2, model_parallel=2))
    tables = [x for x in jax.tree.leaves(placed) if isinstance(x, jax.Array)]
    assert tables and all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == 2 for x in tables)
    np.testing.assert_array_equal(np.asarray(placed.table), np.asarray(lm.table))
