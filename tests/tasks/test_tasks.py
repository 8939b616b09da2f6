"""Fast checks of the task generators, answer checkers and the corpus builder."""

import random

import pytest

from genppl.tasks import arithmetic, corpus, sentences


# ---- arithmetic ------------------------------------------------------------------------
def test_generated_solutions_are_right_and_parse():
    rng = random.Random(0)
    for _ in range(2000):
        p = arithmetic.generate_problem(rng)
        assert arithmetic.extract_answer(p.solution) == p.answer
        assert arithmetic.is_correct(p.solution, p)
        assert arithmetic.check_steps(p.solution)
        assert arithmetic.step_score(p.solution) == 1.0
        ops = arithmetic.steps(p.solution)
        assert 2 <= len(ops) <= 4
        assert ops[-1][3] == p.answer
        # a chain: each step starts from the previous result, and every value stays small
        for (_, _, _, c), (a, _, _, _) in zip(ops, ops[1:]):
            assert a == c
        assert all(0 <= v <= arithmetic.MAX_VALUE for a, _, b, c in ops for v in (a, b, c))
        assert "\n" not in p.question and p.question.endswith("have now?")


def test_document_and_prompt_format():
    p = arithmetic.generate_problem(random.Random(3))
    prompt = arithmetic.prompt_text(p)
    assert prompt.startswith("Q: ") and prompt.endswith("\nA:")
    assert arithmetic.document(p) == prompt + p.solution == p.text
    assert p.solution.startswith(" ") and p.solution.endswith(f"The answer is {p.answer}.")
    # the answer is also read off a whole document
    assert arithmetic.extract_answer(arithmetic.document(p)) == p.answer


def test_extract_answer_and_is_correct():
    p = arithmetic.Problem("Q", 14, " 12 + 2 = 14. The answer is 14.")
    assert arithmetic.extract_answer(" 12 + 2 = 14. The answer is 14.") == 14
    assert arithmetic.extract_answer(" 12 + 2 = 14. The answer is 15. The answer is 14.") == 15
    assert arithmetic.extract_answer(" 12 + 2 = 14.") is None
    assert arithmetic.extract_answer("") is None
    assert arithmetic.extract_answer(" The answer is -3.") == -3
    assert not arithmetic.is_correct(" 12 + 2 = 15. The answer is 15.", p)
    assert not arithmetic.is_correct(" 12 + 2 = 14.", p)
    assert arithmetic.is_correct(" 12 + 2 = 14. The answer is 14.", p)


def test_check_steps_catches_a_corrupted_step():
    rng = random.Random(1)
    for _ in range(200):
        p = arithmetic.generate_problem(rng)
        a, op, b, c = arithmetic.steps(p.solution)[0]
        bad = p.solution.replace(f"{a} {op} {b} = {c}.", f"{a} {op} {b} = {c + 1}.", 1)
        assert bad != p.solution
        assert not arithmetic.check_steps(bad)
        assert arithmetic.step_checks(bad)[0] is False
        assert arithmetic.step_score(bad) < 1.0
    assert not arithmetic.check_steps("no equations here")
    assert arithmetic.step_score("no equations here") == 0.0
    assert arithmetic.check_steps(" 3 * 4 = 12. 12 - 5 = 7. The answer is 7.")
    assert arithmetic.check_steps(" 3 x 4 = 12.")


def test_eval_problems_fixed_and_held_out():
    a = arithmetic.eval_problems(50)
    assert a == arithmetic.eval_problems(50)
    assert arithmetic.eval_problems(10) == a[:10]
    assert arithmetic.eval_problems(50, seed=7) != a
    with pytest.raises(ValueError):
        arithmetic.eval_problems(-1)


def test_accuracy():
    problems = arithmetic.eval_problems(4)
    completions = [p.solution for p in problems[:2]] + [" The answer is 1000.", ""]
    assert arithmetic.accuracy(completions, problems) == 0.5
    with pytest.raises(ValueError):
        arithmetic.accuracy(completions[:3], problems)


# ---- sentences -------------------------------------------------------------------------
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


# ---- corpus ----------------------------------------------------------------------------
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
