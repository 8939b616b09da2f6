"""A small tabular program and one SMC run of it, shared by tests/inference/test_records.py
and test_progress.py (one compiled sweep)."""

import jax
import pytest

from genppl import models, ppl
from genppl.inference import smc

KERNEL = smc.build_kernel(ess_threshold=0.9)  # resamples at most steps: a branching genealogy


@pytest.fixture(scope="package")
def tabular_program():
    lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=6)
    return ppl.Program(lm, [1], max_new_tokens=6, potential=ppl.BannedTokens([2]))


@pytest.fixture(scope="package")
def tabular_run(tabular_program):
    return smc.run(tabular_program, 16, key=3, kernel=KERNEL)
