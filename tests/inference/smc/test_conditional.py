"""Particle Gibbs and PGAS against their exact transition matrices on enumerable programs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genppl import models, ppl
from genppl.inference.smc import conditional
from genppl.models.interface import InputError
from tests.helpers import assert_matches_law

from .gibbs_exact import Model, pg_matrix

CAP, ALPHA = 3, 2.0
PROPOSALS = {"prior": ppl.proposals.prior(), "optimal": ppl.proposals.locally_optimal()}


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(3), vocab_size=3, max_len=CAP, eos_id=0, eos_boost=0.3)


def program_of(lm, step_level):
    # token 1 is the character "a": at step level a step ends after every "a"
    return ppl.Program(lm, [1], CAP, alpha=ALPHA, step_delimiter="a" if step_level else None)


def exact_law(lm):
    seqs, logp = lm.enumerate(CAP)
    logu = ALPHA * logp
    return seqs, np.exp(logu - np.logaddexp.reduce(logu))


@pytest.mark.parametrize("step_level", [False, True], ids=["token", "step"])
@pytest.mark.parametrize("proposal", ["prior", "optimal"])
@pytest.mark.parametrize("ancestor_sampling", [False, True], ids=["PG", "PGAS"])
def test_exact_matrix_leaves_target_invariant(lm, step_level, proposal, ancestor_sampling):
    """No Monte Carlo: every branch of one iteration enumerated in float64."""
    seqs, _ = exact_law(lm)
    model = Model(lm, CAP, ALPHA, proposal, delimiters=(1,) if step_level else ())
    log_gamma = np.array([model.log_gamma(s) for s in seqs])  # the float64-renormalised table
    pi = np.exp(log_gamma - np.logaddexp.reduce(log_gamma))
    k = pg_matrix(model, seqs, 2, ancestor_sampling)
    assert np.abs(k.sum(1) - 1).max() < 1e-12
    assert np.abs(pi @ k - pi).max() < 1e-10
    # a wrong kernel (final particle picked ignoring the weights) is caught by the same check
    wrong = pg_matrix(model, seqs, 2, ancestor_sampling, select="uniform")
    assert np.abs(pi @ wrong - pi).max() > 1e-3


def one_step(kernel, program, state, keys):
    return jax.vmap(lambda k: kernel(k, state, program)[0])(keys)


one_step_jit = jax.jit(one_step, static_argnums=0)


def as_seq(ref, length):
    return tuple(int(t) for t in ref[:length])


@pytest.mark.slow  # ~40 s: 16 compiled vmapped kernels; the exact matrices above run by default
@pytest.mark.parametrize("step_level", [False, True], ids=["token", "step"])
@pytest.mark.parametrize("proposal", ["prior", "optimal"])
@pytest.mark.parametrize("ancestor_sampling", [False, True], ids=["PG", "PGAS"])
def test_sampler_transition_matches_exact_row(lm, step_level, proposal, ancestor_sampling):
    """The compiled kernel's one-step law from a fixed reference is the enumerated row K(x0, .).

    4,000 transitions: each frequency within 5 binomial standard errors (a bias of 0.04 in a
    probability near 0.5 is 5 standard errors) and TV within twice its noise floor."""
    seqs, _ = exact_law(lm)
    model = Model(lm, CAP, ALPHA, proposal, delimiters=(1,) if step_level else ())
    program = program_of(lm, step_level)
    kernel = conditional.particle_gibbs(2, PROPOSALS[proposal], ancestor_sampling)
    k = pg_matrix(model, seqs, 2, ancestor_sampling)
    for x0 in (seqs[3], seqs[-1]):
        state = kernel.init(program, x0)
        out = one_step_jit(kernel, program, state, jax.random.split(jax.random.key(7), 4000))
        refs, lengths = np.asarray(out.reference), np.asarray(out.length)
        samples = [as_seq(r, n) for r, n in zip(refs, lengths)]
        assert_matches_law(samples, seqs, k[seqs.index(x0)])


def chains(kernel, program, state, keys):
    def body(state, ks):
        return jax.vmap(lambda k, s: kernel(k, s, program)[0])(ks, state), None
    return jax.lax.scan(body, state, keys)[0]


chains_jit = jax.jit(chains, static_argnums=0)


@pytest.mark.slow  # ~20 s each on a shared 2-core machine; the exact matrices run by default
@pytest.mark.parametrize("ancestor_sampling", [False, True], ids=["PG", "PGAS"])
def test_chains_histogram_chi_square(lm, ancestor_sampling):
    """400 independent step-level chains from one reference, 20 iterations each: the last states
    are i.i.d. draws from the exact law K^20(x0, .) (itself within 1e-3 TV of pi); Pearson's
    chi-square against it at level 1e-3 (bins with expected count < 5 pooled). A shift of
    0.1 between two probabilities near 0.3 gives chi-square ~ 19 and fails."""
    seqs, _ = exact_law(lm)
    model = Model(lm, CAP, ALPHA, "optimal", delimiters=(1,))
    log_gamma = np.array([model.log_gamma(s) for s in seqs])
    pi = np.exp(log_gamma - np.logaddexp.reduce(log_gamma))
    k = pg_matrix(model, seqs, 2, ancestor_sampling)
    x0, iterations, runs = seqs[-1], 20, 400
    law = np.linalg.matrix_power(k, iterations)[seqs.index(x0)]
    assert 0.5 * np.abs(law - pi).sum() < 1e-3
    program = program_of(lm, True)
    kernel = conditional.particle_gibbs(2, None, ancestor_sampling)
    init = kernel.init(program, x0)
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (runs,) + x.shape), init)
    keys = jax.random.split(jax.random.key(11), (iterations, runs))
    out = chains_jit(kernel, program, state, keys)
    samples = [as_seq(r, n) for r, n in zip(np.asarray(out.reference), np.asarray(out.length))]
    counts = np.array([samples.count(s) for s in seqs], float)
    assert counts.sum() == runs
    expected = law * runs
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3


@pytest.mark.slow  # ~5 s of compilation; the replay is also covered by the init checks
def test_log_target_matches_enumeration(lm):
    seqs, logp = lm.enumerate(CAP)
    log_gamma, finished = conditional.log_target(program_of(lm, True), [list(s) for s in seqs])
    assert bool(np.all(finished))
    np.testing.assert_allclose(np.asarray(log_gamma), ALPHA * logp, atol=1e-5)


def test_init_refuses_unfinished_or_impossible_references(lm):
    program = ppl.Program(lm, [1], CAP, potential=ppl.BannedTokens([2]))
    kernel = conditional.particle_gibbs(2)
    with pytest.raises(InputError, match="not a finished continuation"):
        kernel.init(program, [1, 0 + 1])  # two tokens, no EOS, below the cap
    with pytest.raises(InputError, match="not a finished continuation"):
        kernel.init(program, [2, 0])  # banned token
    with pytest.raises(InputError, match="num_particles >= 2"):
        conditional.particle_gibbs(1)
