"""tasks.multistep: the harder problems, checked by an evaluator that reads only the question."""

import random
import re

import pytest

from genppl.tasks import arithmetic, corpus, multistep

# ---- an independent evaluator: it parses the question text sentence by sentence and keeps
# everyone's count in a dict; it shares no code with the generator (no templates, no tables).
_ADD_VERBS = r"(?:buys|finds|wins|gets)"
_SUB_VERBS = r"(?:loses|sells|gives away|drops)"


def read_question(question):
    """(answer, the equations that change the asked person's count) from the question alone."""
    sentences = re.findall(r"[^.?]+[.?]", question)
    first = re.fullmatch(r"(\w+) has (\d+) (\w+) and (\w+) has (\d+) \3\.", sentences[0].strip())
    assert first, sentences[0]
    count = {first.group(1): int(first.group(2)), first.group(4): int(first.group(5))}
    asked = re.fullmatch(r"How many \w+ does (\w+) have now\?", sentences[-1].strip()).group(1)
    changes = []  # (person, op, amount) in order
    for s in sentences[1:-1]:
        s = s.strip()
        if m := re.fullmatch(r"(\w+) gives (\d+) to (\w+)\.", s):
            changes += [(m.group(1), "-", int(m.group(2))), (m.group(3), "+", int(m.group(2)))]
        elif m := re.fullmatch(rf"(\w+) {_ADD_VERBS} (\d+) more(?: \w+)?\.", s):
            changes.append((m.group(1), "+", int(m.group(2))))
        elif m := re.fullmatch(rf"(\w+) {_SUB_VERBS} (\d+)(?: of them| \w+)?\.", s):
            changes.append((m.group(1), "-", int(m.group(2))))
        elif m := re.fullmatch(r"(\w+) (doubles|triples) (?:his|her) \w+\.", s):
            changes.append((m.group(1), "*", 2 if m.group(2) == "doubles" else 3))
        else:
            raise AssertionError(f"the evaluator cannot read {s!r}")
    equations = []
    for person, op, n in changes:
        before = count[person]
        count[person] = before + n if op == "+" else before - n if op == "-" else before * n
        assert 0 <= count[person] <= 99, (question, person)
        if person == asked:
            equations.append((before, op, n, count[person]))
    return count[asked], equations


def test_answers_agree_with_an_independent_reading_of_the_question():
    rng = random.Random(0)
    knobs = [{}, {"steps": 8, "distractors": 4}, {"steps": (1, 2), "distractors": 0, "max_operand": 30},
             {"multiply": False}]
    for i in range(1200):
        p = multistep.generate_problem(rng, **knobs[i % len(knobs)])
        answer, equations = read_question(p.question)
        assert answer == p.answer
        assert equations == multistep.reference_steps(p) == arithmetic.steps(p.solution)
        assert len(equations) == p.steps
        assert len(re.findall(r"[.?]", p.question)) == 2 + p.steps + p.distractors
        assert multistep.check(p.solution, p) and arithmetic.check_steps(p.solution)
        assert "\n" not in p.question


def test_evaluator_is_not_fooled_by_a_misreading():
    # the evaluator's equations differ from a solution that applies a distractor to the asked one
    q = ("Sam has 20 apples and Ann has 10 apples. Ann buys 5 more. Ann gives 3 to Sam. "
         "Sam doubles his apples. How many apples does Sam have now?")
    assert read_question(q) == (46, [(20, "+", 3, 23), (23, "*", 2, 46)])


def test_splits_never_overlap_and_are_fixed():
    ev, dv = multistep.problems("eval", 300), multistep.problems("dev", 300)
    tr = multistep.problems("train", 1000, seed=0)
    assert ev == multistep.problems("eval", 300) and tr[:10] == multistep.problems("train", 10, seed=0)
    ev_q, dv_q, tr_q = ({p.question for p in s} for s in (ev, dv, tr))
    assert not ev_q & dv_q and not ev_q & tr_q and not dv_q & tr_q
    held = multistep.held_out_questions()
    assert len(held) == 2 * multistep.HELD_OUT and not held & tr_q
    # the harder corpus excludes both held-out sets
    docs = corpus.build_corpus(0, 0, seed=1, n_multistep=500)
    assert len(docs) == 500 and not {d.split("\nA:")[0][3:] for d in docs} & held


def test_difficulty_of_the_default_streams():
    ps = multistep.problems("dev", 400)
    assert {p.steps for p in ps} == set(range(multistep.STEPS[0], multistep.STEPS[1] + 1))
    assert {p.distractors for p in ps} == {1, 2}
    values = [v for p in ps for a, _, b, c in multistep.reference_steps(p) for v in (a, b, c)]
    assert max(values) <= multistep.MAX_VALUE and any(v >= 10 for v in values)
    assert any(op == "*" for p in ps for _, op, _, _ in multistep.reference_steps(p))


def test_answer_extraction_and_gold_step_labels():
    p = multistep.generate_problem(random.Random(5), steps=3, distractors=1)
    prompt = multistep.prompt_text(p)
    assert prompt.startswith("Q: ") and prompt.endswith("\nA:") and p.text == prompt + p.solution
    assert multistep.extract_answer(p.text) == p.answer
    assert multistep.steps_on_track(p.solution, p) == [True, True, True]
    (a, op, b, c), *_ = multistep.reference_steps(p)
    wrong = f" {a} {op} {b} = {c + 1}. {c + 1} + 1 = {c + 2}. The answer is {p.answer}."
    assert multistep.steps_on_track(wrong, p) == [False, False]
    assert multistep.check(wrong, p) and not multistep.check(" The answer is -1.", p)
    # gold step labels for any step (readings and skips too): a prefix of the reference, step for step
    first, second = p.solution.strip().split(". ")[:2]
    assert multistep.on_track(f" {first}.", p) and multistep.on_track(f" {first}. {second}.", p)
    assert multistep.on_track(prompt + p.solution, p) and not multistep.on_track("", p)
    assert not multistep.on_track(f" {first}", p)  # not at the end of a step
    assert not multistep.on_track(" Nobody has 0.", p)
    assert multistep.accuracy([p.solution, "no"], [p, p]) == 0.5


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": (4, 2)}, {"distractors": 7},
                                 {"max_operand": 1}, {"steps": True}])
def test_bad_knobs(bad):
    with pytest.raises(ValueError):
        multistep.generate_problem(0, **bad)


def test_bad_split_requests():
    for call in (lambda: multistep.problems("test", 3), lambda: multistep.problems("eval", -1),
                 lambda: multistep.problems("dev", multistep.HELD_OUT + 1),
                 lambda: multistep.problems("eval", 3, steps=4)):
        with pytest.raises(ValueError):
            call()
