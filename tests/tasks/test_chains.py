"""tasks.chains: the longer problems, checked by an evaluator that reads only the question."""

import random
import re

import pytest

from genppl.tasks import arithmetic, chains, corpus

# ---- an independent evaluator: it parses the question sentence by sentence (no templates or
# tables of the generator), tracking the one count the question asks about.
_LINK = r"(?:(?:Then|Later|Next) )?"


def read_question(question):
    """(answer, equations) from the question alone."""
    sentences = [s.strip() for s in re.findall(r"[^.?]+[.?]", question)]
    first = re.fullmatch(r"(\w+) has (\d+) (\w+)\.", sentences[0])
    assert first, sentences[0]
    name, count, items = first.group(1), int(first.group(2)), first.group(3)
    assert re.fullmatch(rf"How many {items} does {name} have now\?", sentences[-1]), sentences[-1]
    equations = []
    for s in sentences[1:-1]:
        s = re.sub(rf"^{_LINK}", "", s)
        s = s[0].upper() + s[1:]
        if re.fullmatch(r"(?:He|She) (?:doubles (?:his|her) \w+|gets twice as many \w+)\.", s):
            op, n = "*", 2
        elif re.fullmatch(r"(?:He|She) (?:triples (?:his|her) \w+|gets three times as many \w+)\.", s):
            op, n = "*", 3
        elif m := re.fullmatch(r"(?:(?:He|She) (?:buys|finds|wins|gets|picks up) (\d+) more(?: \w+)?|"
                               r"\w+ gives (?:him|her) (\d+) more)\.", s):
            op, n = "+", int(m.group(1) or m.group(2))
        elif m := re.fullmatch(r"(?:(?:He|She) (?:gives (\d+) to \w+|loses (\d+)|sells (\d+) of them|"
                               r"gives away (\d+) \w+|drops (\d+))|\w+ takes (\d+) of them)\.", s):
            op, n = "-", int(next(g for g in m.groups() if g))
        else:
            raise AssertionError(f"the evaluator cannot read {s!r}")
        after = count + n if op == "+" else count - n if op == "-" else count * n
        assert 0 <= after <= 99, question
        equations.append((count, op, n, after))
        count = after
    return count, equations


def test_answers_agree_with_an_independent_reading_of_the_question():
    rng = random.Random(0)
    knobs = [{}, {"operations": 12, "max_operand": 30}, {"operations": (1, 2)}]
    for i in range(1500):
        p = chains.generate_problem(rng, **knobs[i % len(knobs)])
        answer, equations = read_question(p.question)
        assert answer == p.answer
        assert equations == chains.reference_steps(p) == arithmetic.steps(p.solution)
        assert len(equations) == p.steps
        assert chains.check(p.solution, p) and arithmetic.check_steps(p.solution)
        assert "\n" not in p.question and p.text == chains.prompt_text(p) + p.solution


def test_evaluator_is_not_fooled_by_a_misreading():
    q = "Sam has 20 apples. Ann gives him 5 more. Then he gives 3 to Ann. He doubles his apples. " \
        "How many apples does Sam have now?"
    assert read_question(q) == (44, [(20, "+", 5, 25), (25, "-", 3, 22), (22, "*", 2, 44)])


def test_splits_never_overlap_and_are_fixed():
    ev, dv = chains.problems("eval", 300), chains.problems("dev", 300)
    tr = chains.problems("train", 1000, seed=0)
    assert ev == chains.problems("eval", 300) and tr[:10] == chains.problems("train", 10, seed=0)
    ev_q, dv_q, tr_q = ({p.question for p in s} for s in (ev, dv, tr))
    assert not ev_q & dv_q and not ev_q & tr_q and not dv_q & tr_q
    held = chains.held_out_questions()
    assert len(held) == 2 * chains.HELD_OUT and not held & tr_q
    docs = corpus.build_corpus(0, 0, seed=1, n_chains=500)
    assert len(docs) == 500 and not {d.split("\nA:")[0][3:] for d in docs} & held


