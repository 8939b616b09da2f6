"""MH power sampling against exact enumeration on tiny tabular LMs (ALGORITHMS.md).

The exact transition matrix of the suffix-resampling kernel is built in float64 by
enumerating every position m and every regenerated suffix, with the *same* acceptance
function the sampler calls (``mcmc.log_acceptance`` with ``xp=numpy``). The compiled kernel
is then checked against rows of that matrix, and the blockwise sampler against its exact
output law, propagated block by block.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl.inference import mcmc
from genppl.models.interface import InputError
from genppl.models.sampling import TRACE_COUNTS
from tests.helpers import assert_matches_law, tv_noise_floor

EOS = 0


def random_lm(seed, vocab=4, max_len=3):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=vocab, max_len=max_len, eos_id=EOS,
                                   eos_boost=0.3)


# ---- exact enumeration (numpy float64) ---------------------------------------------------
def _log_softmax(row):
    finite = row[np.isfinite(row)]
    top = finite.max()
    return row - (top + np.log(np.sum(np.exp(finite - top))))


def token_logs(lm, prefix, temperature):
    """(log p [V], log q [V]) after a prefix of non-EOS tokens."""
    row = np.asarray(lm.table, np.float64)[lm.code(prefix)]
    return row, _log_softmax(row / temperature)


def completions(lm, prefix, cap, temperature):
    """Every suffix that completes ``prefix`` up to EOS or ``cap`` tokens: (suffix, log p, log q)."""
    if len(prefix) == cap:
        return [((), 0.0, 0.0)]
    lp, lq = token_logs(lm, prefix, temperature)
    out = []
    for v in range(lm.vocab_size):
        if not np.isfinite(lq[v]):
            continue
        if v == lm.eos_id:
            out.append(((v,), lp[v], lq[v]))
        else:
            out += [((v, *s), lp[v] + a, lq[v] + b) for s, a, b in completions(lm, (*prefix, v), cap, temperature)]
    return out


def suffix_logs(lm, seq, m, temperature):
    lp_sum = lq_sum = 0.0
    for j in range(m, len(seq)):
        lp, lq = token_logs(lm, seq[:j], temperature)
        lp_sum, lq_sum = lp_sum + lp[seq[j]], lq_sum + lq[seq[j]]
    return lp_sum, lq_sum


def mh_matrix(lm, cap, alpha, temperature=None, move="suffix", log_phi=None, pick=None):
    """Exact MH transition matrix over every sequence of at most ``cap`` tokens.

    ``pick`` overrides the reverse position probability (a deliberately wrong ratio)."""
    temperature = 1.0 / alpha if temperature is None else temperature
    log_phi = log_phi or (lambda s: 0.0)
    seqs, logp = lm.enumerate(cap)
    index = {s: i for i, s in enumerate(seqs)}
    kernel = np.zeros((len(seqs), len(seqs)))
    for i, x in enumerate(seqs):
        positions = range(len(x)) if move == "suffix" else [0]
        for m in positions:
            lp_old, lq_old = suffix_logs(lm, x, m, temperature)
            for s, lp_new, lq_new in completions(lm, x[:m], cap, temperature):
                y = x[:m] + s
                if move == "suffix":
                    pick_new, pick_old = -np.log(len(y)), -np.log(len(x))
                else:
                    pick_new = pick_old = 0.0
                if pick is not None:
                    pick_new = pick_old
                log_r = mcmc.log_acceptance(alpha, lp_new, lp_old, lq_new, lq_old, pick_new, pick_old,
                                            log_phi(y), log_phi(x), xp=np)
                kernel[i, index[y]] += np.exp(lq_new - np.log(len(positions))) * min(1.0, np.exp(log_r))
        kernel[i, i] += 1.0 - kernel[i].sum()
    log_u = alpha * logp + np.array([log_phi(s) for s in seqs])
    pi = np.exp(log_u - np.logaddexp.reduce(log_u))
    return seqs, kernel, pi


def extension(lm, seqs_from, seqs_to, cap, temperature):
    """Exact block-extension kernel: EOS sequences stay, the others are extended to ``cap``."""
    index = {s: i for i, s in enumerate(seqs_to)}
    ext = np.zeros((len(seqs_from), len(seqs_to)))
    for i, x in enumerate(seqs_from):
        if x and x[-1] == EOS:
            ext[i, index[x]] = 1.0
            continue
        for s, _, lq in completions(lm, x, cap, temperature):
            ext[i, index[x + s]] += np.exp(lq)
    return ext


def blockwise_law(lm, max_new, block, num_mcmc, alpha):
    """Exact output law of blockwise power sampling, propagated block by block."""
    seqs, law = [()], np.ones(1)
    for k in range(-(-max_new // block)):
        cap = min((k + 1) * block, max_new)
        new_seqs, kernel, pi = mh_matrix(lm, cap, alpha)
        law = law @ extension(lm, seqs, new_seqs, cap, 1.0 / alpha)
        law = law @ np.linalg.matrix_power(kernel, num_mcmc)
        seqs = new_seqs
    return seqs, law, pi


def detailed_balance_residual(kernel, pi):
    flow = pi[:, None] * kernel
    return np.abs(flow - flow.T).max()


# ---- the exact kernel --------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("seed, cap", [(1, 3), (2, 2)])
def test_exact_mh_kernel_is_reversible_for_p_alpha(alpha, seed, cap):
    lm = random_lm(seed, max_len=3)  # cap 2 < max_len 3: the stage cap cuts the table
    seqs, kernel, pi = mh_matrix(lm, cap, alpha)
    assert any(s[-1] == EOS for s in seqs[1:]) and any(s[-1] != EOS for s in seqs[1:])
    assert np.all(np.diag(kernel) >= -1e-12), "off-diagonal mass above 1: the proposal is not normalised"
    assert np.allclose(kernel.sum(1), 1.0, atol=1e-12) and kernel.min() >= -1e-12
    assert detailed_balance_residual(kernel, pi) <= 1e-10
    assert np.abs(pi @ kernel - pi).max() <= 1e-10


def test_exact_kernel_with_independent_moves_reward_tilt_and_a_hard_constraint():
    lm = random_lm(3)

    def log_phi(s):  # reward 0.5 per 'b' token (id 2), and sequences with a 'c' (id 3) ruled out
        return -math.inf if 3 in s else 0.5 * s.count(2)

    for move in ("suffix", "independent"):
        seqs, kernel, pi = mh_matrix(lm, 3, 2.0, move=move, log_phi=log_phi)
        assert np.allclose(kernel.sum(1), 1.0, atol=1e-12) and kernel.min() >= -1e-12
        assert detailed_balance_residual(kernel, pi) <= 1e-10
        assert np.abs(pi @ kernel - pi).max() <= 1e-10


def test_forgetting_the_length_term_breaks_detailed_balance():
    """The negative control: the 1/n vs 1/n' term matters, and the test can see it."""
    lm = random_lm(1)
    _, kernel, pi = mh_matrix(lm, 3, 2.0, pick="wrong")
    assert detailed_balance_residual(kernel, pi) > 1e-4


