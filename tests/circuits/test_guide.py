"""The HMM x DFA guide against brute-force enumeration over every continuation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from genppl import circuits
from genppl import models
from genppl import ppl
from genppl.models.interface import InputError
from tests.circuits.brute import finished_sequences, joint
from tests.compile_count import count_compiles
from tests.helpers import assert_matches_law

VOCAB, EOS, CAP = 4, 0, 4  # tokens "$abc"


def tiny_lm(seed=0):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=VOCAB, max_len=CAP, eos_id=EOS)


def accepts(tdfa, seq, min_new):
    body = [t for t in seq if t != EOS]
    if len(body) < CAP and (len(seq) == len(body) or len(body) < min_new):
        return False  # only a sequence cut at the cap may lack EOS
    return bool(tdfa.accepting[tdfa.run(body)])


def exact_psi(hmm, tdfa, prefix, v, min_new):
    """p_HMM(constraint | prefix, v) by summing over every finished continuation."""
    if v == EOS:
        return float(accepts(tdfa, (*prefix, EOS), min_new))
    head = (*prefix, v)
    total = sum(joint(hmm, seq) * accepts(tdfa, seq, min_new)
                for seq in finished_sequences(VOCAB, EOS, CAP, head))
    return total / joint(hmm, head)


@pytest.mark.parametrize("min_new, max_classes", [(0, 64), (2, 64), (2, 0)])
def test_guide_equals_enumeration_over_every_continuation(min_new, max_classes):
    # max_classes 0: the per-successor-state computation instead of the per-token-class one
    with enable_x64():
        lm = tiny_lm()
        hmm = circuits.HMM.random(jax.random.key(1), num_states=3, vocab_size=VOCAB).astype(jnp.float64)
        tdfa = circuits.constraint_dfa(lm, regex="[ab]*c[ab]*") if min_new else \
            circuits.constraint_dfa(lm, keywords=["ab"], banned=["ca"], whole_word=False)
        guide = circuits.HMMGuide(hmm, tdfa, max_new_tokens=CAP, min_new_tokens=min_new, max_classes=max_classes)
        assert guide.by_class == (max_classes > 0)
        symbols = [t for t in range(VOCAB) if t != EOS]
        update, psi_next = jax.jit(guide.update), jax.jit(guide.log_psi_next)
        extend = jax.jit(lm.extend)
        worst = 0.0
        for depth in range(CAP):
            for prefix in __import__("itertools").product(symbols, repeat=depth):
                state = lm.prefill([1], 1, CAP)
                pstate = guide.init(state)
                for t in prefix:
                    state = extend(state, jnp.array([t]))
                    pstate = update(pstate, state, jnp.array([t]))
                got = np.exp(np.asarray(psi_next(pstate, state.num_generated), np.float64)[0])
                want = np.array([exact_psi(hmm, tdfa, prefix, v, min_new) for v in range(VOCAB)])
                worst = max(worst, np.abs(got - want).max())
                # the state's psi(prefix) is the HMM's average of psi(prefix, v)
                if depth:
                    assert np.isclose(float(np.exp(pstate["log_psi"][0])),
                                      exact_psi(hmm, tdfa, prefix[:-1], prefix[-1], min_new), atol=1e-9)
        assert worst < 1e-6, worst


def hmm_as_lm(hmm):
    """A TabularLM whose next-token law is the HMM's (EOS ends a sequence, cut at CAP)."""
    table = np.zeros((models.TabularLM.num_prefixes(VOCAB, CAP), VOCAB))
    lm = models.TabularLM(jnp.asarray(table), VOCAB, EOS, CAP)
    symbols = [t for t in range(VOCAB) if t != EOS]
    for depth in range(CAP + 1):
        for prefix in __import__("itertools").product(symbols, repeat=depth):
            if depth == CAP:
                row = np.full(VOCAB, -np.inf)
                row[EOS] = 0.0
            else:
                row = np.log([joint(hmm, (*prefix, v)) / joint(hmm, prefix) for v in range(VOCAB)])
            table[lm.code(prefix)] = row
    return models.TabularLM(jnp.asarray(table, jnp.float32), VOCAB, EOS, CAP)


def test_guided_proposal_is_exact_when_the_lm_is_the_hmm():
    """p_LM = p_HMM: the optimal proposal is the target itself, every weight equals log Z."""
    hmm = circuits.HMM.random(jax.random.key(3), num_states=3, vocab_size=VOCAB)
    lm = hmm_as_lm(hmm)
    tdfa = circuits.constraint_dfa(lm, keywords=["b"], banned=["aa"], whole_word=False)
    guide = circuits.HMMGuide(hmm, tdfa, max_new_tokens=CAP)
    support, logp = lm.enumerate(CAP)
    ok = np.array([accepts(tdfa, s, 0) for s in support])
    log_z = np.logaddexp.reduce(np.where(ok, logp, -np.inf))
    pi = np.where(ok, np.exp(logp - log_z), 0.0)
    program = ppl.Program(lm, [1], CAP, potential=guide)
    texts, ids, logw, _ = circuits.constrained_sample(program, 4000, jax.random.key(4))
    np.testing.assert_allclose(logw, log_z, atol=1e-4)
    seqs = [tuple(s) for s in ids]
    keep = [k for k, p in enumerate(pi) if p > 0]
    assert_matches_law(seqs, [support[k] for k in keep], pi[keep])


