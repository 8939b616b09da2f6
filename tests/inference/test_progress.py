"""Progress bars for compiled sweeps: smc.run's sweep runs in chunks of one compiled program,
the bar follows them, and reporting changes nothing in the output."""

from genppl.inference import progress, smc
from tests.helpers import watch_progress
from tests.inference.conftest import KERNEL


def test_progress_reaches_the_bar_and_changes_nothing(tabular_program, tabular_run, monkeypatch):
    bars = watch_progress(monkeypatch)
    again = smc.run(tabular_program, 16, key=3, kernel=KERNEL)
    (bar,) = bars
    # 6 steps in chunks of 1: the bar moved once per chunk to the end, then was closed
    assert bar.total == 6 and bar.closed and bar.n == 6 and bar.updates == [1] * 6
    quiet = smc.run(tabular_program, 16, key=3, kernel=KERNEL, progress=False)
    assert len(bars) == 1                                            # progress=False: no bar
    for other in (again, quiet):
        assert other.log_weights.tobytes() == tabular_run.log_weights.tobytes()
        assert other.token_ids == tabular_run.token_ids
        assert other.ess.tobytes() == tabular_run.ess.tobytes()
        assert (other.ancestors == tabular_run.ancestors).all()


def test_chunk_stops_cover_the_loop_in_equal_chunks():
    assert progress.chunk_stops(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert progress.chunk_stops(10) == [2, 4, 6, 8, 10]            # uneven: fewer, equal chunks
    assert progress.chunk_stops(37) == [5, 10, 15, 20, 25, 30, 35, 37]
    assert progress.chunk_stops(3) == [1, 2, 3] and progress.chunk_stops(1) == [1]
    assert progress.interactive() is False                           # pytest captures stderr
