"""Byte DFAs: minimisation merges equivalent states and byte classes, from_table, live states."""

import numpy as np

from genppl.ppl.automata import ByteDFA, compile_regex, from_table, minimize


def test_minimize_merges_equivalent_states_and_byte_classes():
    # "an even number of 'a'", written with four states where two suffice
    table = np.zeros((5, 256), np.int64)
    table[:] = 4                                   # state 4: dead
    a = ord("a")
    table[0, a], table[1, a], table[2, a], table[3, a] = 1, 2, 3, 0
    dfa = from_table(table, [True, False, True, False, False], start=0, dead=4)
    assert dfa.num_states == 3 and dfa.trans.shape[1] == 2   # even, odd, dead; 'a' or not
    for n in range(9):
        assert dfa.matches("a" * n) == (n % 2 == 0)
    assert not dfa.matches("ab")
    assert dfa.table().shape == (3, 256) and (dfa.table()[dfa.dead] == dfa.dead).all()


def test_minimize_keeps_the_language():
    dfa = compile_regex("(a|b)*abb")
    again = minimize(dfa.trans, dfa.byte_class, dfa.accepting, dfa.start, dfa.dead)
    assert again.num_states == dfa.num_states
    for text in ["abb", "aabb", "babb", "ab", "abba", ""]:
        assert again.matches(text) == dfa.matches(text)


def test_live_states_and_run():
    dfa = compile_regex("ab")
    assert isinstance(dfa, ByteDFA)
    live = dfa.live()
    assert live[dfa.start] and not live[dfa.dead]
    assert dfa.run(b"a") == dfa.step(dfa.start, ord("a"))
    assert dfa.run(b"b", dfa.run(b"a")) == dfa.run(b"ab")
