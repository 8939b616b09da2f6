"""``smc.run``: compilation shared across prompts and data, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import ppl
from genppl.inference import smc
from tests.compile_count import count_compiles

from .enumeration import BANNED, CAP, TARGET, assert_unbiased_measure, assert_unbiased_z, exact, random_lm, run_many


def test_sweep_compiles_once_per_configuration():
    lm = random_lm(15)
    program = ppl.Program(lm, [1], CAP, potential=BANNED)
    smc.run(program, 8, 0)
    with count_compiles() as compiles:
        smc.run(program, 8, 1)
        smc.run(ppl.Program(lm, [3, 1], CAP, potential=BANNED), 8, 2)  # another prompt, same bucket
        smc.run(ppl.Program(random_lm(16), [1], CAP, potential=ppl.BannedTokens([3])), 8, 3)  # other data
        swept = compiles.count_of("sweep")
    assert swept == 0
    with count_compiles() as compiles:
        smc.run(program, 16, 0)  # another particle count is another program
    assert compiles.count_of("sweep") == 1


@pytest.mark.parametrize("kwargs, fix", [
    (dict(n=0), "n .the number of particles. must be"),
    (dict(resampling_fn="systematic"), "resampling_fn must be a function"),
    (dict(ess_threshold=1.5), "ess_threshold"),
    (dict(proposal="optimal"), "proposal must be a function"),
    (dict(kernel=smc.build_kernel(), ess_threshold=0.5), "either kernel= or kernel options"),
])
def test_bad_input(kwargs, fix):
    lm = random_lm(19)
    program = ppl.Program(lm, [1], CAP)
    args = dict(n=8) | kwargs
    n = args.pop("n")
    with pytest.raises(ValueError, match=fix):
        smc.run(program, n, 0, **args)


def test_prompts_and_regexes_of_equal_shape_share_one_compiled_sweep():
    """Issue 10: two prompts x two regexes with tables of one shape -> one compilation."""
    lm = random_lm(22)
    regexes = [ppl.Regex("a[bc]d?", lm), ppl.Regex("b[cd]a?", lm)]
    assert regexes[0].table.shape == regexes[1].table.shape
    kernel = smc.build_kernel(smc.stratified)  # a configuration no other test compiles
    with count_compiles() as compiles:
        results = [smc.run(ppl.Program(lm, prompt, CAP, potential=regex), 8, 0, kernel=kernel)
                   for prompt in ([1], [2, 3]) for regex in regexes]
    assert compiles.count_of("sweep") == 1, compiles.names
    # the data really differs between the runs: each regex's own language comes out
    for result, first in zip(results, "abab"):
        assert result.message is None
        assert all(t[0] == first for t, w in zip(result.texts, result.weights) if w > 0)


def user_resampler(key, logw, n):
    """A user's resampler: multinomial through jax.random.choice (no library code)."""
    probs = jax.nn.softmax(jnp.where(jnp.isnan(logw), -jnp.inf, logw))
    return jax.random.choice(key, logw.shape[0], (n,), p=probs).astype(jnp.int32)


def user_proposal(program, state, target):
    """A user's proposal: half the LM, half uniform over the vocabulary."""
    log_p = jax.nn.log_softmax(state.lm.logits, -1)
    log_q = jnp.logaddexp(log_p, -jnp.log(log_p.shape[-1])) - jnp.log(2.0)
    return log_q, jnp.where(jnp.isneginf(target), -jnp.inf, target - log_q)


def test_user_resampler_and_proposal_give_an_unbiased_log_z():
    """Functions written by the user plug into the kernel; Z_hat stays unbiased (400 runs:
    a relative bias of Z_hat of about 5 % is 3 standard errors)."""
    lm = random_lm(23)
    program = ppl.Program(lm, [1], CAP, potential=TARGET)
    support, pi, log_z, prior = exact(lm)
    kernel = smc.build_kernel(user_resampler, user_proposal, ess_threshold=0.9)
    log_z_hat, logw, seqs = run_many(program, 8, kernel=kernel, seed=23)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)
    result = smc.run(program, 8, 1, kernel=kernel)
    assert np.isfinite(result.log_z) and "user_resampler" in result.method
