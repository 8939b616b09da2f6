"""benchmarks/testbed.py: confidence intervals, splits, votes and the RESULTS.md writer
(tiny inputs, no model), and the Ctrl-G comparison's grammar check and DFA padding."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def testbed():
    return load("testbed")


def test_wilson_matches_the_closed_form(testbed):
    # Wilson score interval, written out: (p + z^2/2n ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    k, n, z = 13, 20, 1.959963984540054
    p = k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = testbed.wilson(k, n)
    assert low == pytest.approx((centre - half) / (1 + z * z / n), abs=1e-9)
    assert high == pytest.approx((centre + half) / (1 + z * z / n), abs=1e-9)
    assert testbed.wilson(0, 10)[0] == 0.0 and testbed.wilson(10, 10)[1] == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_covers_the_mean(testbed):
    x = np.linspace(0.0, 1.0, 41)
    a, b = testbed.bootstrap(x), testbed.bootstrap(x)
    assert a == b  # fixed seed
    assert a[0] < x.mean() < a[1]
    # the percentile interval's half-width is near 1.96 se of the mean (0.0458 here)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert (a[1] - a[0]) / 2 == pytest.approx(1.96 * se, rel=0.15)
    assert testbed.bootstrap([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_interval_picks_wilson_for_binary_outcomes(testbed):
    mean, low, high = testbed.interval([1, 0, 1, 1])
    assert (mean, low, high) == (0.75, *testbed.wilson(3, 4))
    assert testbed.interval([0.2, 0.4], binary=False)[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="0 or 1"):
        testbed.interval([0.2, 1.0], binary=True)
    assert testbed.overlaps((0.5, 0.4, 0.6), (0.7, 0.55, 0.8))
    assert not testbed.overlaps((0.5, 0.4, 0.6), (0.8, 0.65, 0.9))


def test_vote(testbed):
    assert testbed.vote([3, 4, 4, None]) == 4
    assert testbed.vote([3, 4, 4], [0.9, 0.2, 0.2]) == 3
    assert testbed.vote([3, 4], [0.0, 0.0]) is None and testbed.vote([None]) is None
    assert testbed.vote([5, 6]) == 5  # ties: the first seen


def test_dev_and_eval_never_share_a_question(testbed):
    task = testbed.load_task("arithmetic")
    dev, ev = testbed.split(task, "dev", 50), testbed.split(task, "eval", 1000)
    assert len(dev) == 50 and not {p.question for p in dev} & {p.question for p in ev}
    assert testbed.split(task, "eval", 3) == ev[:3]
    with pytest.raises(ValueError, match="no task"):
        testbed.load_task("nonexistent")
    with pytest.raises(ValueError, match="not a problem task"):
        testbed.load_task("corpus")


def test_write_section_replaces_between_markers(testbed, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nkept\n")
    testbed.write_section("demo", "| a |\n|---|\n| 1 |", path)
    testbed.write_section("other", "second", path)
    testbed.write_section("demo", "replaced", path)
    text = path.read_text()
    assert text.startswith("# Results\n\nkept\n") and "| 1 |" not in text
    assert text.count("<!-- BEGIN demo -->") == 1 and "<!-- BEGIN demo -->\nreplaced\n<!-- END demo -->" in text
    assert text.index("replaced") < text.index("second")  # a rerun keeps the section's place


def test_write_section_from_concurrent_writers_loses_nothing(testbed, tmp_path):
    # compare_all --jobs 2 runs two comparisons that write one RESULTS.md; each write holds a lock
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "RESULTS.md"  # not there yet: the first writer creates it

    def writer(w):
        for i in range(25):
            testbed.write_section(f"w{w}-{i}", f"body {w} {i}", path)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    text = path.read_text()
    assert all(f"<!-- BEGIN w{w}-{i} -->\nbody {w} {i}\n<!-- END w{w}-{i} -->" in text
               for w in range(4) for i in range(25))


def test_keyword_sets():  # (the grammar check is tasks.sentences.is_grammatical, tested there)
    ctrlg = load("compare_ctrlg")
    from genppl.tasks import sentences

    for k in (1, 2, 3, 4):
        for keywords in ctrlg.keyword_sets(k, 5, 0):
            assert len(set(keywords)) == k and all(w in sentences.CONTENT_WORDS for w in keywords)


def test_padded_dfa_accepts_the_same_strings():
    ctrlg = load("compare_ctrlg")
    from genppl import models
    from genppl.circuits import constraint_dfa

    tok = models.CharTokenizer("$ab ", eos_id=0)
    tdfa = constraint_dfa(tok, keywords=["ab"])
    padded = ctrlg.pad_dfa(tdfa, ctrlg.padded_size(tdfa.num_states))
    assert padded.num_states == ctrlg.padded_size(tdfa.num_states) >= tdfa.num_states
    for ids in ([1, 2], [2, 1], [1, 2, 3, 2], [3]):
        a, b = tdfa.run(ids), padded.run(ids)
        assert a == b and bool(tdfa.accepting[a]) == bool(padded.accepting[b])
    assert not padded.live[tdfa.num_states:].any() and not padded.accepting[tdfa.num_states:].any()
