"""Word and substring automata against their Python definitions."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genppl.models.interface import InputError
from genppl.ppl.automata import (avoid_strings_dfa, banned_words_dfa, encode_strings, keywords_dfa, substring_dfa,
                                 word_dfa)
from genppl.tasks import sentences

EDGE = ["dogs", "Dog ball park", "the dog,ball park.", "hotdog ball park", "park ball dog", "", "dog",
        "ball-dog park!", "the dog and the ball in the park", "dogdog ball park", "d\xf6g ball park dog"]


@settings(max_examples=100, deadline=None)
@given(strings=st.lists(st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 3 + 97 for x in b)),
                        min_size=1, max_size=4),
       texts=st.lists(st.text(alphabet="abcd", max_size=8), min_size=10, max_size=30))
def test_substring_dfa_finds_every_occurrence(strings, texts):
    dfa = substring_dfa(strings)
    for text in texts:
        data = text.encode()
        state = dfa.start
        for k, b in enumerate(data):
            state = dfa.step(state, b)
            assert dfa.accepting[state] == any(data[: k + 1].endswith(s) for s in strings)


def test_avoid_strings_dfa_rejects_every_text_with_a_string():
    dfa = avoid_strings_dfa(["ab", "cc"])
    for n in range(6):
        for chars in itertools.product("abc", repeat=n):
            t = "".join(chars)
            assert dfa.matches(t) == ("ab" not in t and "cc" not in t), t


def test_keywords_dfa_agrees_with_the_task_definition():
    rng = random.Random(0)
    texts = [" " + sentences.generate_sentence(rng) for _ in range(3000)] + EDGE
    for keywords in (["dog", "ball", "park"], ["cat"], ["the", "a"]):
        dfa = keywords_dfa(keywords)
        for t in texts:
            assert dfa.matches(t) == sentences.satisfies_keywords(t, keywords), (t, keywords)
    banned = banned_words_dfa(["cat", "dog"])
    for t in texts:
        assert banned.matches(t) == (sentences.keyword_coverage(t, ["cat", "dog"]) == 0), t


def test_substring_mode():
    dfa = keywords_dfa(["ab", "ba"], whole_word=False)
    for n in range(6):
        for chars in itertools.product("abc", repeat=n):
            t = "".join(chars)
            assert dfa.matches(t) == ("ab" in t and "ba" in t), t


def test_word_dfa_is_whole_word_and_case_insensitive():
    d = word_dfa("cat")
    texts = ("a cat.", "Cat", "cats", "the bobcat", "cat, dog")
    assert [d.matches(t) for t in texts] == [True, True, False, False, True]


def test_dfa_bad_inputs():
    with pytest.raises(InputError, match="not one string"):
        keywords_dfa("dog")
    with pytest.raises(InputError, match="ASCII letters"):
        word_dfa("new york")
    with pytest.raises(InputError, match="non-empty"):
        word_dfa("")
    with pytest.raises(InputError, match="at least one word"):
        banned_words_dfa([])


@pytest.mark.parametrize("strings, says", [
    ([], "at least one"), ([""], "empty string"), (["a", ""], "empty string"), ([3], "must be strings"),
    (7, "list of strings"),
])
def test_bad_strings_are_refused(strings, says):
    with pytest.raises(InputError, match=says):
        encode_strings(strings, "the strings")
    with pytest.raises(InputError, match=says):
        substring_dfa(strings)