@pytest.mark.slow
def test_increments_telescope_to_the_constraint_for_any_hmm():
    """With an unrelated HMM the summed weights are log p_LM(x) + log 1[x ok] - log q(x)."""
    lm = tiny_lm(5)
    hmm = circuits.HMM.random(jax.random.key(6), num_states=2, vocab_size=VOCAB)
    tdfa = circuits.constraint_dfa(lm, keywords=["c"], whole_word=False)
    guide = circuits.HMMGuide(hmm, tdfa, max_new_tokens=CAP)
    program = ppl.Program(lm, [1], CAP, potential=guide)
    texts, ids, logw, log_p = circuits.constrained_sample(program, 256, jax.random.key(7), ppl.proposals.prior())
    for seq, w in zip(ids, logw):
        want = 0.0 if accepts(tdfa, tuple(seq), 0) else -math.inf
        assert w == want or abs(w - want) < 1e-5, (seq, w)  # prior proposal: log q = log p_LM


def test_guide_rejects_mismatched_inputs():
    lm = tiny_lm()
    tdfa = circuits.constraint_dfa(lm, keywords=["a"], whole_word=False)
    with pytest.raises(InputError, match="same LM vocabulary"):
        circuits.HMMGuide(circuits.HMM.random(jax.random.key(0), 2, VOCAB + 1), tdfa, CAP)
    with pytest.raises(InputError, match="min_new_tokens"):
        circuits.HMMGuide(circuits.HMM.random(jax.random.key(0), 2, VOCAB), tdfa, CAP, min_new_tokens=CAP + 1)
    with pytest.raises(InputError, match="TokenDFA"):
        circuits.HMMGuide(circuits.HMM.random(jax.random.key(0), 2, VOCAB), "ab", CAP)


def test_tokens_the_hmm_never_emits_stay_possible_when_the_dfa_allows_them():
    """The HMM gives token 'a' no mass, yet "contains a" must stay satisfiable: psi is floored
    (positive) exactly where the DFA can still accept in the tokens left, and 0 elsewhere."""
    lm = tiny_lm()
    hmm = circuits.HMM.random(jax.random.key(2), num_states=2, vocab_size=VOCAB)
    hmm = hmm.replace(log_emit=hmm.log_emit.at[:, 1].set(-jnp.inf))  # token 1 is "a"
    tdfa = circuits.constraint_dfa(lm, keywords=["a"], whole_word=False)
    guide = circuits.HMMGuide(hmm, tdfa, max_new_tokens=CAP)
    logw_next, update, extend = jax.jit(guide.logw_next), jax.jit(guide.update), jax.jit(lm.extend)
    state = lm.prefill([1], 1, CAP)
    pstate = guide.init(state)
    row = np.asarray(logw_next(pstate, state))[0]
    assert np.isfinite(row[1]) and np.all(np.isfinite(row[2:])) and row[EOS] == -np.inf
    for _ in range(CAP - 1):  # three tokens "b": only "a" can still satisfy the constraint
        state = extend(state, jnp.array([2]))
        pstate = update(pstate, state, jnp.array([2]))
    row = np.asarray(logw_next(pstate, state))[0]
    assert np.isfinite(row[1]) and np.all(np.isneginf(np.delete(row, 1)))


def test_the_guide_is_data():
    """HMM tables, backward tables and DFA tables are leaves: guides of equal shapes (and equal
    token-class sizes, the static ``bounds``) flatten to one treedef and share one compiled
    sampler, whatever the prompt, the HMM's values or the DFA's values."""
    lm = tiny_lm()
    hmm1 = circuits.HMM.random(jax.random.key(1), num_states=3, vocab_size=VOCAB)
    hmm2 = circuits.HMM.random(jax.random.key(2), num_states=3, vocab_size=VOCAB)
    ab = circuits.constraint_dfa(lm, keywords=["a"], whole_word=False)
    ba = circuits.constraint_dfa(lm, keywords=["b"], whole_word=False)
    g1, g2 = circuits.HMMGuide(hmm1, ab, CAP), circuits.HMMGuide(hmm2, ba, CAP)
    assert g1.bounds == g2.bounds
    structure = jax.tree_util.tree_structure
    assert structure(g1) == structure(g2)
    leaves, tree = jax.tree_util.tree_flatten(g1)
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert not hasattr(back, "token_dfa") and back.bounds == g1.bounds
    np.testing.assert_array_equal(np.asarray(back.tables), np.asarray(g1.tables))

    programs = [ppl.Program(lm, [1], CAP, potential=g1), ppl.Program(lm, [2], CAP, potential=g2)]
    with count_compiles() as compiles:
        outs = [circuits.constrained_sample(p, 64, jax.random.key(3)) for p in programs]
    assert compiles.count_of("sample_loop") == 1, compiles
    for (texts, _, logw, _), letter in zip(outs, "ab"):
        assert np.isfinite(logw).all()   # the guide never leads a particle into a dead end
        assert all(letter in t for t in texts), texts
