"""tasks.corpus: the mixed training corpus of the bundled model."""

import pytest

from genppl.tasks import arithmetic, corpus, sentences


def test_corpus_deterministic_and_mixed():
    a = corpus.build_corpus(200, 100, seed=0)
    assert a == corpus.build_corpus(200, 100, seed=0)
    assert a != corpus.build_corpus(200, 100, seed=1)
    assert len(a) == 300
    assert sum(d.startswith("Q: ") for d in a) == 200
    assert sum(d.startswith("S: ") for d in a) == 100
    assert a[:50] != sorted(a[:50], key=lambda d: d[0])  # shuffled together
    for d in a:
        if d.startswith("Q: "):
            assert arithmetic.check_steps(d) and arithmetic.extract_answer(d) is not None
        else:
            assert sentences.is_well_formed(d)
    with pytest.raises(ValueError):
        corpus.build_corpus(-1, 0)


def test_corpus_excludes_held_out_problems():
    held_out = {arithmetic.prompt_text(p) for p in arithmetic.eval_problems(200)}
    docs = corpus.build_corpus(3000, 0, seed=0)
    assert not any(d.split("\nA:")[0] + "\nA:" in held_out for d in docs)
