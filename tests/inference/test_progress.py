"""Progress from inside a compiled sweep: the callbacks reach the open bar, and reporting
changes nothing in the output."""

import pytest

from genppl.inference import progress, smc
from tests.inference.conftest import KERNEL


class Recorder:
    """Stands in for tqdm.auto.tqdm: records the updates."""

    made = []

    def __init__(self, total, **options):
        self.total, self.n, self.closed = total, 0, False
        Recorder.made.append(self)

    def update(self, k):
        self.n += k

    def close(self):
        self.closed = True


def test_progress_reaches_the_bar_and_changes_nothing(tabular_program, tabular_run, monkeypatch):
    import jax
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    monkeypatch.setattr(progress, "interactive", lambda: True)
    Recorder.made.clear()
    again = smc.run(tabular_program, 16, key=3, kernel=KERNEL)     # the fixture's compiled sweep
    jax.effects_barrier()
    (bar,) = Recorder.made
    # every=1 for 6 steps: the bar saw the steps the sweep took, then was closed
    assert bar.total == 6 and bar.closed and bar.n == len(tabular_run.ess)
    quiet = smc.run(tabular_program, 16, key=3, kernel=KERNEL, progress=False)
    assert len(Recorder.made) == 1                                   # progress=False: no bar
    for other in (again, quiet):
        assert other.log_weights.tobytes() == tabular_run.log_weights.tobytes()
        assert other.token_ids == tabular_run.token_ids


def test_reporting_wrapper():
    wrapped = progress.Reporting(KERNEL, every=3)
    assert wrapped == progress.Reporting(KERNEL, 3) and hash(wrapped) == hash(progress.Reporting(KERNEL, 3))
    assert wrapped.move is None
    progress.emit(3)                                   # no bar open: ignored
    assert progress.report_every(96) == 12 and progress.report_every(4) == 1
