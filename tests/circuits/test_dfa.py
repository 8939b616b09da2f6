"""Keyword and banned-word DFAs against the Python definitions, over bytes and tokens."""

import itertools
import random

import pytest

from genppl import circuits
from genppl import models
from genppl.models.interface import InputError
from genppl.tasks import sentences

EDGE = ["dogs", "Dog ball park", "the dog,ball park.", "hotdog ball park", "park ball dog", "", "dog",
        "ball-dog park!", "the dog and the ball in the park", "dogdog ball park", "d\xf6g ball park dog"]


def test_keywords_dfa_agrees_with_the_task_definition():
    rng = random.Random(0)
    texts = [" " + sentences.generate_sentence(rng) for _ in range(3000)] + EDGE
    for keywords in (["dog", "ball", "park"], ["cat"], ["the", "a"]):
        dfa = circuits.keywords_dfa(keywords)
        for t in texts:
            assert dfa.matches(t) == sentences.satisfies_keywords(t, keywords), (t, keywords)
    banned = circuits.banned_words_dfa(["cat", "dog"])
    for t in texts:
        assert banned.matches(t) == (sentences.keyword_coverage(t, ["cat", "dog"]) == 0), t


def test_substring_mode_and_combinations():
    dfa = circuits.keywords_dfa(["ab", "ba"], whole_word=False)
    for n in range(6):
        for chars in itertools.product("abc", repeat=n):
            t = "".join(chars)
            assert dfa.matches(t) == ("ab" in t and "ba" in t), t
    both = circuits.intersect(circuits.word_dfa("a", whole_word=False),
                              circuits.complement(circuits.word_dfa("cc", whole_word=False)))
    for n in range(5):
        for chars in itertools.product("ac", repeat=n):
            t = "".join(chars)
            assert both.matches(t) == ("a" in t and "cc" not in t), t


def test_token_level_dfa_equals_the_byte_predicate_on_every_token_sequence():
    tok = models.CharTokenizer("$ab c", eos_id=0)
    tdfa = circuits.constraint_dfa(tok, keywords=["ab"], banned=["c"], regex="[a-c ]*")

    def ok(text):
        return sentences.satisfies_keywords(text, ["ab"]) and "c" not in sentences.words(text)

    for n in range(5):
        for ids in itertools.product(range(1, 5), repeat=n):
            text = tok.decode(ids)
            state = tdfa.run(ids)
            assert bool(tdfa.accepting[state]) == ok(text), text
            if not tdfa.live[state]:  # dead: no extension can be accepted
                for more in itertools.product(range(1, 5), repeat=2):
                    assert not ok(text + tok.decode(more))


def test_dfa_bad_inputs():
    with pytest.raises(InputError, match="not one string"):
        circuits.keywords_dfa("dog")
    with pytest.raises(InputError, match="ASCII letters"):
        circuits.word_dfa("new york")
    with pytest.raises(InputError, match="empty"):
        circuits.constraint_dfa(models.CharTokenizer("$ab", eos_id=0))
    with pytest.raises(InputError, match="non-empty"):
        circuits.word_dfa("")
