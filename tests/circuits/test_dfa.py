"""The guide's constraint DFA over tokens against the Python definitions (the word and
substring automata it combines are tested in tests/ppl/automata/)."""

import itertools

import pytest

from genppl import models
from genppl.circuits.dfa import constraint_dfa
from genppl.models.interface import InputError
from genppl.tasks import sentences


def test_token_level_dfa_equals_the_byte_predicate_on_every_token_sequence():
    tok = models.CharTokenizer("$ab c", eos_id=0)
    tdfa = constraint_dfa(tok, keywords=["ab"], banned=["c"], regex="[a-c ]*")

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
    with pytest.raises(InputError, match="empty"):
        constraint_dfa(models.CharTokenizer("$ab", eos_id=0))
    with pytest.raises(InputError, match="not one string"):
        constraint_dfa(models.CharTokenizer("$ab", eos_id=0), keywords="ab")
