"""MH over any program: exact reversible transition matrices with a potential, stop strings
and at step level; the compiled kernel's ratios and one-step law against them; as an SMC move."""

import jax
import numpy as np
import pytest

from genppl import ppl
from genppl.inference import mcmc, smc
from genppl.inference.smc import conditional
from tests.helpers import assert_matches_law
from tests.inference.smc.enumeration import SOFT, TARGET, assert_unbiased_z, log_phi, random_lm, run_many

CAP, ALPHA, V = 3, 2.0, 4
STOP_TOKEN = 2  # the character "b"


@pytest.fixture(scope="module")
def lm():
    return random_lm(0, vocab=V, cap=CAP)


def reward(texts):  # a host-side reward model r(x), called through a callback: target p^alpha exp(r / beta)
    return [t.count("a") / 0.5 for t in texts]


CASES = {
    # name: (program keyword arguments, stop token or None, log phi(x))
    "potential": (dict(potential=TARGET), None, log_phi),
    "stop": (dict(potential=SOFT, stop="b"), STOP_TOKEN, lambda s: 0.7 * list(s).count(1)),
    "step": (dict(potential=TARGET, step_delimiter="a"), None, log_phi),
    "reward": (dict(potential="host"), None, lambda s: list(s).count(1) / 0.5),  # QUEST-style
}


def program_of(lm, case):
    options = dict(CASES[case][0])
    if options.get("potential") == "host":
        options["potential"] = ppl.HostScorer(reward, lm.tokenizer)
    return ppl.Program(lm, [1], CAP, alpha=ALPHA, **options)


def finished(cap, stop):
    """Every continuation the program can finish with: EOS, the stop token, or the cap."""
    out = []

    def rec(prefix):
        for v in range(V):
            s = (*prefix, v)
            if v == 0 or v == stop or len(s) == cap:
                out.append(s)
            else:
                rec(s)
    rec(())
    return out


class Exact:
    """Target and prior-proposal log-probabilities of a case, in float64 (written from the
    program's definition, not from the sampler)."""

    def __init__(self, lm, case):
        table = np.asarray(lm.table, np.float64)
        self.lm, self.table = lm, table
        _, stop, phi = CASES[case]
        self.support = finished(CAP, stop)
        self.log_gamma = np.array([ALPHA * self.log_q(s, 0) + phi(s) for s in self.support])

    def log_q(self, seq, m):
        """log p(seq_{m:} | seq_{:m}) under the LM: the prior proposal's suffix probability."""
        return sum(self.table[self.lm.code(seq[:j]), seq[j]] for j in range(m, len(seq)))

    def log_ratio(self, x, y, m, pick):
        if y not in self.support:  # a proposal that died (a banned token): rejected
            return -np.inf
        gx, gy = (self.log_gamma[self.support.index(s)] for s in (x, y))
        if not np.isfinite(gy):
            return -np.inf
        return (gy - self.log_q(y, m)) - (gx - self.log_q(x, m)) + pick(m, len(y)) - pick(m, len(x))

    def matrix(self, pick):
        k = np.zeros((len(self.support),) * 2)
        for i, x in enumerate(self.support):
            if not np.isfinite(self.log_gamma[i]):
                k[i, i] = 1.0
                continue
            for m in range(len(x)):
                pm = np.exp(pick(m, len(x)))
                if pm == 0:
                    continue
                for j, y in enumerate(self.support):
                    if len(y) > m and y[:m] == x[:m]:
                        a = min(1.0, np.exp(min(self.log_ratio(x, y, m, pick), 0.0)))
                        k[i, j] += pm * np.exp(self.log_q(y, m)) * a
            k[i, i] += 1.0 - k[i].sum()
        return k


PICKS = {"suffix": lambda m, n: -np.log(n), "independent": lambda m, n: 0.0 if m == 0 else -np.inf}
MOVES = {"suffix": mcmc.moves.suffix(), "independent": mcmc.moves.independent()}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("move", ["suffix", "independent"])
def test_exact_matrix_is_reversible(lm, case, move):
    ex = Exact(lm, case)
    k = ex.matrix(PICKS[move])
    pi = np.exp(ex.log_gamma - np.logaddexp.reduce(ex.log_gamma))
    assert np.all(k >= -1e-15) and np.abs(k.sum(1) - 1).max() < 1e-12
    flow = pi[:, None] * k
    assert np.abs(flow - flow.T).max() <= 1e-12
    assert np.abs(pi @ k - pi).max() < 1e-10
    assert np.abs(k.diagonal() - 1)[pi > 0].max() > 0.1  # the chain moves


