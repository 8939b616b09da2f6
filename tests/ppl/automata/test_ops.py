"""Intersection and complement of byte DFAs against the Boolean combination of predicates."""

import itertools

import pytest

from genppl.models.interface import InputError
from genppl.ppl.automata import compile_regex, complement, intersect, word_dfa


def test_intersect_and_complement():
    both = intersect(word_dfa("a", whole_word=False), complement(word_dfa("cc", whole_word=False)))
    for n in range(5):
        for chars in itertools.product("ac", repeat=n):
            t = "".join(chars)
            assert both.matches(t) == ("a" in t and "cc" not in t), t


def test_complement_is_exact_on_every_short_text():
    dfa = compile_regex("(ab)*c?")
    neg = complement(dfa)
    for n in range(5):
        for chars in itertools.product("abc", repeat=n):
            t = "".join(chars)
            assert neg.matches(t) != dfa.matches(t), t
    assert neg.matches("é") and complement(neg).matches("abab")


def test_intersect_of_one_and_of_three():
    dfa = compile_regex("a+")
    assert intersect(dfa) is dfa
    three = intersect(compile_regex("[ab]*"), compile_regex(".*a.*"), compile_regex(".{2}"))
    for n in range(4):
        for chars in itertools.product("abc", repeat=n):
            t = "".join(chars)
            assert three.matches(t) == (set(t) <= {"a", "b"} and "a" in t and n == 2), t


def test_bad_operands():
    with pytest.raises(InputError, match="at least one"):
        intersect()
    with pytest.raises(InputError, match="ByteDFA"):
        intersect(compile_regex("a"), "b")
    with pytest.raises(InputError, match="ByteDFA"):
        complement("a")
