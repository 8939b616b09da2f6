"""Shared helpers for statistical tests against exact enumeration."""

import collections

import numpy as np


def empirical(sequences, support):
    """Empirical frequencies of ``sequences`` over the list ``support``."""
    counts = collections.Counter(sequences)
    total = len(sequences)
    assert sum(counts[s] for s in support) == total, "a sample fell outside the enumerated support"
    return np.array([counts[s] / total for s in support])


def tv_noise_floor(p, num_samples):
    """Expected total-variation distance of an R-sample histogram from p (normal approx.)."""
    p = np.asarray(p)
    return float(np.sum(np.sqrt(2 * p * (1 - p) / (np.pi * num_samples))) / 2)


def assert_matches_law(sequences, support, p, z=5.0):
    """Each frequency within z binomial standard errors, and TV within twice its noise floor.

    Outcomes expected fewer than 5 times in the R draws are pooled into one bin first: for
    them the normal approximation fails (one draw of an outcome with R p = 0.04 is already
    5 standard errors out, under the exact law itself). The z-check still sees every common
    outcome; the TV check sees every outcome."""
    freq = empirical(sequences, support)
    p = np.asarray(p)
    r = len(sequences)
    tv = 0.5 * np.abs(freq - p).sum()
    floor = tv_noise_floor(p, r)
    rare = r * p < 5
    if rare.any():
        freq = np.append(freq[~rare], freq[rare].sum())
        p = np.append(p[~rare], p[rare].sum())
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / r)
    worst = np.max(np.abs(freq - p) / se)
    assert worst < z, f"a frequency is {worst:.1f} standard errors from its exact probability"
    assert tv < 2 * floor, f"TV {tv:.4f} exceeds twice the noise floor {floor:.4f}"


class RecordingBar:
    """Stands in for tqdm.auto.tqdm in progress tests: records the updates (``made``: every
    bar opened since :func:`watch_progress`)."""

    made: list = []

    def __init__(self, total, **options):
        self.total, self.n, self.closed, self.updates = total, 0, False, []
        self.options = options
        RecordingBar.made.append(self)

    def update(self, k):
        self.n += k
        self.updates.append(k)

    def close(self):
        self.closed = True


def watch_progress(monkeypatch) -> list:
    """Pretend someone watches (a terminal): bars open, as :class:`RecordingBar`s; returns the
    list of bars made."""
    import tqdm.auto

    from genppl.models import progress

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    monkeypatch.setattr(progress, "interactive", lambda: True)
    RecordingBar.made.clear()
    return RecordingBar.made
