"""Sequence scorers, host scorers, step verifiers and twists: increments telescope to log phi."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models
from genppl import ppl
from genppl.models.interface import InputError

from .walk import walk

V, MAX_LEN, EOS = 5, 4, 0
PROMPT = [1]


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(3), vocab_size=V, max_len=MAX_LEN, eos_id=EOS)


@pytest.fixture(scope="module")
def seqs(lm):
    return lm.enumerate(MAX_LEN)[0]


# ---- a JAX sequence score and its numpy reference -------------------------------------------
WEIGHTS = np.array([0.4, -0.3, 0.8, 0.25, -1.1], np.float32)


def seq_score(tokens, length, prompt_length):
    """sum_j (j+1) * w[x_j] over generated tokens; -inf once token 2 appears twice."""
    pos = jnp.arange(tokens.shape[1])[None]
    gen = (pos >= prompt_length[:, None]) & (pos < length[:, None])
    j = (pos - prompt_length[:, None] + 1).astype(jnp.float32)
    score = jnp.sum(jnp.where(gen, j * jnp.asarray(WEIGHTS)[tokens], 0.0), -1)
    twos = jnp.sum(gen & (tokens == 2), -1)
    return jnp.where(twos >= 2, -jnp.inf, score)


def seq_score_ref(seq):
    if list(seq).count(2) >= 2:
        return -math.inf
    return float(sum((j + 1) * np.float64(WEIGHTS[t]) for j, t in enumerate(seq)))


def assert_log_close(got, want, tol=1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert not np.isnan(got).any(), "a NaN weight"
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), (got, want)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], atol=tol, rtol=tol)


@pytest.mark.parametrize("every_step", [False, True])
@pytest.mark.parametrize("every_token_boundary", [False, True])
def test_sequence_scorer_telescopes(lm, seqs, every_step, every_token_boundary):
    scorer = ppl.SequenceScorer(seq_score, every_step=every_step)
    got = walk(scorer, lm, seqs, PROMPT, MAX_LEN, every_token_boundary)
    assert_log_close(got, [seq_score_ref(s) for s in seqs])
    assert any(np.isneginf(got)) and any(np.isfinite(got))


def test_sequence_scorer_every_step_adds_prefix_differences(lm):
    # one sequence, boundaries at every token: increments are f(x_<=s) - f(x_<s)
    scorer = ppl.SequenceScorer(seq_score, every_step=True)
    seq = (3, 1, 4, EOS)
    state = lm.prefill(PROMPT, 1, MAX_LEN)
    pstate, prev = scorer.init(state), 0.0
    for t, tok in enumerate(seq):
        state = lm.extend(state, jnp.array([tok]))
        pstate, w = scorer.logw_boundary(pstate, state, jnp.array([True]), jnp.array([tok == EOS]))
        want = seq_score_ref(seq[: t + 1])
        np.testing.assert_allclose(float(w[0]), want - prev, atol=1e-5)
        np.testing.assert_allclose(float(pstate[0]), want, atol=1e-5)  # the last value is kept
        prev = want


def test_sequence_scorer_not_at_boundary_adds_nothing(lm):
    scorer = ppl.SequenceScorer(seq_score, every_step=True)
    state = lm.extend(lm.prefill(PROMPT, 2, MAX_LEN), jnp.array([3, 3]))
    pstate, w = scorer.logw_boundary(scorer.init(state), state, jnp.array([True, False]),
                                     jnp.array([False, False]))
    assert float(w[1]) == 0.0 and float(pstate[1]) == 0.0 and float(w[0]) != 0.0


def test_sequence_scorer_only_final_when_not_every_step(lm):
    scorer = ppl.SequenceScorer(seq_score)
    state = lm.extend(lm.prefill(PROMPT, 2, MAX_LEN), jnp.array([3, 3]))
    pstate, w = scorer.logw_boundary(scorer.init(state), state, jnp.array([True, True]),
                                     jnp.array([False, True]))
    assert float(w[0]) == 0.0 and float(w[1]) == pytest.approx(seq_score_ref([3]))


def test_sequence_scorer_shape_error(lm):
    scorer = ppl.SequenceScorer(lambda tokens, length, prompt_length: jnp.zeros((3, 2)))
    state = lm.prefill(PROMPT, 4, MAX_LEN)
    with pytest.raises(InputError, match=r"one log-weight per particle, shape \(4,\)"):
        scorer.logw_boundary(scorer.init(state), state, jnp.ones(4, bool), jnp.ones(4, bool))
    with pytest.raises(InputError, match="needs a function"):
        ppl.SequenceScorer(3.0)


# ---- host scorers ---------------------------------------------------------------------------
def host_score_one(text):
    if "cc" in text:
        return -math.inf
    return 0.3 * len(text) - text.count("a") + (0.5 if text.endswith("d") else 0.0)


def host_score(texts):
    return [host_score_one(t) for t in texts]


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("every_step", [False, True])
@pytest.mark.parametrize("every_token_boundary", [False, True])
def test_host_scorer_telescopes(lm, seqs, batched, every_step, every_token_boundary):
    scorer = ppl.HostScorer(host_score if batched else host_score_one, lm.tokenizer,
                            every_step=every_step, batched=batched)
    assert scorer.on_host
    got = walk(scorer, lm, seqs, PROMPT, MAX_LEN, every_token_boundary)
    want = [host_score_one(lm.tokenizer.decode(s)) for s in seqs]
    assert_log_close(got, want)
    assert any(np.isneginf(got))


def test_host_scorer_decodes_generation_and_prompt(lm):
    seen = []

    def fn(texts):
        seen.extend(texts)
        return [0.0] * len(texts)

    state = lm.prefill([1, 2], 2, MAX_LEN)
    for toks in ([3, 4], [4, EOS]):
        state = lm.extend(state, jnp.array(toks))
    ppl.HostScorer(fn, lm.tokenizer).logw_boundary(
        jnp.zeros(2), state, jnp.array([True, True]), jnp.array([True, True]))
    ppl.HostScorer(fn, lm.tokenizer, include_prompt=True).logw_boundary(
        jnp.zeros(2), state, jnp.array([False, True]), jnp.array([False, True]))
    assert seen == ["cd", "d", "abd"]  # EOS decodes to nothing; only rows at a boundary


def test_host_scorer_inside_jit(lm):
    calls = []

    def fn(texts):
        calls.append(list(texts))
        return host_score(texts)

    scorer = ppl.HostScorer(fn, lm.tokenizer)
    state = lm.prefill(PROMPT, 3, MAX_LEN)
    for toks in ([3, 2, 1], [3, 3, EOS]):
        state = lm.extend(state, jnp.array(toks))
    at = jnp.array([True, True, False])
    boundary = jax.jit(scorer.logw_boundary)
    pstate, w = boundary(scorer.init(state), state, at, at)
    assert calls == [["cc", "bc"]]  # through the callback, only the rows that need a score
    assert_log_close(w, [-math.inf, host_score_one("bc"), 0.0])
    assert_log_close(pstate, [-math.inf, host_score_one("bc"), 0.0])


@pytest.mark.parametrize("fn, batched, message", [
    (lambda texts: [0.0] * (len(texts) - 1), True, r"returned 1 values for 2 texts"),
    (lambda texts: 1.5, True, "must return a list of numbers"),
    (lambda texts: [float("nan")] * len(texts), True, r"returned NaN for text 'cb'"),
    (lambda texts: ["high"] * len(texts), True, r"returned 'high' \(str\) for text 'cb'"),
    (lambda text: None, False, r"returned None \(NoneType\)"),
    (lambda text: True, False, "returned a boolean"),
    (lambda text: math.inf, False, r"returned \+inf"),
])
def test_host_scorer_errors(lm, fn, batched, message):
    scorer = ppl.HostScorer(fn, lm.tokenizer, batched=batched)
    state = lm.prefill(PROMPT, 2, MAX_LEN)
    state = lm.extend(lm.extend(state, jnp.array([3, 3])), jnp.array([2, 4]))
    at = jnp.array([True, True])
    with pytest.raises(InputError, match=message):  # eager: the error itself
        scorer.logw_boundary(scorer.init(state), state, at, at)
    with pytest.raises(Exception, match=message):  # jitted: carried by JAX's runtime error
        jax.block_until_ready(jax.jit(scorer.logw_boundary)(scorer.init(state), state, at, at))


def test_host_scorer_construction_errors(lm):
    with pytest.raises(InputError, match="needs a function"):
        ppl.HostScorer("not callable", lm.tokenizer)
    with pytest.raises(InputError, match="tokenizer with .decode"):
        ppl.HostScorer(host_score, object())
    with pytest.raises(InputError, match="every_step must be True or False"):
        ppl.HostScorer(host_score, lm.tokenizer, every_step="yes")


# ---- step verifiers -------------------------------------------------------------------------
def no_ab(text):
    return "ab" not in text


def not_length_two(text):
    return len(text) != 2


@pytest.mark.parametrize("check", [no_ab, not_length_two])
@pytest.mark.parametrize("every_token_boundary", [False, True])
def test_step_verifier_telescopes(lm, seqs, check, every_token_boundary):
    verifier = ppl.StepVerifier(check, lm.tokenizer)
    got = walk(verifier, lm, seqs, PROMPT, MAX_LEN, every_token_boundary)
    want = []
    for s in seqs:
        text = lm.tokenizer.decode(s)
        # checked at every boundary: every prefix that ends a step must pass, and the whole
        prefixes = [lm.tokenizer.decode(s[: t + 1]) for t in range(len(s))] if every_token_boundary else [text]
        want.append(0.0 if all(check(p) for p in prefixes) else -math.inf)
    assert_log_close(got, want)
    assert any(np.isneginf(got)) and any(np.isfinite(got))


def test_step_verifier_errors(lm):
    verifier = ppl.StepVerifier(lambda text: 1.0, lm.tokenizer)
    state = lm.extend(lm.prefill(PROMPT, 1, MAX_LEN), jnp.array([3]))
    with pytest.raises(InputError, match=r"must return True \(valid\) or False"):
        verifier.logw_boundary(verifier.init(state), state, jnp.array([True]), jnp.array([True]))
    ok = ppl.StepVerifier(lambda texts: [np.bool_(True)] * len(texts), lm.tokenizer, batched=True)
    _, w = ok.logw_boundary(ok.init(state), state, jnp.array([True]), jnp.array([True]))
    assert float(w[0]) == 0.0


def test_step_verifier_in_program_with_delimiter(lm):
    """A jitted step-level program: the weights sum to 0 or -inf as the steps' checks say."""
    tok = lm.tokenizer
    program = ppl.Program(lm, PROMPT, MAX_LEN, potential=ppl.StepVerifier(no_ab, tok), step_delimiter="b")
    state = program.init(64)
    step = jax.jit(lambda program, key, state: program.step(key, state, ppl.proposals.prior()))
    total = jnp.zeros(64)
    for i in range(MAX_LEN):
        state, logw = step(program, jax.random.key(i), state)
        total = total + logw
    assert bool(state.done.all())
    texts = program.finished_text(state)
    total = np.asarray(total)
    assert not np.isnan(total).any()
    for text, w in zip(texts, total):
        assert w == (0.0 if no_ab(text) else -math.inf), (text, w)
    assert np.isneginf(total).any() and np.isfinite(total).any()


