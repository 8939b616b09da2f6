"""The MH kernel against its exact transition matrix on tiny tabular LMs.

The exact matrix (``exact.mh_matrix``) enumerates every position and every regenerated
suffix in float64 with the sampler's own ``log_acceptance``; no Monte Carlo noise is involved
in the reversibility checks. The compiled kernel is then checked against rows of the matrix.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl.inference import mcmc
from genppl.models.interface import InputError
from tests.helpers import assert_matches_law
from tests.inference.mcmc.exact import (EOS, chains_at, detailed_balance_residual, mh_matrix, random_lm,
                                        suffix_logs)


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
def last_two(m, n):
    """log P(m | n tokens) of a user move: m uniform over the last two positions."""
    k = min(2, n)
    return -np.log(k) if n - k <= m < n else -np.inf


def _pick_last_two(key, num_tokens):
    k = jnp.minimum(2, jnp.maximum(num_tokens, 1))
    return num_tokens - 1 - (jax.random.uniform(key, num_tokens.shape) < (k - 1) / k).astype(jnp.int32)


def _log_prob_last_two(m, num_tokens):
    k = jnp.minimum(2, jnp.maximum(num_tokens, 1))
    return jnp.where((m >= num_tokens - k) & (m < num_tokens), -jnp.log(k.astype(jnp.float32)), -jnp.inf)


LAST_TWO = mcmc.moves.custom(_pick_last_two, _log_prob_last_two)
MOVES = {"suffix": (mcmc.moves.suffix(), "suffix"), "independent": (mcmc.moves.independent(), "independent"),
         "last-two": (LAST_TWO, last_two)}


@pytest.fixture(scope="module")
def step_fn():
    """One jitted (rescore the chains, one MH step) per kernel configuration."""
    def run(kernel, key, lm, lm_state, eos, alpha, cap, width):
        state = kernel.from_sequences(lm, lm_state, eos, alpha, width)
        new, info = kernel(key, state, lm, alpha, cap)
        return state, new, info

    return jax.jit(run, static_argnums=(0, 7))


@pytest.mark.parametrize("move, cap, starts", [
    ("suffix", 3, [(2, 1, EOS), (3, 1, 2)]),   # one ends with EOS, one at the cap
    ("suffix", 2, [(2, EOS), (3, 1)]),        # a stage cap below the buffer width (as in SMC)
    ("last-two", 3, [(3, 1, 2)]),             # a user move
    pytest.param("independent", 3, [(2, 1, EOS), (3, 1, 2)], marks=pytest.mark.slow),
])
def test_compiled_step_draws_from_the_exact_kernel_rows(step_fn, move, cap, starts):
    lm, alpha, runs, width = random_lm(4), 2.0, 4000, 3
    move_fn, exact_move = MOVES[move]
    kernel = mcmc.build_kernel(move_fn)
    seqs, matrix, pi = mh_matrix(lm, cap, alpha, move=exact_move)
    index = {s: i for i, s in enumerate(seqs)}
    for start in starts:
        lm_state, eos = chains_at(lm, [start] * runs, width)
        state, new, info = step_fn(kernel, jax.random.key(index[start]), lm, lm_state, eos, jnp.float32(alpha),
                                   cap, width)
        # the cached per-token log-probs equal the exact ones
        lp, lq = suffix_logs(lm, start, 0, 1.0 / alpha)
        assert np.allclose(np.asarray(state.logp.sum(1)), lp, atol=1e-5)
        assert np.allclose(np.asarray(state.logq.sum(1)), lq, atol=1e-5)
        out = [tuple(s) for s in new.lm.generated()]
        assert_matches_law(out, seqs, matrix[index[start]])
        assert np.asarray(new.eos).tolist() == [s[-1] == EOS for s in out]
        assert np.all(np.asarray(new.nonfinite) == -1)


# ---- the proposal and the ratio ----------------------------------------------------------
def test_tempered_proposal_is_stable_for_huge_alpha():
    """Issue 11 defect 6 (MH part): q = softmax(alpha * logits) computed as
    log_softmax((l - max l) * alpha), greedy in the limit instead of NaN/inf."""
    logits = jnp.array([[0.0, -1.0, 2.0, -jnp.inf]])
    for alpha in (1e10, 1e30):
        log_q = np.asarray(mcmc.tempered()(logits, alpha))
        assert log_q[0, 2] == 0.0 and np.all(log_q[0, [0, 1, 3]] < -1e9), log_q
    assert np.allclose(np.asarray(mcmc.tempered(0.5)(logits, 7.0)), jax.nn.log_softmax(2 * logits))
    with pytest.raises(InputError, match="temperature"):
        mcmc.tempered(0.0)
    with pytest.raises(InputError, match="temperature"):
        mcmc.tempered(math.inf)


def test_log_acceptance_multiplies_the_difference_and_handles_dead_targets():
    # huge alpha: alpha * (difference), not a difference of two huge products
    r = mcmc.log_acceptance(jnp.float32(1e10), jnp.float32(-3.0), jnp.float32(-3.0 + 2 ** -20), 0.0, 0.0, 0.0, 0.0)
    assert np.isclose(float(r), -1e10 * 2 ** -20, rtol=1e-4)
    inf = np.inf
    assert float(mcmc.log_acceptance(2.0, -inf, -inf, 0.0, 0.0, 0.0, 0.0, xp=np)) == 0.0  # both dead: free
    assert float(mcmc.log_acceptance(2.0, -inf, -1.0, 0.0, 0.0, 0.0, 0.0, xp=np)) == -inf
    assert float(mcmc.log_acceptance(2.0, -1.0, -inf, 0.0, 0.0, 0.0, 0.0, xp=np)) == inf
    assert float(mcmc.log_acceptance(2.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -inf, xp=np)) == inf


def test_build_kernel_takes_functions_not_names():
    with pytest.raises(InputError, match="move must be a function"):
        mcmc.build_kernel("independent")
    with pytest.raises(InputError, match="move must be a function"):
        mcmc.build_kernel(lambda key, n: n)  # no log_prob
    with pytest.raises(InputError, match="proposal"):
        mcmc.build_kernel(proposal=0.25)
    with pytest.raises(InputError, match="log_potential"):
        mcmc.build_kernel(log_potential=3)
    with pytest.raises(InputError, match="custom"):
        mcmc.moves.custom(1, 2)
    # hashable and compared by value: a static jit argument
    assert mcmc.build_kernel() == mcmc.build_kernel(mcmc.moves.suffix(), mcmc.tempered())
    assert hash(mcmc.build_kernel(mcmc.moves.independent())) == hash(mcmc.build_kernel(mcmc.moves.independent()))