def step_many(kernel, program, particles, keys):
    return jax.vmap(lambda k: kernel(k, particles, program))(keys)


step_jit = jax.jit(step_many, static_argnums=0)


def start(program, seq, copies=1):
    """Chains at ``seq`` (a finished continuation), by a forced replay."""
    width = program.max_new_tokens
    guided = smc.replay.Guided(ppl.proposals.prior(), jax.numpy.asarray([list(seq) + [0] * (width - len(seq))] * copies),
                               jax.numpy.full((copies,), len(seq)), jax.numpy.full((copies,), width + 1), False)
    state, _, _ = smc.replay.replay(program, program.init(copies), guided, jax.random.key(0))
    return state


@pytest.mark.parametrize("case", [pytest.param("potential", marks=pytest.mark.slow),  # ~15 s compile each
                                  pytest.param("stop", marks=pytest.mark.slow),
                                  pytest.param("reward", marks=pytest.mark.slow),
                                  pytest.param("step", marks=pytest.mark.slow)])
def test_sampler_ratios_are_the_exact_ratios(lm, case):
    """64 proposals from one state: every log r the kernel computed equals the float64 one."""
    ex, program = Exact(lm, case), program_of(lm, case)
    kernel = mcmc.program_mh(MOVES["suffix"], ppl.proposals.prior())
    x0 = next(s for s, g in zip(ex.support, ex.log_gamma) if np.isfinite(g) and len(s) == CAP)
    _, info = step_jit(kernel, program, start(program, x0), jax.random.split(jax.random.key(1), 64))
    ids, lengths = np.asarray(info.proposed_ids)[:, 0], np.asarray(info.proposed_length)[:, 0]
    got, pos = np.asarray(info.log_ratio)[:, 0], np.asarray(info.position)[:, 0]
    want = np.array([ex.log_ratio(x0, tuple(int(t) for t in ids[r, :lengths[r]]), int(pos[r]), PICKS["suffix"])
                     for r in range(64)])
    assert np.all(np.isneginf(got) == np.isneginf(want))
    finite = np.isfinite(want)
    assert finite.sum() >= 8
    np.testing.assert_allclose(np.minimum(got[finite], 0), np.minimum(want[finite], 0), atol=2e-4)


@pytest.mark.slow  # ~30 s: 3 cases x 3,000 compiled transitions
@pytest.mark.parametrize("case", list(CASES))
def test_sampler_transition_matches_exact_row(lm, case):
    """3,000 one-step transitions from one state: frequencies within 5 binomial standard
    errors of the exact row (a shift of 0.045 at p = 0.5 fails), TV within twice its floor."""
    ex, program = Exact(lm, case), program_of(lm, case)
    kernel = mcmc.program_mh(MOVES["suffix"], ppl.proposals.prior())
    k = ex.matrix(PICKS["suffix"])
    i0 = next(i for i, (s, g) in enumerate(zip(ex.support, ex.log_gamma)) if np.isfinite(g) and len(s) == CAP)
    x0 = ex.support[i0]
    out, _ = step_jit(kernel, program, start(program, x0), jax.random.split(jax.random.key(2), 3000))
    ids = np.asarray(jax.vmap(lambda p: p.lm.generated_ids(CAP))(out))[:, 0]
    lengths = np.asarray(jax.vmap(lambda p: p.lm.num_generated)(out))[:, 0]
    samples = [tuple(int(t) for t in ids[r, :lengths[r]]) for r in range(3000)]
    assert_matches_law(samples, ex.support, k[i0])


@pytest.mark.slow  # ~60 s: 400 SMC sweeps with an MH move replaying every prefix
def test_as_smc_move_keeps_log_z_unbiased(lm):
    """SMC with two MH steps per SMC step on a program with a hard and a soft potential at step
    level: E[Z_hat] = Z over 400 runs (the 3-standard-error z-test of enumeration.py)."""
    program = program_of(lm, "step")
    move = mcmc.program_move(2, mcmc.moves.suffix(), ppl.proposals.prior())
    kernel = smc.build_kernel(smc.multinomial, ppl.proposals.locally_optimal(), 0.5, move)
    log_z_hat, _, _ = run_many(program, 4, kernel=kernel)
    ex = Exact(lm, "step")
    assert_unbiased_z(log_z_hat, np.logaddexp.reduce(ex.log_gamma))


@pytest.mark.slow  # ~6 s of compilation (a stop-string program)
def test_log_target_agrees(lm):
    ex, program = Exact(lm, "stop"), program_of(lm, "stop")
    got, _ = conditional.log_target(program, [list(s) for s in ex.support])
    np.testing.assert_allclose(np.asarray(got), ex.log_gamma, atol=1e-4)
