"""Progress bars for compiled sweeps: smc.run's sweep runs in chunks of one compiled program,
the bar follows them, and reporting changes nothing in the output."""

import pytest

from genppl.inference import progress, smc
from genppl.models import progress as core
from tests.helpers import watch_progress
from tests.inference.conftest import KERNEL


def test_progress_reaches_the_bar_and_changes_nothing(tabular_program, tabular_run, monkeypatch):
    bars = watch_progress(monkeypatch)
    monkeypatch.setattr(core, "CHUNKS", 3)
    again = smc.run(tabular_program, 16, key=3, kernel=KERNEL)
    (bar,) = bars
    # 6 steps in 3 chunks of 2: the bar moved once per chunk to the end, then was closed
    assert bar.total == 6 and bar.closed and bar.n == 6 and bar.updates == [2, 2, 2]
    quiet = smc.run(tabular_program, 16, key=3, kernel=KERNEL, progress=False)
    assert len(bars) == 1                                            # progress=False: no bar
    for other in (again, quiet):
        assert other.log_weights.tobytes() == tabular_run.log_weights.tobytes()
        assert other.token_ids == tabular_run.token_ids
        assert other.ess.tobytes() == tabular_run.ess.tobytes()
        assert (other.ancestors == tabular_run.ancestors).all()


def test_chunk_stops_cover_the_loop_in_equal_chunks():
    assert progress.CHUNKS == 4 and progress.chunk_stops(64) == [16, 32, 48, 64]
    assert progress.chunk_stops(64, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert progress.chunk_stops(10, 8) == [2, 4, 6, 8, 10]         # uneven: fewer, equal chunks
    assert progress.chunk_stops(37) == [10, 20, 30, 37]
    assert progress.chunk_stops(3) == [1, 2, 3] and progress.chunk_stops(1) == [1]
    assert progress.interactive() is False                           # pytest captures stderr


@pytest.mark.slow  # a second program and its chunked sweep (~10 s); the default test covers equal chunks
def test_a_last_shorter_chunk_is_padded_with_idle_steps(monkeypatch):
    """5 steps in chunks of 2: the last chunk's third step is padding, idle and dropped."""
    import jax

    from genppl import models, ppl

    lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=6)
    program = ppl.Program(lm, [1], max_new_tokens=5, potential=ppl.BannedTokens([2]))
    quiet = smc.run(program, 16, key=3, kernel=KERNEL, progress=False)
    bars = watch_progress(monkeypatch)
    monkeypatch.setattr(core, "CHUNKS", 3)
    shown = smc.run(program, 16, key=3, kernel=KERNEL)
    assert bars[0].updates == [2, 2, 1] and len(shown.ess) == 5
    assert shown.log_weights.tobytes() == quiet.log_weights.tobytes() and shown.token_ids == quiet.token_ids
    assert shown.ess.tobytes() == quiet.ess.tobytes() and (shown.ancestors == quiet.ancestors).all()
    assert shown.step_log_weights.tobytes() == quiet.step_log_weights.tobytes()
