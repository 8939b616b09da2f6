"""scripts/train_prm.py: the AUC it reports, and the step labels of its synthetic misreadings."""

import importlib.util
import types
from pathlib import Path

import numpy as np

from genppl import models
from genppl.tasks import chains

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "train_prm.py"
_spec = importlib.util.spec_from_file_location("train_prm", _PATH)
train_prm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_prm)


def test_auc_is_the_pairwise_win_rate_with_ties_as_halves():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert abs(train_prm.auc(scores, labels) - brute) < 1e-12
    assert np.isnan(train_prm.auc(scores, np.ones(60, bool)))


def test_synthetic_solutions_carry_the_gold_label_of_every_step():
    tokenizer = models.Tokenizer.from_pretrained(models.bundled_path("reasoner"))
    lm = types.SimpleNamespace(tokenizer=tokenizer, eos_id=tokenizer.eos_id)  # all synthetic() reads
    problems = chains.problems("train", 24, seed=4)
    prompts, data = train_prm.synthetic(lm, chains, problems, key=0, reference_fraction=0.3)
    assert len(prompts) == len(data) == 24
    references = sum(r["text"] == problems[r["problem"]].solution for r in data)
    assert 1 <= references < 24
    for r in data:
        p = problems[r["problem"]]
        assert lm.tokenizer.decode(r["ids"]) == r["text"]
        on_track = chains.steps_on_track(r["text"], p)
        *equations, answer = r["steps"]
        assert len(equations) == len(on_track) and answer["final"]
        assert [s["label"] for s in equations] == [float(v) for v in on_track]
        assert answer["label"] == float(r["correct"]) == float(r["text"] == p.solution)