# ---- the compiled kernel against the exact matrix ----------------------------------------
_step = jax.jit(mcmc.step, static_argnums=(3,))
_from = jax.jit(mcmc.from_sequences, static_argnums=(3, 4))


def chains_at(lm, seq, n, width):
    state = lm.prefill([1], n, width)
    tokens = jnp.array([list(seq) + [0] * (width - len(seq))] * n, jnp.int32)
    mask = jnp.arange(width)[None, :] < len(seq)
    lm_state, _ = lm.advance(state, tokens, jnp.broadcast_to(mask, tokens.shape))
    eos = jnp.full((n,), bool(seq) and seq[-1] == EOS)
    return lm_state, eos


@pytest.mark.parametrize("move", ["suffix", pytest.param("independent", marks=pytest.mark.slow)])
def test_compiled_step_draws_from_the_exact_kernel_rows(move):
    lm, cap, alpha, runs = random_lm(4), 3, 2.0, 4000
    config = mcmc.MHConfig(alpha=alpha, move=move)
    seqs, kernel, pi = mh_matrix(lm, cap, alpha, move=move)
    index = {s: i for i, s in enumerate(seqs)}
    for start in [(2, 1, EOS), (3, 1, 2)]:  # one ends with EOS, one at the cap
        lm_state, eos = chains_at(lm, start, runs, cap)
        state = _from(lm, lm_state, eos, config, cap)
        # the cached per-token log-probs equal the exact ones
        lp, lq = suffix_logs(lm, start, 0, 1.0 / alpha)
        assert np.allclose(np.asarray(state.logp.sum(1)), lp, atol=1e-5)
        assert np.allclose(np.asarray(state.logq.sum(1)), lq, atol=1e-5)
        new, info = _step(jax.random.key(index[start]), state, lm, config, cap)
        out = [tuple(s) for s in new.lm.generated()]
        assert_matches_law(out, seqs, kernel[index[start]])
        assert np.asarray(new.eos).tolist() == [s[-1] == EOS for s in out]


# ---- blockwise power sampling ------------------------------------------------------------
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
    runs, num_mcmc = 6000, 1
    seqs, law, pi = blockwise_law(lm, max_new, block, num_mcmc, alpha)
    assert 0.5 * np.abs(law - pi).sum() > 2 * tv_noise_floor(law, runs)
    out = mcmc.power_mcmc(lm, [1], runs, max_new, key=num_mcmc, alpha=alpha, block_size=block,
                          num_mcmc=num_mcmc)
    assert_matches_law(out.sequences(), seqs, law)
    assert out.acceptance.shape == (3,) and np.all((out.acceptance > 0) & (out.acceptance <= 1))
    assert out.trace_log_target.shape == (3, num_mcmc, runs)
    # cost: every chain sampled its block tokens plus the regenerated suffixes
    assert np.all(out.tokens_generated >= out.num_tokens)


def test_two_token_example_power_is_not_low_temperature():
    """ALGORITHMS.md: p(ab)=0.4, p(ba)=p(bb)=0.25 (and p(c.)=0.1): p^2 prefers a first, while
    temperature 1/2 prefers b."""
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
    lm = random_lm(6)
    before = TRACE_COUNTS["power_mcmc"]
    kwargs = dict(alpha=4.0, block_size=1, num_mcmc=1)  # the configuration of the test above
    mcmc.power_mcmc(lm, [1], 6000, 3, key=0, **kwargs)
    after_first = TRACE_COUNTS["power_mcmc"]
    mcmc.power_mcmc(lm, [2, 3], 6000, 3, key=1, **kwargs)  # another prompt and key: same program
    mcmc.power_mcmc(random_lm(7), [1], 6000, 3, key=2, **kwargs)  # another model of the same shape
    assert after_first - before <= 1 and TRACE_COUNTS["power_mcmc"] == after_first


def test_bad_input_is_an_input_error():
    lm = random_lm(8)
    with pytest.raises(InputError, match="alpha"):
        mcmc.power_mcmc(lm, [1], 4, 3, alpha=0.0)
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
    _, law, _ = blockwise_law_tilted(lm, cap, alpha, kernel)
    assert_matches_law(out.sequences(), seqs, law)


def blockwise_law_tilted(lm, cap, alpha, kernel):
    seqs, _ = lm.enumerate(cap)
    start = extension(lm, [()], seqs, cap, 1.0 / alpha)[0]
    return seqs, start @ kernel, None