# ---- twists ---------------------------------------------------------------------------------
def table_twist(lm, key, hole=False):
    """log psi(x_<t, v) = table[code(x_<t), v], a random table over prefixes."""
    table = jax.random.normal(key, (lm.table.shape[0], V))
    if hole:  # some -inf entries: paths through them die, never NaN
        table = jnp.where(jax.random.uniform(jax.random.fold_in(key, 1), table.shape) < 0.15, -jnp.inf, table)

    def log_psi(lm_state):
        rows = jnp.arange(lm_state.length.shape[0])
        code = lm_state.cache["code"][rows, lm_state.length - 1]  # prompt positions hold 0 (empty prefix)
        return table[code]

    return log_psi, np.asarray(table)


def test_twist_telescopes_to_zero(lm, seqs):
    log_psi, _ = table_twist(lm, jax.random.key(7))
    got = walk(ppl.Twist(log_psi, EOS), lm, seqs, PROMPT, MAX_LEN)
    assert_log_close(got, np.zeros(len(seqs)))


def test_twist_increments_are_psi_ratios(lm):
    log_psi, table = table_twist(lm, jax.random.key(8))
    twist = ppl.Twist(log_psi, EOS)
    state = lm.prefill(PROMPT, 1, MAX_LEN)
    pstate = twist.init(state)
    prefix, cur = [], 0.0
    for tok in (2, 4, 1):
        logw = np.asarray(twist.logw_next(pstate, state))[0]
        row = table[lm.code(prefix)]
        np.testing.assert_allclose(logw[tok], row[tok] - cur, atol=1e-5)
        np.testing.assert_allclose(logw[EOS], -cur, atol=1e-6)
        state = lm.extend(state, jnp.array([tok]))
        pstate = twist.update(pstate, state, jnp.array([tok]))
        cur = row[tok]
        prefix.append(tok)
        np.testing.assert_allclose(float(pstate["log_psi"][0]), cur, atol=1e-6)
    np.testing.assert_allclose(float(twist.logw_cap(pstate, state)[0]), -cur, atol=1e-6)


