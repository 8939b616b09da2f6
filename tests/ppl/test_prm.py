"""ppl.PRMReward / PRMFinalReward: a process reward model as a step reward, on device.

Exact checks on an enumerable model: the increments summed along every sequence equal the
stated log-weight (beta * sum_k log r(x_<=k), or beta * log r(x)), with r computed directly
by the PRM on the prompt plus each prefix; a reward model of another tokenizer is refused.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genppl import models, ppl
from genppl.inference import smc
from genppl.models.architectures import ArchConfig, build_decoder
from genppl.models.interface import InputError

from .test_scorers import assert_log_close
from .walk import walk

V, MAX_LEN, EOS = 5, 4, 0
PROMPT = [1, 3]


def tiny_prm(vocab, tokenizer, seed=0, positions=32):
    from flax import nnx
    from transformers import LlamaConfig

    config = ArchConfig.from_hf(LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=positions, tie_word_embeddings=True,
        eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS))
    prm = models.ProcessRewardModel.from_decoder(build_decoder(config, nnx.Rngs(seed)), config, tokenizer, key=seed)
    prm.head = {"w": prm.head["w"] * 150.0, "b": jnp.float32(-0.2)}
    return prm


@pytest.fixture(scope="module")
def lm():
    return models.TabularLM.random(jax.random.key(3), vocab_size=V, max_len=MAX_LEN + len(PROMPT), eos_id=EOS)


@pytest.fixture(scope="module")
def prm(lm):
    return tiny_prm(V, lm.tokenizer)


@pytest.fixture(scope="module")
def seqs(lm):
    return lm.enumerate(MAX_LEN)[0]  # a few hundred sequences: every path the walk can take


def log_r(prm, rows):
    """log r of each token row (prompt + prefix), computed directly."""
    width = max(map(len, rows))
    tokens = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = r
    return np.log(np.asarray(prm.rewards(tokens, np.array([len(r) for r in rows])), np.float64))


def content(seq):
    return [t for t in seq if t != EOS]


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_step_reward_adds_beta_log_r_of_every_step(lm, prm, seqs, beta):
    got = walk(ppl.PRMReward(prm, lm.tokenizer, beta=beta), lm, seqs, PROMPT, MAX_LEN, every_token_boundary=True)
    # every token ends a step; a trailing EOS adds no step; an empty continuation is one step
    prefixes = [[PROMPT + content(s)[:k] for k in range(1, len(content(s)) + 1)] or [PROMPT] for s in seqs]
    flat = log_r(prm, [p for ps in prefixes for p in ps])
    want, i = [], 0
    for ps in prefixes:
        want.append(beta * flat[i:i + len(ps)].sum())
        i += len(ps)
    assert np.ptp(want) > 0.5  # the rewards differ between sequences
    assert_log_close(got, want, tol=1e-4)


def test_final_reward_telescopes_to_beta_log_r_of_the_text(lm, prm, seqs):
    for every_token in (False, True):
        got = walk(ppl.PRMFinalReward(prm, lm.tokenizer, beta=2.0), lm, seqs, PROMPT, MAX_LEN,
                   every_token_boundary=every_token)
        want = 2.0 * log_r(prm, [PROMPT + content(s) for s in seqs])
        assert_log_close(got, want, tol=1e-4)


def test_same_compiled_sweep_for_other_weights_and_a_run(lm, prm):
    """PRM weights are data: two PRMs of one shape give equal treedefs (one compiled sweep);
    the reward particle filter takes a PRM and returns finite log-weights and log Z."""
    other = tiny_prm(V, lm.tokenizer, seed=1)
    a, b = ppl.PRMReward(prm, lm.tokenizer), ppl.PRMReward(other, lm.tokenizer)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    result = smc.reward_particle_filter(lm, PROMPT, prm, 8, key=0, max_new_tokens=MAX_LEN, step_delimiter="b")
    assert math.isfinite(result.log_z) and np.isfinite(result.log_weights).any()


def test_bad_input(lm, prm):
    with pytest.raises(InputError, match="ProcessRewardModel"):
        ppl.PRMReward(lambda texts: [1.0] * len(texts), lm.tokenizer)
    for beta in (0.0, -1.0, True, math.inf, "2"):
        with pytest.raises(InputError, match="beta"):
            ppl.PRMReward(prm, lm.tokenizer, beta=beta)
    with pytest.raises(InputError, match="eos_id"):
        ppl.PRMFinalReward(prm, object())
    other = models.TabularLM.random(jax.random.key(0), vocab_size=4, max_len=4, eos_id=EOS)
    with pytest.raises(InputError, match="another tokenizer"):
        ppl.PRMReward(prm, other.tokenizer)
    # a program whose buffer is longer than the PRM's positions: a clear error when it runs
    short = tiny_prm(V, lm.tokenizer, positions=4)
    program = ppl.Program(lm, PROMPT, MAX_LEN, potential=ppl.PRMReward(short, lm.tokenizer))
    with pytest.raises(InputError, match="lower max_new_tokens"):
        smc.run(program, 2, key=0)


@pytest.mark.slow  # compiles four kernels (about 20 s on a quiet 2-core CPU)
def test_every_kernel_takes_the_prm(lm, prm):
    """Best-of-N by the PRM picks the candidate of highest PRM score; beam search, MH chains and
    SMC accept a program whose potential is the PRM."""
    from genppl.inference import mcmc, search

    final = ppl.Program(lm, PROMPT, MAX_LEN, potential=ppl.PRMFinalReward(prm, lm.tokenizer))
    best = search.best_of_n(final, 8, key=0, proposal=ppl.proposals.prior())
    direct = log_r(prm, [PROMPT + content(c) for c in best.token_ids])
    np.testing.assert_allclose(best.scores, direct, atol=1e-4)  # the score is log r(x)
    assert best.selected == int(np.argmax(direct))
    step = ppl.Program(lm, PROMPT, MAX_LEN, potential=ppl.PRMReward(prm, lm.tokenizer), step_delimiter="b")
    beams = search.beam_search(step, 4, key=0, expansions=2)
    assert beams.selected is not None
    chains = mcmc.run_chains(final, mcmc.program_mh(), 2, 4, key=0)
    assert len(chains.samples(burn_in=2)) == 4
    result = smc.run(step, 8, key=1)
    assert np.isfinite(result.log_z)
