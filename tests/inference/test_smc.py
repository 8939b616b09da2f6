"""SMC against exact enumeration on small tabular LMs (ALGORITHMS.md, "How to test a sampler").

Two exact identities of SMC are checked over many independent runs r = 1..R:

* E[Z_hat] = Z (the log Z estimator is unbiased on the natural scale);
* E[(1/n) sum_i w_i 1{x_i = x}] = Z pi(x) (the unnormalised particle measure is unbiased),

each as a z-test whose standard error comes from the R runs themselves.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import inference
from genppl import models
from genppl import ppl
from genppl.inference import sequential_mc
from genppl.models.sampling import TRACE_COUNTS

VOCAB, CAP, EOS = 5, 4, 0
RUNS = 400


def random_lm(seed, vocab=VOCAB, cap=CAP):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=vocab, max_len=cap, eos_id=EOS,
                                   eos_boost=0.5)


def count_ones(tokens, length, prompt_length):
    pos = jnp.arange(tokens.shape[1])[None, :]
    inside = (pos >= prompt_length[:, None]) & (pos < length[:, None])
    return 0.7 * jnp.sum(inside & (tokens == 1), axis=1).astype(jnp.float32)


# one instance each, so that programs built from them share compiled sweeps
BANNED = ppl.BannedTokens([2])
MIN2 = ppl.MinLength(2, EOS)
SOFT = ppl.SequenceScorer(count_ones)
TARGET = BANNED * MIN2 * SOFT


def log_phi(seq):
    body = [t for t in seq if t != EOS]
    if 2 in body or len(body) < 2:
        return -math.inf
    return 0.7 * body.count(1)


def exact(lm, alpha=1.0, log_phi=log_phi, cap=CAP):
    """(sequences, exact target probabilities, log Z, LM probabilities) by enumeration."""
    seqs, logp = lm.enumerate(cap)
    logu = np.array([alpha * lp + log_phi(s) for s, lp in zip(seqs, logp)])
    log_z = np.logaddexp.reduce(logu)
    return seqs, np.exp(logu - log_z), log_z, np.exp(logp)


_RUNNERS = {}


def run_many(program, n, runs=RUNS, resampler="systematic", ess_threshold=0.5,
             selection="resample", seed=0):
    """R independent sweeps in one vmapped program: (log Z_hat [R], logw [R, n], seqs)."""
    config = (resampler, float(ess_threshold), selection)
    if config not in _RUNNERS:
        def many(program, state, keys):
            one = lambda k: sequential_mc._sweep_impl(program, state, k, *config)  # noqa: E731
            return jax.vmap(one)(keys)
        _RUNNERS[config] = jax.jit(many)
    state = sequential_mc.init(program, n)
    keys = jax.random.split(jax.random.key(seed), runs)
    out = _RUNNERS[config](program, state, keys)
    logw = np.asarray(out.logw, np.float64)
    tokens, length, start = (np.asarray(a) for a in
                             (out.particles.lm.tokens, out.particles.lm.length, out.particles.lm.prompt_length))
    seqs = [[tuple(int(t) for t in tokens[r, i, start[r, i]:length[r, i]]) for i in range(n)]
            for r in range(runs)]
    log_z = np.logaddexp.reduce(logw, axis=1) - np.log(n)
    return log_z, logw, seqs


def assert_unbiased_z(log_z_hat, log_z):
    z_hat = np.exp(log_z_hat - log_z)  # ratio to the exact Z: its mean must be 1
    se = z_hat.std(ddof=1) / np.sqrt(len(z_hat))
    assert np.all(np.isfinite(log_z_hat) | np.isneginf(log_z_hat)), "NaN in log Z_hat"
    assert abs(z_hat.mean() - 1.0) < 3 * se, \
        f"mean Z_hat / Z = {z_hat.mean():.4f}, {abs(z_hat.mean() - 1) / se:.1f} standard errors from 1"


def assert_unbiased_measure(logw, seqs, support, pi, log_z, prior, z=4.0):
    """Each (1/n) sum_i w_i 1{x_i = x} / Z averages to pi(x), within z standard errors."""
    index = {s: k for k, s in enumerate(support)}
    runs, n = logw.shape
    a = np.zeros((runs, len(support)))
    w = np.exp(logw - log_z)
    for r in range(runs):
        for i in range(n):
            if w[r, i] > 0:
                assert seqs[r][i] in index, f"particle {seqs[r][i]} outside the target's support"
                a[r, index[seqs[r][i]]] += w[r, i] / n
    # sequences that are rare under the target or the LM (the bootstrap proposal) are pooled
    # into one bin: an empirical standard error needs many hits
    common = np.minimum(pi, prior) * runs * n >= 30
    a = np.concatenate([a[:, common], a[:, ~common].sum(1, keepdims=True)], 1)
    pi = np.concatenate([pi[common], [pi[~common].sum()]])
    names = [s for s, c in zip(support, common) if c] + ["rare"]
    mean, se = a.mean(0), a.std(0, ddof=1) / np.sqrt(runs)
    ok = np.abs(mean - pi) <= z * se + 1e-9
    assert ok.all(), (f"estimated posterior off at {[names[k] for k in np.flatnonzero(~ok)]}: "
                      f"{mean[~ok]} vs exact {pi[~ok]} (se {se[~ok]})")
    assert np.isclose(mean.sum(), 1.0, atol=4 * np.sqrt((a.sum(1).var(ddof=1)) / runs))


@pytest.mark.parametrize("proposal", ["prior", "optimal"])
@pytest.mark.parametrize("resampler", sorted(inference.RESAMPLERS))
def test_log_z_is_unbiased_for_every_resampler_and_proposal(resampler, proposal):
    for seed in (1, 2, 3):
        lm = random_lm(seed)
        program = ppl.Program(lm, [1], CAP, potential=TARGET, proposal=proposal)
        _, _, log_z, _ = exact(lm)
        log_z_hat, logw, seqs = run_many(program, 8, resampler=resampler, ess_threshold=0.9, seed=seed)
        assert_unbiased_z(log_z_hat, log_z)


@pytest.mark.parametrize("proposal", ["prior", "optimal"])
def test_weighted_particles_match_the_exact_posterior(proposal):
    lm = random_lm(4)
    program = ppl.Program(lm, [1], CAP, potential=TARGET, proposal=proposal)
    support, pi, log_z, prior = exact(lm)
    log_z_hat, logw, seqs = run_many(program, 8, seed=4)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_power_target_with_tempered_proposal():
    lm = random_lm(5)
    program = ppl.Program(lm, [1], CAP, potential=BANNED, alpha=2.0, proposal="optimal")
    support, pi, log_z, prior = exact(lm, alpha=2.0, log_phi=lambda s: -math.inf if 2 in s else 0.0)
    log_z_hat, logw, seqs = run_many(program, 8, seed=5)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_locally_optimal_proposal_has_lower_variance_than_bootstrap():
    lm = random_lm(6)
    _, _, log_z, _ = exact(lm)
    spread = {}
    for proposal in ("prior", "optimal"):
        program = ppl.Program(lm, [1], CAP, potential=TARGET, proposal=proposal)
        log_z_hat, _, _ = run_many(program, 8, seed=6)
        finite = np.isfinite(log_z_hat)
        # a run whose particles all died has log Z_hat = -inf: infinite variance
        spread[proposal] = np.var(log_z_hat) if finite.all() else math.inf
    assert np.isfinite(spread["optimal"])
    assert spread["optimal"] < spread["prior"], spread


def test_twisted_smc_keeps_the_target():
    lm = random_lm(7)
    psi = jax.random.normal(jax.random.key(70), (CAP + 2, VOCAB))

    def log_psi(lm_state):  # a twist depending on depth and the next token
        depth = jnp.clip(lm_state.length - lm_state.prompt_length, 0, CAP + 1)
        return psi[depth]

    twist = ppl.Twist(log_psi, EOS)
    program = ppl.Program(lm, [1], CAP, potential=TARGET * twist, proposal="optimal")
    support, pi, log_z, prior = exact(lm)
    log_z_hat, logw, seqs = run_many(program, 8, seed=7)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_without_replacement_selection_is_exact():
    lm = random_lm(8)
    program = ppl.Program(lm, [1], CAP, potential=TARGET)
    support, pi, log_z, prior = exact(lm)
    log_z_hat, logw, seqs = run_many(program, 6, selection="without_replacement", seed=8)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_without_replacement_selection_unit():
    """Fearnhead–Clifford: distinct picks, total weight kept, E[new weight of j] = w_j."""
    logw = jnp.log(jnp.array([5.0, 0.01, 1.0, 0.0, 0.3, 0.5, 2.0, 0.2, 0.05, 0.0]))
    n, runs = 4, 20000
    pick = jax.jit(jax.vmap(lambda k: sequential_mc.select_without_replacement(k, logw, n)))
    chosen, new_logw = (np.asarray(a) for a in pick(jax.random.split(jax.random.key(0), runs)))
    assert all(len(set(row)) == n for row in chosen[:500]), "a candidate was chosen twice"
    w = np.exp(np.asarray(logw, np.float64))
    assert np.allclose(np.exp(new_logw).sum(1), w.sum(), rtol=1e-5)
    assert not np.isin(chosen, [3, 9]).any(), "a zero-weight candidate was chosen"
    assert (chosen == 0).sum(1).min() == 1, "the heaviest candidate must always be kept"
    contrib = np.zeros((runs, len(w)))
    np.add.at(contrib, (np.repeat(np.arange(runs), n), chosen.ravel()), np.exp(new_logw).ravel())
    mean, se = contrib.mean(0), contrib.std(0, ddof=1) / np.sqrt(runs)
    assert np.all(np.abs(mean - w) <= 4 * se + 1e-6), (mean, w)
    # fewer live candidates than slots: split, not dropped
    chosen, new_logw = sequential_mc.select_without_replacement(
        jax.random.key(1), jnp.log(jnp.array([1.0, 0.0, 3.0])), 4)
    assert sorted(np.asarray(chosen).tolist()) == [0, 0, 2, 2]
    assert np.isclose(np.exp(np.asarray(new_logw)).sum(), 4.0)


def test_step_level_transitions_are_exact():
    lm = random_lm(10)
    # steps end at token 1 ('a'); a sequence-level score evaluated at every boundary
    scorer = ppl.SequenceScorer(count_ones, every_step=True)
    program = ppl.Program(lm, [1], CAP, potential=BANNED * scorer, step_delimiter="a", proposal="optimal")
    support, pi, log_z, prior = exact(lm, log_phi=lambda s: -math.inf if 2 in s else 0.7 * s.count(1))
    log_z_hat, logw, seqs = run_many(program, 8, seed=10)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def _step_texts(seq, lm):
    """Prefixes of seq at each step boundary (after each 'a' token, and at the end)."""
    body = [t for t in seq if t != EOS]
    cuts = [k + 1 for k, t in enumerate(body) if t == 1]
    if not cuts or cuts[-1] != len(body) or (seq and seq[-1] == EOS):
        cuts.append(len(body))
    cuts = sorted(set(cuts))
    return [lm.tokenizer.decode(body[:c]) for c in cuts]


def reward(text):
    return 0.2 + 0.6 * ((text.count("b") + len(text)) % 3) / 2


@pytest.mark.parametrize("target", ["product", "final"])
def test_reward_particle_filter_targets_what_it_states(target):
    lm = random_lm(11)

    def log_phi_reward(seq):
        texts = _step_texts(seq, lm)
        if target == "final":
            return math.log(reward(texts[-1]))
        return sum(math.log(reward(t)) for t in texts)

    support, pi, log_z, prior = exact(lm, log_phi=log_phi_reward)
    factor = ppl.StepReward(reward, lm.tokenizer, target=target, batched=False)
    program = ppl.Program(lm, [1], CAP, potential=factor, proposal="prior", step_delimiter="a")
    log_z_hat, logw, seqs = run_many(program, 8, runs=300, ess_threshold=1.0, seed=11)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, seqs, support, pi, log_z, prior)


def test_reward_particle_filter_convenience_runs():
    lm = random_lm(12)
    result = inference.reward_particle_filter(lm, [1], lambda ts: [reward(t) for t in ts], 16, 0,
                                              max_new_tokens=CAP, step_delimiter="a")
    assert "product" in result.method
    assert np.isfinite(result.log_z)
    assert result.num_resampling >= 1 or len(result.ess) == 1


# ---- failure modes ------------------------------------------------------------------------
def test_impossible_constraint_is_a_result_not_an_exception():
    lm = random_lm(13)
    nothing = ppl.TokenMask(np.zeros(VOCAB, bool))
    for selection in ("resample", "without_replacement"):
        result = inference.smc(ppl.Program(lm, [1], CAP, potential=nothing), 8, 0, selection=selection)
        assert result.log_z == -math.inf
        assert "ruled out" in result.message
        assert not np.isnan(result.log_weights).any() and not np.isnan(result.ess).any()
        assert result.best() is None and result.vote(len) == {}
        assert np.all(result.weights == 0)
    # longer than the cap allows: every particle dies at the cap
    result = inference.smc(ppl.Program(lm, [1], CAP, potential=ppl.MinLength(CAP + 1, EOS)), 8, 0)
    assert result.log_z == -math.inf and result.message


def test_partly_impossible_constraint_keeps_the_survivors():
    lm = random_lm(14)

    def first_token_not_one(tokens, length, prompt_length):
        first = jnp.take_along_axis(tokens, prompt_length[:, None], 1)[:, 0]
        return jnp.where(first == 1, -jnp.inf, 0.0)

    program = ppl.Program(lm, [1], CAP, potential=ppl.SequenceScorer(first_token_not_one), proposal="prior")
    result = inference.smc(program, 64, 3, ess_threshold=0.0)
    dead = np.isneginf(result.log_weights)
    assert dead.any() and not dead.all()
    assert np.isfinite(result.log_z) and result.message is None
    assert not np.isnan(result.log_weights).any()
    assert all(ids[0] != 1 for ids, w in zip(result.token_ids, result.weights) if w > 0)


def test_sweep_compiles_once_per_configuration():
    lm = random_lm(15)
    program = ppl.Program(lm, [1], CAP, potential=BANNED)
    inference.smc(program, 8, 0)
    before = TRACE_COUNTS["smc"]
    inference.smc(program, 8, 1)
    inference.smc(program.replace(prompt_ids=[3, 1]), 8, 2)  # another prompt, same bucket
    inference.smc(program.replace(lm=random_lm(16)), 8, 3)  # other weights, same shapes
    assert TRACE_COUNTS["smc"] == before
    inference.smc(program, 16, 0)  # another particle count is another program
    assert TRACE_COUNTS["smc"] == before + 1


# ---- results ------------------------------------------------------------------------------
def test_result_object():
    lm = random_lm(17)
    program = ppl.Program(lm, [1], CAP, potential=BANNED)
    result = inference.smc(program, 32, 0, ess_threshold=1.0)
    assert len(result.texts) == len(result.token_ids) == 32
    assert np.isclose(result.weights.sum(), 1.0)
    assert len(result.ess) == len(result.resampled) >= 1
    assert np.all((result.ess > 0) & (result.ess <= 32 + 1e-6))
    assert all(2 not in ids for ids in result.token_ids)
    votes = result.vote(lambda text: len(text))
    assert np.isclose(sum(votes.values()), 1.0) and list(votes.values()) == sorted(votes.values(), reverse=True)
    assert result.best_answer(len) == next(iter(votes))
    assert result.best() in result.texts
    assert np.isclose(sum(result.distribution().values()), 1.0)
    assert "log Z" in repr(result) and "<table>" in result._repr_html_()
    assert str(result.num_particles) in result.summary()


def test_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    lm = random_lm(18)
    result = inference.smc(ppl.Program(lm, [1], CAP, potential=BANNED), 16, 0, ess_threshold=1.0)
    ax_ess, ax_w = result.plot()
    assert ax_ess.get_ylabel() == "ESS" and len(ax_w.patches) == 16


@pytest.mark.parametrize("kwargs, fix", [
    (dict(n=0), "n must be"),
    (dict(resampler="best"), "unknown resampler"),
    (dict(ess_threshold=1.5), "ess_threshold"),
    (dict(selection="greedy"), "selection must be"),
])
def test_bad_input(kwargs, fix):
    lm = random_lm(19)
    program = ppl.Program(lm, [1], CAP)
    args = dict(n=8) | kwargs
    n = args.pop("n")
    with pytest.raises(ValueError, match=fix):
        inference.smc(program, n, 0, **args)


def test_without_replacement_needs_token_level_program():
    lm = random_lm(20)
    program = ppl.Program(lm, [1], CAP, step_delimiter="a")
    with pytest.raises(ValueError, match="token-level"):
        inference.smc(program, 8, 0, selection="without_replacement")
    with pytest.raises(ValueError, match="ppl.Program"):
        inference.smc(lm, 8, 0)


def test_effect_handler_program_gives_the_same_smc_answer():
    """The same target written with potentials and as a numpyro step function."""
    lm = random_lm(21)

    def step(ctx):
        tok = ppl.sample("tok", ctx.next_token())
        ppl.condition("no_b", ~ctx.token_has("b", tok))
        ppl.factor("ones", jnp.where(tok == 1, 0.7, 0.0))
        ppl.condition("long_enough", ~ctx.is_eos(tok) | (ctx.num_generated >= 2))
        return tok

    def finish(ctx):
        ppl.condition(ctx.num_generated >= 2)

    ones = ppl.SequenceScorer(count_ones)
    written = ppl.Program(lm, [1], CAP, potential=BANNED * MIN2 * ones)
    handled = ppl.EffectProgram(step, lm, [1], CAP, finish=finish)
    a, b = inference.smc(written, 64, 7), inference.smc(handled, 64, 7)
    _, _, log_z, _ = exact(lm)
    assert np.isfinite(a.log_z) and np.isfinite(b.log_z)
    # token-level factors (handler) and a final score (SequenceScorer) weight at different
    # times, so single runs differ; both estimate the same Z
    log_z_a, _, _ = run_many(written, 8, runs=300, seed=21)
    log_z_b, _, _ = run_many(handled, 8, runs=300, seed=21)
    assert_unbiased_z(log_z_a, log_z)
    assert_unbiased_z(log_z_b, log_z)
    assert all(2 not in ids for ids, w in zip(b.token_ids, b.weights) if w > 0)
