"""tasks.arithmetic: problem generator, answer and step checks, scoring."""

import random

import pytest

from genppl.tasks import arithmetic


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


# ---- step checks as potentials, and scoring -----------------------------------------------
def test_equations_hold_and_step_reward():
    assert arithmetic.equations_hold("")                      # vacuously, before any equation
    assert arithmetic.equations_hold(" 3 * 4 = 12. 12 - 5 = ")  # a partial step is not checked yet
    assert not arithmetic.equations_hold(" 3 * 4 = 13. 13 - 5 = 8.")
    r = arithmetic.WRONG_STEP_REWARD
    assert arithmetic.step_reward(["", " 3 * 4 = 12.", " 3 * 4 = 13.", " 1 + 1 = 3. 3 + 1 = 5."]) == \
        [1.0, 1.0, r, r ** 2]


def test_score_plain_samples():
    p = arithmetic.Problem("Q", 14, " 12 + 2 = 14. The answer is 14.")
    texts = [" The answer is 14.", " The answer is 15.", " The answer is 15.", " no answer"]
    assert arithmetic.score(texts, p) == {"accuracy": 0.25, "majority_vote_accuracy": 0.0}
    assert arithmetic.score(texts[:2], p) == {"accuracy": 0.5, "majority_vote_accuracy": 1.0}  # tie: first seen
    assert arithmetic.majority_vote([" no answer"]) is None


def test_score_weighted_particles():
    p = arithmetic.Problem("Q", 14, " 12 + 2 = 14. The answer is 14.")
    texts = [" The answer is 14.", " The answer is 15.", " The answer is 15.", " The answer is 16."]
    weights = [0.7, 0.1, 0.2, 0.0]
    out = arithmetic.score(texts, p, weights)
    assert out["accuracy"] == pytest.approx(0.7)
    assert out["majority_vote_accuracy"] == 0.0             # 15 twice among the living particles
    assert out["weighted_vote_accuracy"] == 1.0             # 14 carries 0.7 of the weight
    # dead particles (weight 0) do not vote, not even in the majority vote
    assert arithmetic.majority_vote(texts + [" The answer is 16."] * 3, weights + [0.0] * 3) == 15
    assert arithmetic.weighted_vote(texts, [0.0] * 4) is None
    assert arithmetic.score(texts, p, [0.0] * 4) == {"accuracy": 0.0, "majority_vote_accuracy": 0.0,
                                                     "weighted_vote_accuracy": 0.0}
    with pytest.raises(ValueError):
        arithmetic.score(texts, p, weights[:2])
