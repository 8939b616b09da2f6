"""Blockwise MH power sampling against its exact output law on tiny tabular LMs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.inference import mcmc
from genppl.models.interface import InputError, NonFiniteLogitsError
from tests.compile_count import count_compiles
from tests.helpers import assert_matches_law, tv_noise_floor
from tests.inference.mcmc.exact import EOS, blockwise_law, extension, mh_matrix, random_lm
from tests.models.faults import FaultyLM


#: one compiled sampler shared by several tests: 6000 chains, 3 tokens, B = 1, N_MCMC = 1
RUNS, CONFIG = 6000, dict(block_size=1, num_mcmc=1)


def test_blockwise_law_converges_to_p_alpha_and_the_sampler_follows_it():
    lm, max_new, block, alpha = random_lm(5), 3, 1, 4.0
    tv = {}
    for num_mcmc in (0, 1, 2, 4, 16, 64, 256):
        seqs, law, pi = blockwise_law(lm, max_new, block, num_mcmc, alpha)
        assert np.isclose(law.sum(), 1.0)
        tv[num_mcmc] = 0.5 * np.abs(law - pi).sum()
    values = list(tv.values())
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), tv
    # temperature 1/alpha alone (no move) is not p^alpha; the moves converge geometrically
    assert tv[0] > 0.01 and tv[64] < 1e-6 and tv[256] < 1e-12, tv

    # the compiled sampler follows the exact law of its N_MCMC, which is not yet p^alpha
    runs, num_mcmc = RUNS, CONFIG["num_mcmc"]
    seqs, law, pi = blockwise_law(lm, max_new, block, num_mcmc, alpha)
    assert 0.5 * np.abs(law - pi).sum() > 2 * tv_noise_floor(law, runs)
    out = mcmc.power_mcmc(lm, [1], runs, max_new, key=num_mcmc, alpha=alpha, **CONFIG)
    assert_matches_law(out.sequences(), seqs, law)
    assert out.acceptance.shape == (3,) and np.all((out.acceptance > 0) & (out.acceptance <= 1))
    assert out.trace_log_target.shape == (3, num_mcmc, runs)
    # cost: every chain sampled its block tokens plus the regenerated suffixes
    assert np.all(out.tokens_generated >= out.num_tokens)


def test_num_mcmc_zero_is_plain_blockwise_sampling():
    """Issue 11 defect 3: ``num_mcmc=0`` passed validation, then raised an IndexError inside
    the traced loop. It is now legal: blockwise sampling from the proposal alone (temperature
    1/alpha), whose exact law ``blockwise_law(..., num_mcmc=0)`` is not p^alpha."""
    lm, max_new, block, alpha, runs = random_lm(5), 3, 2, 4.0, 6000
    seqs, law, pi = blockwise_law(lm, max_new, block, 0, alpha)
    out = mcmc.power_mcmc(lm, [1], runs, max_new, key=3, alpha=alpha, block_size=block, num_mcmc=0)
    assert_matches_law(out.sequences(), seqs, law)
    assert out.trace_accepted.shape == (2, 0, runs) and out.acceptance.tolist() == [0.0, 0.0]
    assert "N_MCMC=0" in out.method


def test_two_token_example_power_is_not_low_temperature():
    """p(ab)=0.4, p(ba)=p(bb)=0.25 (and p(c.)=0.1): p^2 prefers a first (0.16 against
    0.125), while temperature 1/2 prefers b."""
    a, b, c = 1, 2, 3
    rows = {(): [0, .4, .5, .1], (a,): [0, 0, 1, 0], (b,): [0, .5, .5, 0], (c,): [0, 1 / 3, 1 / 3, 1 / 3]}
    lm = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=2, eos_id=EOS)
    table = np.asarray(lm.table).copy()
    with np.errstate(divide="ignore"):
        for prefix, row in rows.items():
            table[lm.code(prefix)] = np.log(row)
    lm = models.TabularLM(jnp.asarray(table), 4, EOS, 2)
    seqs, logp = lm.enumerate()
    p2 = np.exp(2 * logp) / np.exp(2 * logp).sum()
    first_a = sum(q for s, q in zip(seqs, p2) if s[:1] == (a,))
    first_b = sum(q for s, q in zip(seqs, p2) if s[:1] == (b,))
    assert first_a > first_b  # exact: 0.16 vs 0.125 before normalising
    temp_a, temp_b = 0.4 ** 2 / (0.4 ** 2 + 0.5 ** 2 + 0.1 ** 2), 0.5 ** 2 / (0.4 ** 2 + 0.5 ** 2 + 0.1 ** 2)
    assert temp_b > temp_a

    runs = 4000
    hot = models.sample(lm, [1], runs, 2, jax.random.key(1), temperature=0.5)
    power = mcmc.power_mcmc(lm, [1], runs, 2, key=2, alpha=2.0, block_size=2, num_mcmc=16)
    for out, pa, pb in ((hot, temp_a, temp_b), (power, first_a, first_b)):
        first = np.array([s[0] for s in out.sequences()])
        for tok, p in ((a, pa), (b, pb)):
            se = math.sqrt(p * (1 - p) / runs)
            assert abs(np.mean(first == tok) - p) < 5 * se
    assert_matches_law(power.sequences(), seqs, p2)


def test_one_compile_per_configuration():
    """Another prompt, key, alpha or model of the same shapes reuses the compiled sampler."""
    mcmc.power_mcmc(random_lm(6), [1], RUNS, 3, key=0, alpha=4.0, **CONFIG)
    with count_compiles() as compiles:
        # an equal kernel passed explicitly: the same static configuration
        mcmc.power_mcmc(random_lm(6), [1], RUNS, 3, key=0, alpha=4.0, kernel=mcmc.build_kernel(), **CONFIG)
        mcmc.power_mcmc(random_lm(6), [2, 3], RUNS, 3, key=1, alpha=4.0, **CONFIG)  # another prompt and key
        mcmc.power_mcmc(random_lm(7), [1], RUNS, 3, key=2, alpha=2.5, **CONFIG)  # another model and alpha
    assert compiles.count_of("blockwise") == 0, compiles


def test_non_finite_logits_are_reported_not_sampled_as_eos():
    """Issue 11 defect 5 (power_mcmc): NaN logits at a chosen step and chain raise
    NonFiniteLogitsError naming the step and the chain, instead of finishing with NaN log-probs."""
    base = random_lm(8)
    lm = FaultyLM(base, step=1, particle=2, prompt_length=1, value="nan")
    with pytest.raises(NonFiniteLogitsError, match="power_mcmc.*step 1.*particle.*2") as err:
        mcmc.power_mcmc(lm, [1], 4, 3, key=0, alpha=2.0, block_size=1, num_mcmc=1)
    assert err.value.step == 1 and err.value.particles == (2,)
    with pytest.raises(NonFiniteLogitsError):  # after the prompt: every chain (found by prefill)
        mcmc.power_mcmc(FaultyLM(base, step=0, particle=None, prompt_length=1, value="inf"), [1], 4, 3, key=0)


def greedy(lm, cap):
    """The greedy continuation (argmax token after each prefix) and its log p, exactly."""
    table, seq, logp = np.asarray(lm.table, np.float64), (), 0.0
    while len(seq) < cap and (not seq or seq[-1] != EOS):
        row = table[lm.code(seq)]
        seq, logp = seq + (int(np.argmax(row)),), logp + row.max()
    return seq, logp


def test_huge_alpha_samples_the_greedy_sequence_not_eos():
    """Issue 11 defect 6 (MH part): the proposal softmax(logits / T), T = 1/alpha, divided
    before subtracting the max; for alpha >= 1e38 (T subnormal in float32) every logit became
    non-finite and every sample an immediate EOS (measured: 6000 of 6000 chains). Now the
    proposal is computed as log_softmax((l - max l) * alpha) — greedy in the limit — and alpha
    is bounded by mcmc.MAX_ALPHA = 1e30 (alpha * log p must stay finite) with a clear error."""
    lm = random_lm(9)
    best, best_logp = greedy(lm, 3)
    assert best != (EOS,)
    for alpha in (1e10, mcmc.MAX_ALPHA):
        out = mcmc.power_mcmc(lm, [1], RUNS, 3, key=0, alpha=alpha, **CONFIG)  # compiled as in the test above
        assert np.all(np.isfinite(out.log_probs))
        assert np.all(out.log_probs >= best_logp - 1e-5), set(out.sequences())
        assert out.sequences().count((EOS,)) == 0
    for alpha in (1e38, math.inf):
        with pytest.raises(InputError, match="alpha"):
            mcmc.power_mcmc(lm, [1], RUNS, 3, alpha=alpha, **CONFIG)


def test_bad_input_is_an_input_error():
    lm = random_lm(8)
    with pytest.raises(InputError, match="alpha"):
        mcmc.power_mcmc(lm, [1], 4, 3, alpha=0.0)
    with pytest.raises(InputError, match="alpha"):
        mcmc.power_mcmc(lm, [1], 4, 3, alpha=math.nan)
    with pytest.raises(InputError, match="block_size"):
        mcmc.power_mcmc(lm, [1], 4, 3, block_size=0)
    with pytest.raises(InputError, match="num_mcmc"):
        mcmc.power_mcmc(lm, [1], 4, 3, num_mcmc=-1)
    with pytest.raises(InputError, match="move"):
        mcmc.power_mcmc(lm, [1], 4, 3, move="gibbs")
    with pytest.raises(InputError, match="temperature"):
        mcmc.power_mcmc(lm, [1], 4, 3, proposal_temperature=-1.0)
    with pytest.raises(InputError, match="beta"):
        mcmc.RewardTilt(lambda t, n, e: n, beta=0)
    with pytest.raises(InputError, match="LanguageModel"):
        mcmc.power_mcmc("gpt", [1], 4, 3)
    with pytest.raises(InputError, match="MHKernel"):
        mcmc.power_mcmc(lm, [1], 4, 3, kernel=lambda *a: a)
    with pytest.raises(InputError, match="not both"):
        mcmc.power_mcmc(lm, [1], 4, 3, kernel=mcmc.build_kernel(), move=mcmc.moves.suffix())


@pytest.mark.slow
def test_reward_tilted_mh_targets_exp_reward_over_beta():
    lm, cap, alpha, runs = random_lm(9), 3, 1.0, 6000

    def reward(tokens, num_tokens, eos):  # count of token 2 in the sequence
        return jnp.sum(tokens == 2, axis=1).astype(jnp.float32)

    tilt = mcmc.RewardTilt(reward, beta=0.5)
    seqs, kernel, pi = mh_matrix(lm, cap, alpha, log_phi=lambda s: 2.0 * s.count(2))
    out = mcmc.power_mcmc(lm, [1], runs, cap, key=3, alpha=alpha, block_size=cap, num_mcmc=1,
                          log_potential=tilt)
    # one move from the proposal's law: the exact law is q K
    start = extension(lm, [()], seqs, cap, 1.0 / alpha)[0]
    assert_matches_law(out.sequences(), seqs, start @ kernel)


# slow: three compiled programs (the batch and two prompt buckets); the batch mechanism itself
# (ppl.map_prompts / models.batch) is covered by the default tests of smc and models.sample
@pytest.mark.slow
def test_many_prompts_in_one_call_equal_the_one_prompt_runs():
    """Issue 12: blockwise MH over a batch of prompts of two buckets equals the one-prompt
    runs with jax.random.split(key, B)[b] (chains, acceptance traces, log targets)."""
    lm = models.TabularLM.random(jax.random.key(6), vocab_size=4, max_len=4, eos_id=0)
    prompts = [[1], [2, 3] * 9]
    out = mcmc.power_mcmc(lm, prompts, 4, 4, key=1, alpha=2.0, block_size=2, num_mcmc=2)
    keys = jax.random.split(jax.random.key(1), 2)
    for b, prompt in enumerate(prompts):
        one = mcmc.power_mcmc(lm, prompt, 4, 4, key=keys[b], alpha=2.0, block_size=2, num_mcmc=2)
        np.testing.assert_array_equal(out[b].token_ids, one.token_ids)
        np.testing.assert_array_equal(out[b].trace_accepted, one.trace_accepted)
        np.testing.assert_allclose(out[b].log_targets, one.log_targets, rtol=1e-6)
        assert out[b].prompt == one.prompt and out[b].method == one.method


@pytest.mark.slow  # compiles the chunked loop as a second program (~5 s); the chunking itself is a default test
def test_a_progress_bar_changes_nothing(monkeypatch):
    """Issue 17: with a bar, the blocks run in chunks of one compiled program (one chunk per
    block here) and the chains, traces and log targets are the plain run's bits."""
    from tests.helpers import watch_progress

    lm = models.TabularLM.random(jax.random.key(6), vocab_size=4, max_len=6, eos_id=0)
    options = dict(alpha=2.0, block_size=2, num_mcmc=2)
    quiet = mcmc.power_mcmc(lm, [1], 8, 6, key=1, **options)
    bars = watch_progress(monkeypatch)
    key = jax.random.key(1)
    shown = mcmc.power_mcmc(lm, [1], 8, 6, key=key, **options)
    (bar,) = bars
    assert bar.total == 3 and bar.updates == [1, 1, 1] and bar.closed and bar.options["unit"] == "block"
    np.testing.assert_array_equal(shown.token_ids, quiet.token_ids)
    np.testing.assert_array_equal(shown.trace_accepted, quiet.trace_accepted)
    assert shown.trace_log_target.tobytes() == quiet.trace_log_target.tobytes()
    assert shown.log_targets.tobytes() == quiet.log_targets.tobytes()
    assert int(jax.random.key_data(key)[1]) == 1                   # the caller's key is not donated away
    mcmc.power_mcmc(lm, [1], 8, 6, key=1, progress=False, **options)
    assert len(bars) == 1
