"""Fault injection: NaN or infinite logits are reported as a model fault, never as a
constraint killing particles (issue 11, case 5)."""

import pytest

from genppl import ppl
from genppl.inference import smc
from genppl.models.interface import NonFiniteLogitsError
from tests.models.faults import FaultyLM

from .enumeration import CAP, random_lm


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_smc_reports_the_step_and_the_particle(value):
    lm = FaultyLM(random_lm(30), step=2, particle=3, prompt_length=1, value=value)
    with pytest.raises(NonFiniteLogitsError, match="NaN or infinite") as err:
        smc.run(ppl.Program(lm, [1], CAP), 8, 0, ess_threshold=0.0)  # no resampling: rows stay put
    assert err.value.step == 2 and err.value.particles == (3,)


def test_every_particle_faulty_is_not_called_a_constraint_kill():
    lm = FaultyLM(random_lm(31), step=1, particle=None, prompt_length=1, value="nan")
    # (the first token may be EOS for some particles: they finish before the fault)
    for kernel in (smc.build_kernel(), smc.steer.build_kernel()):
        with pytest.raises(NonFiniteLogitsError, match="not a constraint") as err:
            smc.run(ppl.Program(lm, [1], CAP), 16, 0, kernel=kernel)
        assert err.value.step == 1
