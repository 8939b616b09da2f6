"""tasks.sentences: the grammar, well-formedness and keyword checks, scoring."""

import random

import pytest

from genppl.tasks import sentences


def test_sentences_well_formed_and_in_vocabulary():
    rng = random.Random(0)
    for _ in range(2000):
        s = sentences.generate_sentence(rng)
        assert sentences.is_well_formed(s), s
        assert sentences.in_vocabulary(s)
        assert sentences.is_well_formed(sentences.document(s))
        assert sentences.is_well_formed(" " + s)  # a completion after "S:" starts with a space
        assert s == s.lower() and s.endswith(".") and s.count(".") == 1


def test_vocabulary_size_and_words():
    assert 200 <= len(sentences.VOCABULARY) <= 600
    assert all(w.isalpha() and w.islower() for w in sentences.VOCABULARY)
    assert sentences.words("S: in the park, the Dog runs.") == ["in", "the", "park", "the", "dog", "runs"]
    assert sentences.prompt_text() == "S:"


def test_ill_formed_sentences():
    assert not sentences.is_well_formed("the dog runs")              # no full stop
    assert not sentences.is_well_formed("the dog runs. the cat sits.")
    assert not sentences.is_well_formed("the xylophone runs.")       # not in the vocabulary
    assert not sentences.is_well_formed("the dog  runs.")            # double space
    assert not sentences.is_well_formed("")
    assert not sentences.is_well_formed("the dog 12 runs.")


def test_keyword_coverage():
    text = "the small dog carries a red ball to the park."
    assert sentences.keyword_coverage(text, ["dog", "ball", "park"]) == 1.0
    assert sentences.satisfies_keywords(text, ("dog", "ball", "park"))
    assert sentences.keyword_coverage(text, ["dog", "cat", "park"]) == pytest.approx(2 / 3)
    assert not sentences.satisfies_keywords(text, ["dog", "cat"])
    assert not sentences.satisfies_keywords("the hotdog runs.", ["dog"])  # whole words only
    assert sentences.keyword_coverage(text, []) == 1.0
    with pytest.raises(TypeError):
        sentences.keyword_coverage(text, "dog")


def test_keyword_sets_are_satisfiable():
    sets = sentences.keyword_sets(300, seed=0)
    assert sets == sentences.keyword_sets(300, seed=0)
    assert sets != sentences.keyword_sets(300, seed=1)
    witnesses = sentences.witness_sentences(300, seed=0)
    for keys, witness in zip(sets, witnesses):
        assert len(keys) == 3 and len(set(keys)) == 3
        assert all(k in sentences.CONTENT_WORDS for k in keys)
        assert sentences.is_well_formed(witness)
        assert sentences.satisfies_keywords(witness, keys)


def test_witness_shapes_are_grammar_shapes():
    """Witnesses are sentences the grammar itself can produce (checked by sampling a lot)."""
    rng = random.Random(0)
    produced = {sentences.generate_sentence(rng) for _ in range(200_000)}
    witnesses = sentences.witness_sentences(30, seed=0)

    def shape(s):
        return tuple("W" if w in sentences.CONTENT_WORDS else w for w in s.replace(",", " ,").split())

    shapes = {shape(s) for s in produced}
    assert all(shape(w) in shapes for w in witnesses)


def test_score():
    texts = ["the dog runs.", "the dog runs", "the cat sits in the park."]
    assert sentences.score(texts) == {"well_formed": pytest.approx(2 / 3)}
    out = sentences.score(texts, [0.5, 0.5, 0.0], keywords=("dog",))
    assert out == {"well_formed": 0.5, "keywords_satisfied": 1.0}
    assert sentences.score(texts, keywords=["park"])["keywords_satisfied"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        sentences.score(texts, [1.0])


def test_generated_sentences_are_grammatical_and_reordered_ones_are_not():
    rng = random.Random(1)
    drawn = [sentences.generate_sentence(rng) for _ in range(2000)]
    assert all(sentences.is_grammatical(s) for s in drawn)
    assert sentences.is_grammatical("S: " + drawn[0])
    # the same words in another order (vocabulary and form still fine) fail the grammar
    swapped = 0
    for s in drawn[:300]:
        ws = s[:-1].split()
        ws[0], ws[-1] = ws[-1], ws[0]
        other = " ".join(ws) + "."
        if other != s and sentences.is_well_formed(other):
            assert not sentences.is_grammatical(other), other
            swapped += 1
    assert swapped > 200
    for bad in ["the dog the runs.", "dog runs.", "the dog runs", "the dog runs to park.", "a dog runs.",
                "the dog.", "dog the carries ball.", "the dog carries a ball to the."]:
        assert not sentences.is_grammatical(bad), bad
