"""Effect-handler step functions: the same target written with potentials or with
sample / factor / condition / observe gives identical weights, normalisers and SMC steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy.special import logsumexp

from genppl import models
from genppl import ppl
from genppl.models.interface import InputError

from .walk import walk

V, MAX_LEN, EOS, MIN_LEN = 5, 4, 0, 2
PROMPT = [1]


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(5), vocab_size=V, max_len=MAX_LEN, eos_id=EOS)


@pytest.fixture(scope="module")
def seqs(lm):
    return lm.enumerate(MAX_LEN)


# ---- "no token containing 'b' + at least MIN_LEN tokens", both ways --------------------------
def reference(lm, min_len=MIN_LEN):
    banned = [i for i, b in enumerate(lm.tokenizer.token_bytes) if b"b" in b]
    return ppl.BannedTokens(banned) * ppl.MinLength(min_len, lm.eos_id)


def no_b_step(ctx):
    tok = ppl.sample("tok", ctx.next_token())
    ppl.factor("no_b", jnp.where(ctx.token_has("b", tok), -jnp.inf, 0.0))
    ppl.condition("long_enough", ~ctx.is_eos(tok) | (ctx.num_generated >= MIN_LEN))
    return tok


def min_len_finish(ctx):
    ppl.condition(ctx.num_generated >= MIN_LEN)


def handler(lm):
    return ppl.HandlerPotential(no_b_step, lm, finish=min_len_finish)


def exact_log_phi(lm, seq, min_len=MIN_LEN):
    body = [t for t in seq if t != lm.eos_id]
    ok = b"b" not in lm.tokenizer.decode_bytes(body) and len(body) >= min_len
    return 0.0 if ok else -math.inf


def test_same_logw_next_and_normaliser(lm, seqs):
    sequences, logp = seqs
    rec_ref, rec_eff = [], []
    phi_ref = walk(reference(lm), lm, sequences, PROMPT, MAX_LEN, record=rec_ref)
    phi_eff = walk(handler(lm), lm, sequences, PROMPT, MAX_LEN, record=rec_eff)
    for (a, active), (b, _) in zip(rec_ref, rec_eff):
        np.testing.assert_array_equal(a[active], b[active])  # identical, -inf included
    np.testing.assert_array_equal(phi_ref, phi_eff)
    want = np.array([exact_log_phi(lm, s) for s in sequences])
    np.testing.assert_array_equal(phi_eff, want)
    log_z = logsumexp(logp + phi_eff)
    assert log_z == logsumexp(logp + phi_ref) and -5 < log_z < 0


def test_min_length_at_the_cap_goes_through_finish(lm):
    """A sequence cut at the cap is checked by ``finish`` (MinLength's logw_cap)."""
    cap = 2
    seqs = [s for s in lm.enumerate(cap)[0]]
    ref = walk(reference(lm, min_len=3), lm, seqs, PROMPT, cap)
    step = lambda ctx: ppl.condition(~ctx.token_has("b", ppl.sample("t", ctx.next_token())))
    finish = lambda ctx: ppl.condition(ctx.num_generated >= 3)
    eff = walk(ppl.HandlerPotential(step, lm, finish=finish), lm, seqs, PROMPT, cap)
    np.testing.assert_array_equal(ref, eff)
    assert np.isneginf(eff).all()  # nothing reaches length 3 under a cap of 2


@pytest.mark.parametrize("proposal", [ppl.proposals.locally_optimal(), ppl.proposals.prior()])
def test_program_steps_identical_with_same_keys(lm, proposal):
    a = ppl.Program(lm, PROMPT, MAX_LEN, potential=reference(lm))
    b = ppl.EffectProgram(no_b_step, lm, PROMPT, MAX_LEN, finish=min_len_finish)
    assert isinstance(b, ppl.Program) and isinstance(b.potential, ppl.HandlerPotential)
    sa, sb = a.init(32), b.init(32)
    step = jax.jit(lambda program, key, state: program.step(key, state, proposal))
    for i in range(MAX_LEN):
        key = jax.random.key(100 + i)
        sa, wa = step(a, key, sa)
        sb, wb = step(b, key, sb)
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(sa.lm.tokens, sb.lm.tokens)
    assert bool(sb.done.all())
    if proposal == ppl.proposals.locally_optimal():
        assert np.isfinite(np.asarray(wb)).any()


def test_simulate_is_the_bootstrap_view(lm):
    """seed + trace: the drawn token's summed terms equal logw_next at that token."""
    pot = handler(lm)
    state = lm.prefill(PROMPT, 256, MAX_LEN)
    state = lm.extend(state, jnp.full((256,), 3))
    state = lm.extend(state, jnp.full((256,), 4))
    token, logw, log_q = pot.simulate(jax.random.key(0), pot.init(state), state)
    table = pot.logw_next(pot.init(state), state)
    rows = jnp.arange(256)
    np.testing.assert_array_equal(logw, table[rows, token])
    np.testing.assert_allclose(log_q, jax.nn.log_softmax(state.logits)[rows, token], atol=1e-6)
    assert len(set(np.asarray(token).tolist())) > 2  # drawn, not fixed
    assert np.isneginf(np.asarray(logw)[np.asarray(token) == 2]).all()  # 'b' ruled out


def test_soft_factors_and_observe(lm):
    w = jnp.array([0.3, -0.2, 0.5, 1.0, -0.7])

    def step(ctx):
        tok = ppl.sample("tok", ctx.next_token())
        ppl.factor("w", w[tok])
        ppl.observe("y", dist.Normal(0.1 * tok + 0.05 * ctx.num_generated, 1.0), 0.3)
        ppl.factor("const", -1.5)  # a scalar: broadcast to every particle

    state = lm.extend(lm.prefill(PROMPT, 3, MAX_LEN), jnp.array([1, 2, 3]))
    pot = ppl.HandlerPotential(step, lm.tokenizer)
    got = pot.logw_next(pot.init(state), state)
    v = jnp.arange(V)[None]
    want = w[v] + dist.Normal(0.1 * v + 0.05 * 1, 1.0).log_prob(0.3) - 1.5
    np.testing.assert_allclose(got, jnp.broadcast_to(want, (3, V)), atol=1e-6)


def test_token_site_with_another_distribution_replaces_the_lm(lm):
    def step(ctx):
        ppl.sample("tok", dist.Categorical(logits=ctx.logits / 2.0, validate_args=False))

    state = lm.extend(lm.prefill(PROMPT, 2, MAX_LEN), jnp.array([1, 2]))
    pot = ppl.HandlerPotential(step, lm)
    got = pot.logw_next(pot.init(state), state)
    want = jax.nn.log_softmax(state.logits / 2.0) - jax.nn.log_softmax(state.logits)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_brief_example_and_unnamed_conditions(lm):
    def step(ctx):
        tok = ppl.sample("tok", ctx.next_token())
        ppl.factor("no_e", jnp.where(ctx.token_has("c", tok), -jnp.inf, 0.0))
        ppl.condition(tok != 4)
        ppl.condition(tok != 1)  # two unnamed conditions do not collide
        return tok

    state = lm.prefill(PROMPT, 2, MAX_LEN)
    pot = ppl.HandlerPotential(step, lm)
    got = np.asarray(pot.logw_next(pot.init(state), state))
    want = np.where(np.isin(np.arange(V), [1, 3, 4]), -np.inf, 0.0)
    np.testing.assert_array_equal(got, np.broadcast_to(want, (2, V)))


def test_vocab_batches_match_vmap(lm):
    state = lm.extend(lm.prefill(PROMPT, 3, MAX_LEN), jnp.array([1, 3, 4]))
    full = handler(lm)
    chunked = ppl.HandlerPotential(no_b_step, lm, finish=min_len_finish, vocab_batch_size=2)
    np.testing.assert_array_equal(full.logw_next((), state), chunked.logw_next((), state))


# ---- carried state --------------------------------------------------------------------------
def at_most_one_a(ctx):
    tok = ppl.sample("tok", ctx.next_token())
    count = ctx.state["a"] + ctx.token_has("a", tok).astype(jnp.int32)
    ppl.condition(count <= 1)
    ctx.state = {"a": count}


def test_carried_state_telescopes(lm, seqs):
    sequences, _ = seqs
    pot = ppl.HandlerPotential(at_most_one_a, lm, init_state={"a": 0})
    got = walk(pot, lm, sequences, PROMPT, MAX_LEN)
    want = [0.0 if lm.tokenizer.decode(s).count("a") <= 1 else -math.inf for s in sequences]
    np.testing.assert_array_equal(got, want)


def test_carried_state_in_jitted_step_program(lm):
    program = ppl.EffectProgram(at_most_one_a, lm, PROMPT, MAX_LEN, init_state={"a": jnp.int32(0)},
                                step_delimiter="c")
    state = program.init(16)
    step = jax.jit(lambda program, key, state: program.step(key, state, ppl.proposals.locally_optimal()))
    for i in range(MAX_LEN):
        state, logw = step(program, jax.random.key(i), state)
        assert not np.isnan(np.asarray(logw)).any()
    for text, count in zip(program.finished_text(state), np.asarray(state.potential["carry"]["a"])):
        assert text.count("a") == count <= 1


# ---- errors ---------------------------------------------------------------------------------
def _logw(step, lm, **kwargs):
    pot = ppl.HandlerPotential(step, lm, **kwargs)
    state = lm.prefill(PROMPT, 2, MAX_LEN)
    return pot.logw_next(pot.init(state), state)


def test_errors(lm):
    with pytest.raises(InputError, match="must sample the next token"):
        _logw(lambda ctx: ppl.factor("f", 0.0), lm)
    with pytest.raises(InputError, match="site 'z' is an unobserved sample site"):
        _logw(lambda ctx: (ppl.sample("tok", ctx.next_token()), ppl.sample("z", dist.Normal())), lm)
    with pytest.raises(InputError, match="site .tok. is an unobserved sample site.*named .token."):
        _logw(lambda ctx: ppl.sample("tok", ctx.next_token()), lm, token_site="token")
    with pytest.raises(InputError, match="needs a boolean pred"):
        _logw(lambda ctx: ppl.condition(ppl.sample("tok", ctx.next_token())), lm)
    with pytest.raises(InputError, match=r"site 'f' gives log-weights of shape \(2, 3\)"):
        _logw(lambda ctx: (ppl.sample("tok", ctx.next_token()), ppl.factor("f", jnp.zeros((2, 3)))), lm)
    with pytest.raises(InputError, match="carries no state"):
        _logw(lambda ctx: (ppl.sample("tok", ctx.next_token()), ctx.state), lm)
    with pytest.raises(InputError, match="finish function may not sample"):
        _logw(lambda ctx: ppl.sample("tok", ctx.next_token()), lm,
              finish=lambda ctx: ppl.sample("x", dist.Normal()))
    with pytest.raises(InputError, match="site name"):
        ppl.factor(3.0, 0.0)
    with pytest.raises(InputError, match="needs the EOS id"):
        ppl.HandlerPotential(no_b_step, object())
    with pytest.raises(InputError, match="lm must be a models.LanguageModel"):
        ppl.EffectProgram(no_b_step, lm.tokenizer, PROMPT, MAX_LEN)


def test_state_structure_error(lm):
    def step(ctx):
        ppl.sample("tok", ctx.next_token())
        ctx.state = {"a": ctx.state["a"], "b": 1}

    pot = ppl.HandlerPotential(step, lm, init_state={"a": 0})
    state = lm.prefill(PROMPT, 2, MAX_LEN)
    pstate = pot.init(state)
    new = lm.extend(state, jnp.array([1, 2]))
    with pytest.raises(InputError, match="ctx.state must keep its structure"):
        pot.update(pstate, new, jnp.array([1, 2]))
