"""Checks shared by the token-DFA tests (tests/ppl/automata/test_tokens.py,
tests/ppl/test_constraints.py)."""

import numpy as np

from genppl.ppl.automata import TokenDFA


def check_table(tdfa: TokenDFA, dfa, token_bytes, eos_id):
    """Every (state, token) entry against running the token's bytes through the byte DFA."""
    live_bytes = {int(b): s for s, b in enumerate(tdfa.byte_state) if tdfa.live[s]}
    assert tdfa.byte_state[tdfa.dead] == dfa.dead and not tdfa.live[tdfa.dead]
    assert not tdfa.allowed[tdfa.dead].any()
    for s in np.flatnonzero(tdfa.live):
        assert tdfa.accepting[s] == dfa.accepting[tdfa.byte_state[s]]
        assert tdfa.allowed[s, eos_id] == tdfa.accepting[s] and tdfa.table[s, eos_id] == s
        for t, data in enumerate(token_bytes):
            if t == eos_id:
                continue
            end = dfa.run(data, int(tdfa.byte_state[s]))
            want = live_bytes.get(end, tdfa.dead) if data else tdfa.dead
            assert tdfa.table[s, t] == want, (s, t, data)
            assert tdfa.allowed[s, t] == (want != tdfa.dead)
