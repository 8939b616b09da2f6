"""models.batch and many-prompt models.sample: one compiled call equals the one-prompt calls."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.models.batch import Batch, is_prompt_batch, pad_prompts
from genppl.models.interface import InputError
from tests.compile_count import count_compiles
from tests.hlo import elements, loop_body_ops


def test_is_prompt_batch():
    assert is_prompt_batch([[1, 2], [3]]) and is_prompt_batch(([1],)) and is_prompt_batch([np.array([1, 2])])
    assert is_prompt_batch(np.ones((2, 3), int))
    for one in ([1, 2], (1,), np.array([1, 2]), "text", [], [[1], 2], 7):
        assert not is_prompt_batch(one), one


def test_pad_prompts_names_the_bad_prompt():
    lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    tokens, lengths, padded, capacity = pad_prompts(lm, [[1], [2, 3] * 9], 3)
    assert tokens.shape == (2, 32) and lengths.tolist() == [1, 18] and (padded, capacity) == (32, 35)
    assert tokens[1, :18].tolist() == [2, 3] * 9 and not tokens[1, 18:].any()
    with pytest.raises(InputError, match=r"prompt 1 of the batch: prompt token ids must lie in \[0, 4\)"):
        pad_prompts(lm, [[1], [9]], 3)
    with pytest.raises(InputError, match="prompt 0 of the batch: .*empty"):
        models.sample(lm, [[], [1]], 2, 3)


def test_batch_gathers_attributes_and_displays():
    lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=3)
    out = models.sample(lm, [[1], [2, 3]], 3, 3, key=0)
    assert isinstance(out, Batch) and len(out) == 2 and all(isinstance(s, models.Samples) for s in out)
    assert out.log_probs[1] is out[1].log_probs and len(out.texts) == 2
    assert repr(out).startswith("Batch of 2 results (Samples), one per prompt\n  [0] Samples(n=3")
    assert "prompt 1:" in out.summary() and out._repr_html_().count("<details") == 2
    with pytest.raises(AttributeError, match="call it on batch"):
        out.sequences


# slow (about 12 s: three compiled decode loops on the Llama): the default suite checks a batch's exactness
# through SMC on the transformer (tests/inference/smc/test_transformer.py), which runs the same engine path
@pytest.mark.slow
def test_many_prompts_one_compiled_call_equal_one_prompt_calls(llama_lm):
    """Prompts of three lengths (two buckets) in one call: prompt b gets exactly the tokens of
    models.sample(prompt b, key=split(key, B)[b]), and log p to float rounding."""
    lm = llama_lm
    texts = ["the cat", "a dog ran in the park with a red ball. the cat sat on the mat.", "Q: 12"]
    prompts = [[lm.eos_id] + lm.tokenizer.encode(t) for t in texts]
    assert len({-(-len(p) // 16) for p in prompts}) == 2
    with count_compiles() as compiles:
        out = models.sample(lm, prompts, 4, 6, key=5, temperature=1.5)
    assert compiles.count_of("generate_prompts") == 1
    keys = jax.random.split(jax.random.key(5), len(prompts))
    for b, prompt in enumerate(prompts):
        one = models.sample(lm, prompt, 4, 6, key=keys[b], temperature=1.5)
        np.testing.assert_array_equal(out[b].token_ids, one.token_ids)
        np.testing.assert_array_equal(out[b].num_tokens, one.num_tokens)
        np.testing.assert_allclose(out[b].log_probs, one.log_probs, rtol=1e-5, atol=1e-5)
        assert out[b].texts == one.texts and out[b].prompt == one.prompt
    assert len({tuple(map(tuple, s.token_ids)) for s in out}) == 3  # the prompts really differ


def _two_prompt_decode(lm, n=2, new=4, done=None):
    """generate's loop over a batch of two prompts (one compiled vmap over the prompt axis),
    the particles of prompt b marked done from the start where ``done[b]``; returns the jitted
    function, its arguments, the one-prompt function (the same loop without the vmap) and the
    buffer capacity."""
    from genppl.models import sampling
    from genppl.models.batch import map_prompt_states

    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    tokens, lengths, _, capacity = pad_prompts(lm, prompts, new)
    done = np.zeros(2, bool) if done is None else np.asarray(done)

    def one(state, key, done_b):
        carry = sampling.decode_start(state, key)
        carry = carry[:2] + (jnp.full((n,), done_b),) + carry[3:]
        carry = sampling.decode_until(lm, carry, new, new, models.Processing())
        return sampling.decode_finish(carry, new)

    def batch(tokens, lengths, keys, done):
        return map_prompt_states(one, lm, tokens, lengths, n, capacity, keys, done)

    keys = jax.random.split(jax.random.key(3), 2)
    single = lambda b: jax.jit(one)(lm.initial_state(tokens[b], lengths[b], n, capacity), keys[b], done[b])
    return jax.jit(batch), (tokens, lengths, keys, done), single, capacity


def test_a_batch_decode_loop_selects_no_cache(llama_lm):
    """Under the prompt axis the decode loop's predicate is or-ed over the prompts, so the
    optimised loop holds no select of a cache-sized array (a per-prompt predicate makes vmap
    select every carry leaf, the KV caches too, at every step: this check fails on it)."""
    fn, args, _, capacity = _two_prompt_decode(llama_lm, new=40)  # caches larger than the logits
    ops = loop_body_ops(fn.lower(*args).compile().as_text())
    state = llama_lm.initial_state(args[0][0], args[1][0], 2, capacity)
    size = 2 * int(np.prod(state.cache["k"][0].shape))  # one layer's generated keys, both prompts
    selects = [op.strip()[:160] for op in ops if re.search(r"\bselect\(", op) and elements(op) >= size]
    assert not selects, f"the batch's decode loop selects whole caches: {selects}"


def test_a_prompt_whose_particles_are_done_idles_in_a_batch(llama_lm):
    """A prompt whose particles are all done while another prompt decodes runs idle steps
    that change nothing: each prompt's outputs equal its one-prompt loop's."""
    fn, args, single, _ = _two_prompt_decode(llama_lm, done=[True, False])
    out = jax.device_get(fn(*args))
    assert int(out[1][0].sum()) == 0 and int(out[1][1].sum()) > 0  # prompt 0 idle, prompt 1 decoded
    for b in range(2):
        for got, want in zip(out, jax.device_get(single(b))):
            np.testing.assert_allclose(got[b], want, rtol=1e-6, atol=1e-6)
