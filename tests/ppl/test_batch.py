"""ppl.stack / unstack / map_prompts: a batch of programs on a leading prompt axis."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models, ppl
from genppl.inference import smc
from genppl.models.interface import InputError
from tests.compile_count import count_compiles

CAP = 4


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=CAP, eos_id=0, eos_boost=0.5)


def test_stack_pads_prompts_and_keeps_one_lm(lm):
    long = [1, 2, 3, 4] * 5  # 20 tokens: the second bucket
    programs = [ppl.Program(lm, [1], CAP), ppl.Program(lm, long, CAP, alpha=2.0)]
    batch = ppl.stack(programs)
    assert batch.num_prompts == 2 and programs[0].num_prompts is None
    assert batch.prompt.shape == (2, 32) and batch.prompt_length.tolist() == [1, 20]
    assert batch.alpha.tolist() == [1.0, 2.0]
    assert batch.lm is lm  # the weights are never copied per prompt
    assert "2 prompts" in repr(batch)
    assert [p.prompt_ids for p in ppl.unstack(batch)] == [(1,), tuple(long)]
    # without the host-side originals (after jit rebuilt the object) unstack slices the leaves
    rebuilt = jax.tree.unflatten(jax.tree.structure(batch), jax.tree.leaves(batch))
    assert not hasattr(rebuilt, "programs")
    sliced = ppl.unstack(rebuilt)
    assert [p.prompt_ids for p in sliced] == [(1,), tuple(long)] and sliced[0].prompt.shape == (16,)
    assert ppl.unstack(programs[0]) == [programs[0]]


def test_map_prompts_maps_every_leaf_but_the_lm(lm):
    batch = ppl.stack([ppl.Program(lm, [1, 2], CAP, alpha=a) for a in (1.0, 3.0)])
    out = ppl.map_prompts(lambda p, x: (p.alpha * x, p.prompt_length, p.lm.vocab_size), batch, jnp.array([10.0, 20.0]))
    assert out[0].tolist() == [10.0, 60.0] and out[1].tolist() == [2, 2] and out[2].tolist() == [5, 5]
    keys = ppl.prompt_keys(7, 3)
    assert (jax.random.key_data(keys) == jax.random.key_data(jax.random.split(jax.random.key(7), 3))).all()


# slow (about 10 s: three compiled sweeps): the default suite checks a batch's exactness on the
# transformer (tests/inference/smc/test_transformer.py); this adds the user-jitted sweep and one regex per prompt
@pytest.mark.slow
def test_user_jitted_sweep_of_a_batch_equals_the_one_prompt_runs(lm):
    """The sweep for users who jit it themselves: init(batch, n) and sweep(kernel, batch, ...)
    give prompt b exactly the one-prompt run with jax.random.split(key, B)[b]. Potentials are
    data: one regex per prompt (tables of one shape), resampling within each prompt's group,
    and another batch of the same shapes reuses the compiled sweep."""
    regexes = [ppl.Regex("a[bc]d?", lm), ppl.Regex("b[cd]a?", lm)]
    assert regexes[0].table.shape == regexes[1].table.shape
    programs = [ppl.Program(lm, [1], CAP, potential=regexes[0]), ppl.Program(lm, [3, 1, 4], CAP, potential=regexes[1])]
    batch = ppl.stack(programs)
    kernel = smc.build_kernel(smc.multinomial, ess_threshold=1.0)  # a configuration no other test compiles
    state = smc.init(batch, 8)
    assert state.logw.shape == (2, 8) and state.particles.lm.tokens.shape[:2] == (2, 8)
    sweep = jax.jit(smc.sweep, static_argnums=0)
    with count_compiles() as compiles:
        final, infos = sweep(kernel, batch, state, jax.random.key(5))
        swapped = ppl.stack(programs[::-1])
        sweep(kernel, swapped, smc.init(swapped, 8), jax.random.key(6))
    assert compiles.count_of("sweep") == 1, compiles.names
    generated = np.asarray(jax.vmap(lambda s: s.generated_ids(CAP, -1))(final.particles.lm))
    keys = jax.random.split(jax.random.key(5), 2)
    for b, (program, first) in enumerate(zip(programs, "ab")):
        one = smc.run(program, 8, keys[b], kernel=kernel)
        assert [[t for t in row if t >= 0] for row in generated[b].tolist()] == one.token_ids
        np.testing.assert_allclose(np.asarray(final.logw[b], np.float64), one.log_weights, rtol=1e-6)
        assert float(final.log_z[b]) == pytest.approx(one.log_z, abs=1e-6)
        assert int(infos.resampled[b].sum()) == one.num_resampling > 0  # resampling within the group
        assert one.message is None and all(t[0] == first for t, w in zip(one.texts, one.weights) if w > 0)


@pytest.mark.parametrize("make, fix", [
    (lambda lm, other: [ppl.Program(lm, [1], CAP), ppl.Program(other, [1], CAP)], "different language model"),
    (lambda lm, other: [ppl.Program(lm, [1], CAP), ppl.Program(lm, [1], CAP - 1)], "max_new_tokens=3"),
    (lambda lm, other: [ppl.Program(lm, [1], CAP), ppl.Program(lm, [1], CAP, step_delimiter="a")],
     "same step_delimiter"),
    (lambda lm, other: [ppl.Program(lm, [1], CAP, potential=ppl.BannedTokens([2])),
                        ppl.Program(lm, [1], CAP, potential=ppl.MinLength(2, 0))], "potential differs .* in kind"),
    (lambda lm, other: [ppl.Program(lm, [1], CAP, potential=ppl.BannedTokens([2])),
                        ppl.Program(lm, [1], CAP, potential=ppl.BannedTokens([2, 3]))], "equal shapes"),
    (lambda lm, other: [ppl.Program(lm, [1], CAP), "not a program"], "item 1 is a str"),
    (lambda lm, other: [], "at least one program"),
    (lambda lm, other: [ppl.stack([ppl.Program(lm, [1], CAP)])], "already a batch"),
])
def test_bad_batches_say_what_to_change(lm, make, fix):
    other = models.TabularLM.random(jax.random.key(1), vocab_size=5, max_len=CAP, eos_id=0)
    with pytest.raises(InputError, match=fix):
        ppl.stack(make(lm, other))
    if fix != "at least one program":
        with pytest.raises(InputError, match=fix):  # smc.run stacks a list of programs itself
            smc.run(make(lm, other), 4, 0)


def test_lms_sharing_their_weights_count_as_one(lm):
    rebuilt = jax.tree.unflatten(jax.tree.structure(lm), jax.tree.leaves(lm))
    assert rebuilt is not lm
    assert ppl.stack([ppl.Program(lm, [1], CAP), ppl.Program(rebuilt, [2], CAP)]).num_prompts == 2
    with pytest.raises(InputError, match=re.escape("a single program needs no stacking")):
        ppl.stack(ppl.Program(lm, [1], CAP))
