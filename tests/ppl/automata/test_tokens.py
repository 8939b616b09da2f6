"""Token DFAs: the token table against the byte DFA, liveness by tokens, the vocabulary helper."""

import itertools
import types

import numpy as np
import pytest

from genppl import models
from genppl.models.interface import InputError
from genppl.ppl.automata import TokenDFA, TokenRunner, compile_regex, vocabulary

from .tables import check_table

TOY_VOCAB = [b"", b"a", b"b", b"ab", b"ba", b"bab", b"c", b"\xc3", b"\xa9", "é".encode(), "éa".encode(), b" ",
             b"1", b"12", b"", b"a\n"]


@pytest.mark.parametrize("pattern", [r"(ab)+c?", r"a(b|c)*", r"[^a]*", r"(é|b)a+", r".{2,3}", r"b*a b?", r"\d+"])
def test_token_table_agrees_with_byte_dfa(pattern):
    dfa = compile_regex(pattern)
    tdfa = TokenDFA.build(dfa, TOY_VOCAB, eos_id=0, vocab_size=len(TOY_VOCAB) + 3)
    assert tdfa.table.shape == (tdfa.num_states, len(TOY_VOCAB) + 3)
    assert not tdfa.allowed[:, len(TOY_VOCAB):].any(), "padding rows must be banned"
    assert not tdfa.allowed[:, 14].any(), "an empty (special) token must be banned"
    check_table(tdfa, dfa, TOY_VOCAB + [b""] * 3, 0)
    # token sequences: accepted iff their bytes match, as long as every prefix stayed allowed
    for n in range(4):
        for seq in itertools.product(range(1, len(TOY_VOCAB)), repeat=n):
            state, ok = tdfa.start, True
            for t in seq:
                ok &= bool(tdfa.allowed[state, t])
                state = int(tdfa.table[state, t])
            data = b"".join(TOY_VOCAB[t] for t in seq)
            if ok:
                assert tdfa.accepting[state] == dfa.matches(data)
            elif all(TOY_VOCAB[t] for t in seq):  # (empty tokens are banned whatever the bytes)
                assert not dfa.matches(data)


def test_liveness_is_by_tokens_not_bytes():
    # "ab" needs a token ending in "b" after "a"; this vocabulary only has "xb"
    tok = types.SimpleNamespace(token_bytes=[b"", b"a", b"xb", b"ab"], eos_id=0)
    token_bytes, vocab_size, eos_id = vocabulary(tok)
    tdfa = TokenDFA.build(compile_regex("ab"), token_bytes, eos_id, vocab_size)
    assert tdfa.allowed[tdfa.start].tolist() == [False, False, False, True]


def test_token_runner_runs_every_token_from_every_state():
    dfa = compile_regex("(ab)*")
    runner = TokenRunner(dfa, TOY_VOCAB, np.array([1, 2, 3, 5]))
    states = np.arange(dfa.num_states)
    ends, hit = runner.run(states, hit=dfa.accepting)
    for k, t in enumerate(runner.tokens):
        for s in states:
            assert ends[s, k] == dfa.run(TOY_VOCAB[t], int(s))
            prefixes = [dfa.run(TOY_VOCAB[t][:j], int(s)) for j in range(1, len(TOY_VOCAB[t]) + 1)]
            assert hit[s, k] == any(dfa.accepting[p] for p in prefixes)


def test_vocabulary_of_an_lm_or_a_tokenizer():
    tok = models.CharTokenizer("$ab", eos_id=0)
    token_bytes, vocab_size, eos_id = vocabulary(tok)
    assert token_bytes == [b"", b"a", b"b"] and vocab_size == 3 and eos_id == 0
    padded = vocabulary(types.SimpleNamespace(token_bytes=[b"", b"a"], eos_id=0, vocab_size=4))
    assert padded == ([b"", b"a", b"", b""], 4, 0)
    with pytest.raises(InputError, match="token_bytes"):
        vocabulary(object())
    with pytest.raises(InputError, match="EOS id"):
        vocabulary(types.SimpleNamespace(token_bytes=[b"a"], eos_id=None))
