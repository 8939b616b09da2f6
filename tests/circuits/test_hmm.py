"""HMM queries and learning against brute-force sums over every hidden path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from genppl import circuits
from genppl import models
from genppl.models.interface import InputError
from tests.circuits.brute import finished_sequences, hidden_marginals, joint
from tests.helpers import assert_matches_law

H, V, EOS = 3, 4, 0


def random_hmm(seed, dtype=jnp.float32):
    return circuits.HMM.random(jax.random.key(seed), num_states=H, vocab_size=V).astype(dtype)


def test_log_likelihood_and_posteriors_equal_enumeration():
    with enable_x64():
        hmm = random_hmm(0, jnp.float64)
        seqs = [(1, 2, 3, 0), (3, 3), (2,), (1, 1, 2, 2)]
        tokens = np.zeros((len(seqs), 4), np.int32)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = s
        lengths = [len(s) for s in seqs]
        ll = np.asarray(circuits.log_likelihood(hmm, tokens, lengths))
        np.testing.assert_allclose(ll, [np.log(joint(hmm, s)) for s in seqs], atol=1e-9)
        post = np.asarray(circuits.posteriors(hmm, tokens, lengths))
        for i, s in enumerate(seqs):
            np.testing.assert_allclose(post[i, :len(s)], hidden_marginals(hmm, s), atol=1e-9)
            assert np.all(post[i, len(s):] == 0)
        # forward messages: log p(x_<t, z_t); summed over z they give the prefix likelihood
        msgs = np.asarray(circuits.forward_messages(hmm, tokens, lengths))
        for i, s in enumerate(seqs):
            for t in range(len(s)):
                assert np.isclose(np.logaddexp.reduce(msgs[i, t]), np.log(joint(hmm, s[:t])), atol=1e-9)


@pytest.mark.slow
def test_finished_sequences_form_a_distribution_and_sampling_matches_it():
    hmm = random_hmm(1)
    support = finished_sequences(V, EOS, 3)
    p = np.array([joint(hmm, s) for s in support])
    assert np.isclose(p.sum(), 1.0, atol=1e-5)
    tokens, lengths = circuits.sample(hmm, jax.random.key(2), n=20000, max_len=3, eos_id=EOS)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    seqs = [tuple(int(t) for t in row[:k]) for row, k in zip(tokens, lengths)]
    assert_matches_law(seqs, support, p / p.sum())


def test_em_never_lowers_the_likelihood_full_and_mini_batch():
    with enable_x64():
        teacher = random_hmm(3, jnp.float64)
        tokens, lengths = circuits.sample(teacher, jax.random.key(4), n=300, max_len=6, eos_id=EOS)
        student = random_hmm(5, jnp.float64)
        _, history = circuits.fit(student, tokens, lengths, epochs=8, pseudocount=0.0)
        assert np.all(np.diff(history) >= -1e-9), history
        assert history[-1] > history[0]


@pytest.mark.slow
def test_mini_batch_em_improves_the_likelihood():
    teacher = random_hmm(3)
    tokens, lengths = circuits.sample(teacher, jax.random.key(4), n=300, max_len=6, eos_id=EOS)
    student = random_hmm(5)
    start = float(np.mean(np.asarray(circuits.log_likelihood(student, tokens, lengths))))
    _, mb = circuits.fit(student, tokens, lengths, epochs=5, batch_size=50, step_size=0.5, key=jax.random.key(6))
    assert mb[-1] > start


def test_em_step_matches_hand_counts_for_one_sequence_of_one_state():
    hmm = circuits.HMM.random(jax.random.key(0), num_states=1, vocab_size=V)
    new, _ = circuits.em_step(hmm, [[1, 1, 2, 0]], [4])
    np.testing.assert_allclose(np.exp(new.log_emit[0]), [0.25, 0.5, 0.25, 0.0], atol=1e-6)


@pytest.mark.slow
def test_distill_from_a_tabular_lm_initialises_and_improves():
    lm = models.TabularLM.random(jax.random.key(7), vocab_size=V, max_len=4, eos_id=EOS)
    hmm, info = circuits.distill_hmm(lm, [1], num_states=4, num_samples=512, max_new_tokens=4,
                                     key=jax.random.key(8), em_epochs=4, pseudocount=1e-3)
    history = info["em_log_likelihood"]
    assert np.all(np.diff(history) >= -1e-3)
    assert history[0] >= info["init_log_likelihood"] - 1e-4
    # the HMM's law is close to the LM's: compare log-likelihoods on the samples
    seqs, logp = lm.enumerate(4)
    tokens = np.zeros((len(seqs), 4), np.int32)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
    hll = np.asarray(circuits.log_likelihood(hmm, tokens, [len(s) for s in seqs]), np.float64)
    kl = float(np.sum(np.exp(logp) * (logp - hll)))
    assert 0 <= kl + 1e-4 and kl < 0.5, kl


def test_bad_inputs_raise_input_errors():
    hmm = random_hmm(0)
    with pytest.raises(InputError, match="vocabulary"):
        circuits.log_likelihood(hmm, [[V]])
    with pytest.raises(InputError, match=r"\[n, T\]"):
        circuits.log_likelihood(hmm, [1, 2])
    with pytest.raises(InputError, match="num_states"):
        circuits.HMM.random(jax.random.key(0), 0, V)
    with pytest.raises(InputError, match="shapes"):
        circuits.HMM.from_logits(jnp.zeros(2), jnp.zeros((3, 3)), jnp.zeros((2, 4)))


def test_corrupt_hmm_files_give_one_error_naming_the_file(tmp_path):
    """Issue 11, case 9: truncated, garbage, foreign or pickled files raise one InputError."""
    good = tmp_path / "hmm.npz"
    circuits.HMM.random(jax.random.key(0), num_states=2, vocab_size=3).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"\x00garbage" * 20)
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    np.savez(tmp_path / "pickled.npz", log_init=np.array([{"a": 1}], dtype=object))
    for name in ("truncated", "garbage", "foreign", "pickled", "missing"):
        with pytest.raises(InputError, match=f"{name}.npz.*HMM"):
            circuits.HMM.load(tmp_path / f"{name}.npz")
    assert circuits.HMM.load(good).num_states == 2