def test_difficulty_of_the_default_streams():
    ps = chains.problems("dev", 400)
    assert {p.steps for p in ps} == set(range(chains.OPERATIONS[0], chains.OPERATIONS[1] + 1))
    values = [v for p in ps for a, _, b, c in chains.reference_steps(p) for v in (a, b, c)]
    assert max(values) <= chains.MAX_VALUE and any(v >= 70 for v in values)
    operands = [b for p in ps for _, op, b, _ in chains.reference_steps(p) if op != "*"]
    assert max(operands) == chains.MAX_OPERAND
    assert any(op == "*" for p in ps for _, op, _, _ in chains.reference_steps(p))


def test_token_budget_fits_every_answer():
    from genppl import models

    tok = models.load().tokenizer
    longest = max(len(tok.encode(p.solution)) + 1 for p in chains.problems("train", 2000, seed=3))
    assert longest <= chains.MAX_NEW_TOKENS


def test_gold_step_labels():
    p = chains.generate_problem(random.Random(5), operations=5)
    assert chains.steps_on_track(p.solution, p) == [True] * 5
    (a, op, b, c), *_ = chains.reference_steps(p)
    wrong = f" {a} {op} {b} = {c + 1}. {c + 1} + 1 = {c + 2}. The answer is {p.answer}."
    assert chains.steps_on_track(wrong, p) == [False, False]
    assert chains.check(wrong, p) and not chains.check(" The answer is -1.", p)
    first, second = p.solution.strip().split(". ")[:2]
    assert chains.on_track(f" {first}.", p) and chains.on_track(f" {first}. {second}.", p)
    assert chains.on_track(chains.prompt_text(p) + p.solution, p) and not chains.on_track("", p)
    assert not chains.on_track(f" {first}", p)
    assert chains.accuracy([p.solution, "no"], [p, p]) == 0.5


def test_misread_solutions_depart_from_the_question_once_with_exact_labels():
    rng = random.Random(1)
    kinds = {"amount": 0, "sign": 0, "slip": 0}
    for p in chains.problems("train", 300, seed=9):
        text, k = chains.misread(p, rng)
        _, reference = read_question(p.question)  # the independent reading
        written = arithmetic.steps(text)
        assert len(written) == len(reference) and not chains.is_correct(text, p)
        assert chains.steps_on_track(text, p) == [j < k for j in range(len(reference))]
        assert written[:k] == reference[:k] and written[k] != reference[k]
        a, op, b, c = written[k]
        ra, rop, rb, _ = reference[k]
        assert a == ra
        if (op, b) == (rop, rb):
            kinds["slip"] += 1
            assert 1 <= abs(c - {"+": a + b, "-": a - b, "*": a * b}[op]) <= 3
        else:
            kinds["sign" if op != rop else "amount"] += 1
            assert arithmetic.check_steps(" ".join(f"{x} {o} {y} = {z}." for x, o, y, z in written[k:k + 1]))
            assert op == rop or {op, rop} == {"+", "-"}
        # later equations: the question's own operation and amount on the carried count
        for (x, o, y, z), (_, ro, ry, _), prev in zip(written[k + 1:], reference[k + 1:], written[k:]):
            assert (o, y) == (ro, ry) and x == prev[3] and z == {"+": x + y, "-": x - y, "*": x * y}[o]
        assert min(v for x, _, y, z in written for v in (x, y, z)) >= 0 and arithmetic.extract_answer(text) == written[-1][3]
    assert all(kinds[kind] >= 20 for kind in kinds), kinds


@pytest.mark.parametrize("bad", [{"operations": 0}, {"operations": (4, 2)}, {"operations": 13},
                                 {"max_operand": 1}, {"max_operand": 31}, {"operations": True}])
def test_bad_knobs(bad):
    with pytest.raises(ValueError):
        chains.generate_problem(0, **bad)


def test_bad_split_requests():
    for call in (lambda: chains.problems("test", 3), lambda: chains.problems("eval", -1),
                 lambda: chains.problems("dev", chains.HELD_OUT + 1),
                 lambda: chains.problems("eval", 3, operations=4)):
        with pytest.raises(ValueError):
            call()
