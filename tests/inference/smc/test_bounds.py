"""The conditional-SMC upper bound and the SMC lower bound bracket the exact log Z."""

import numpy as np
import pytest

from genppl import ppl
from genppl.inference import smc

from .enumeration import TARGET, exact, random_lm

RUNS = 300


@pytest.fixture(scope="module")
def setting():
    lm = random_lm(2)
    program = ppl.Program(lm, [1], 4, potential=TARGET, alpha=2.0)
    seqs, pi, log_z, prior = exact(lm, alpha=2.0)
    refs = [list(seqs[i]) for i in np.random.default_rng(0).choice(len(seqs), RUNS, p=pi)]
    return program, seqs, pi, log_z, prior, refs


@pytest.mark.slow  # ~25 s: 2 x 300 compiled SMC and conditional-SMC sweeps
def test_bounds_bracket_exact_log_z(setting):
    """With exact references, mean upper >= log Z and mean lower <= log Z, each beyond 3
    standard errors of its own spread; and the bracket is strict here (the gap is > 5 se),
    so a conditional SMC without its reference (an ordinary SMC, gap 0) would fail."""
    program, _, _, log_z, _, refs = setting
    b = smc.log_z_bounds(program, 4, key=1, runs=RUNS, references=refs)  # locally optimal proposal
    assert b.exact_references
    assert b.lower <= log_z + 3 * b.lower_se
    assert b.upper >= log_z - 3 * b.upper_se
    assert b.gap > 5 * np.hypot(b.lower_se, b.upper_se)


@pytest.mark.slow  # ~20 s: 600 compiled sweeps with one particle
def test_one_particle_gap_is_the_exact_jeffreys_divergence(setting):
    """N = 1, target p^2, prior proposal q = p: E[lower] = log Z - KL(q||pi) and
    E[upper] = log Z + KL(pi||q) (both enumerated exactly), each within 4 standard errors
    (the divergences here are ~0.5-1 nats, about 10 standard errors each)."""
    lm = setting[0].lm
    program = ppl.Program(lm, [1], 4, alpha=2.0)
    seqs, pi, log_z, prior = exact(lm, alpha=2.0, log_phi=lambda s: 0.0)
    refs = [list(seqs[i]) for i in np.random.default_rng(1).choice(len(seqs), RUNS, p=pi)]
    b = smc.log_z_bounds(program, 1, key=2, runs=RUNS, proposal=ppl.proposals.prior(), references=refs)
    log_ratio = np.log(pi) - np.log(prior)  # log pi(x) / q(x)
    kl_q_pi, kl_pi_q = -np.sum(prior * log_ratio), np.sum(pi * log_ratio)
    assert abs(b.upper - (log_z + kl_pi_q)) < 4 * b.upper_se
    assert abs(b.lower - (log_z - kl_q_pi)) < 4 * b.lower_se
    assert b.gap > 10 * np.hypot(b.lower_se, b.upper_se)


@pytest.mark.slow  # ~25 s of compilation (three sweeps)
def test_bounds_without_references_draw_them(setting):
    program = setting[0]
    b = smc.log_z_bounds(program, 2, key=0, runs=4, reference_particles=32)
    assert not b.exact_references and np.isfinite(b.upper) and len(b.upper_runs) == 4
    assert "approximate" in repr(b)