def test_twist_with_holes_never_nan(lm, seqs):
    log_psi, table = table_twist(lm, jax.random.key(9), hole=True)
    got = walk(ppl.Twist(log_psi, EOS), lm, seqs, PROMPT, MAX_LEN)
    want = []
    for s in seqs:  # dead iff a non-EOS token of the path has psi = -inf
        dead = any(t != EOS and np.isneginf(table[lm.code(s[:j]), t]) for j, t in enumerate(s))
        want.append(-math.inf if dead else 0.0)
    assert_log_close(got, want)
    assert np.isneginf(got).any()


def test_twist_times_scorer_keeps_the_target(lm, seqs):
    log_psi, _ = table_twist(lm, jax.random.key(10))
    potential = ppl.Twist(log_psi, EOS) * ppl.SequenceScorer(seq_score) * ppl.BannedTokens([3])
    got = walk(potential, lm, seqs, PROMPT, MAX_LEN)
    want = [-math.inf if 3 in s else seq_score_ref(s) for s in seqs]
    assert_log_close(got, want)


def test_twist_errors(lm):
    with pytest.raises(InputError, match=r"must return shape \(2, 5\)"):
        ppl.Twist(lambda s: jnp.zeros((2, 3)), EOS).init(lm.prefill(PROMPT, 2, MAX_LEN))
    with pytest.raises(InputError, match="eos_id must be a token id"):
        ppl.Twist(lambda s: s.logits, None)


def code_rows(table, lm_state):
    """log psi from a parameter table [prefix codes, V] (the table is a traced leaf)."""
    rows = jnp.arange(lm_state.length.shape[0])
    return table[lm_state.cache["code"][rows, lm_state.length - 1]]


def test_twist_parameters_are_leaves(lm, seqs):
    _, table1 = table_twist(lm, jax.random.key(11))
    _, table2 = table_twist(lm, jax.random.key(12))
    t1 = ppl.Twist(code_rows, EOS, params=jnp.asarray(table1))
    t2 = ppl.Twist(code_rows, EOS, params=jnp.asarray(table2))
    assert jax.tree_util.tree_structure(t1) == jax.tree_util.tree_structure(t2)
    assert_log_close(walk(t1, lm, seqs, PROMPT, MAX_LEN), np.zeros(len(seqs)))
    traces = []

    @jax.jit
    def first_row(twist, state):
        traces.append(1)
        return twist.init(state)["next"]

    state = lm.prefill(PROMPT, 1, MAX_LEN)
    for twist, table in ((t1, table1), (t2, table2)):
        np.testing.assert_allclose(np.asarray(first_row(twist, state))[0], table[lm.code([])], atol=1e-6)
    assert len(traces) == 1
