"""ppl.Grammar: the bounded language against lark's own parser, SMC against exact enumeration
(unbiased log Z, weighted particles approaching p(x | x in L)), composition with other
potentials and stop strings, bad grammars, and the empty language."""

import itertools

import jax
import lark
import numpy as np
import pytest

from genppl import models, ppl
from genppl.inference import smc
from genppl.models.interface import InputError
from tests.inference.smc.enumeration import assert_unbiased_measure, assert_unbiased_z, run_many

PARENS = 'start: ("(" start ")")*'
EXPR = """
?start: sum
?sum: atom | sum "+" atom
?atom: "1" | "(" sum ")"
"""
CAP, EOS = 6, 0


def in_lark(grammar: str, text: str) -> bool:
    """Membership by lark's Earley parser: the independent oracle."""
    try:
        lark.Lark(grammar, start="start", parser="earley", lexer="dynamic").parse(text)
        return True
    except lark.exceptions.LarkError:
        return False


@pytest.mark.parametrize("grammar, alphabet, depth", [(PARENS, "()", 3), (EXPR, "1+()", 3)])
def test_bounded_language_equals_lark_within_the_depth(grammar, alphabet, depth):
    """Every string of up to 6 characters: in the DFA iff lark parses it (nesting <= 3 is all 6
    characters allow), and strings nesting deeper than the bound are cut off."""
    g = ppl.Grammar(grammar, models.CharTokenizer("$" + alphabet, eos_id=0), max_depth=depth)
    parser = lark.Lark(grammar, start="start", parser="earley", lexer="dynamic")
    for k in range(7):
        for chars in itertools.product(alphabet, repeat=k):
            text = "".join(chars)
            try:
                parser.parse(text)
                ok = True
            except lark.exceptions.LarkError:
                ok = False
            assert g.matches(text) == ok, text
    assert not g.matches("(" * (depth + 1) + ("1" if "1" in alphabet else "") + ")" * (depth + 1))
    assert ppl.Grammar(grammar, models.CharTokenizer("$" + alphabet, eos_id=0), max_depth=depth + 1).matches(
        "(" * (depth + 1) + ("1" if "1" in alphabet else "") + ")" * (depth + 1))


def test_trailing_self_reference_loops_without_a_depth_cost():
    g = ppl.Grammar('start: "(" start ")" start |', models.CharTokenizer("$()", eos_id=0), max_depth=2)
    assert g.matches("()" * 30) and g.matches("(())()") and not g.matches("((()))")


def test_ignore_terminals_and_imports():
    grammar = EXPR.replace('"1"', "INT") + "%import common.INT\n%import common.WS_INLINE\n%ignore WS_INLINE\n"
    g = ppl.Grammar(grammar, models.CharTokenizer("$0123456789+() ", eos_id=0), max_depth=4)
    assert g.matches(" (12 + 3)+ 4 ") and not g.matches("12 3") and not g.matches("(1+)")


@pytest.mark.parametrize("text, fix", [
    ('start: "a" (', "line 1 column 13"),
    ("start: b", "Rule 'b' used but not defined"),
    ("", "non-empty string"),
    ('start: /a(?=b)/', "terminal __ANON_0"),
    ('start: /ab/i', "regex flags"),
])
def test_invalid_grammars_say_where(text, fix):
    with pytest.raises(InputError, match=fix):
        ppl.Grammar(text, models.CharTokenizer("$ab", eos_id=0))


def test_bad_depth():
    with pytest.raises(InputError, match="max_depth"):
        ppl.Grammar(PARENS, models.CharTokenizer("$()", eos_id=0), max_depth=-1)


# ---- SMC against exact enumeration ------------------------------------------------------------
def _lm(seed):
    return models.TabularLM.random(jax.random.key(seed), vocab_size=5, max_len=CAP, eos_id=EOS, eos_boost=0.5)


def _exact(lm, alphabet, grammar):
    """(support, pi, log Z, LM probabilities) for phi(x) = 1[text(x) in L], lark as the oracle."""
    seqs, logp = lm.enumerate(CAP)
    keep = [in_lark(grammar, "".join(alphabet[t] for t in s if t != EOS)) for s in seqs]
    logp = np.asarray(logp)
    log_z = np.logaddexp.reduce(np.where(keep, logp, -np.inf))
    pi = np.where(keep, np.exp(logp - log_z), 0.0)
    return seqs, pi, log_z, np.exp(logp)


@pytest.mark.slow  # 400 vmapped sweeps and a 4^6 enumeration with lark parses: ~30 s
@pytest.mark.parametrize("grammar, alphabet, seed", [(PARENS, "$()xy", 3), (EXPR, "$1+()", 4)])
def test_smc_is_exact_for_a_grammar(grammar, alphabet, seed):
    """Locally optimal SMC with the grammar: E[Z_hat] = Z and the weighted particle measure is
    unbiased for p(x | x in L) (400 runs x 8 particles: a relative bias of Z_hat of about 5 %
    is 3 standard errors), and the pooled weighted histogram's TV distance to the exact
    posterior falls within its noise floor."""
    lm = _lm(seed)
    tok = models.CharTokenizer(alphabet, eos_id=EOS)
    g = ppl.Grammar(grammar, tok, max_depth=3)
    program = ppl.Program(lm, [1], CAP, potential=g)
    support, pi, log_z, prior = _exact(lm, alphabet, grammar)
    log_z_hat, logw, seqs = run_many(program, 8)
    assert_unbiased_z(log_z_hat, log_z)
    keep = pi > 0
    sup = [s for s, k in zip(support, keep) if k]
    assert_unbiased_measure(logw, seqs, sup, pi[keep], log_z, prior[keep])
    assert tv_to_exact(logw, seqs, sup, pi[keep], log_z) < 3 * tv_floor(pi[keep], len(seqs))


def tv_to_exact(logw, seqs, support, pi, log_z):
    """TV distance between the exact posterior and the pooled particle measure of R runs,
    sum_r sum_i w_ri 1{x_ri = x} normalised (consistent as R grows; unbiased before
    normalising)."""
    index = {s: k for k, s in enumerate(support)}
    hist = np.zeros(len(support))
    w = np.exp(logw - log_z)
    for r in range(len(seqs)):
        for i, s in enumerate(seqs[r]):
            if w[r, i] > 0:
                hist[index[s]] += w[r, i]
    return 0.5 * np.abs(hist / hist.sum() - pi).sum()


def tv_floor(pi, samples):
    """Expected TV of the empirical law of ``samples`` i.i.d. draws from pi (mean absolute
    binomial deviations): sum sqrt(2 p (1-p) / (pi_const samples)) / 2. With one effective
    draw per run (8 weighted particles are worth at least one), 3x this floor detects a
    sampler whose law is off by a few times its noise."""
    return np.sum(np.sqrt(2 * pi * (1 - pi) / (np.pi * samples))) / 2


@pytest.fixture(scope="module")
def parens_program():
    lm = _lm(3)
    return lm, ppl.Grammar(PARENS, models.CharTokenizer("$()xy", eos_id=EOS), max_depth=3)


def test_composes_with_other_potentials(parens_program):
    """Grammar * BannedStrings under SMC: every finished particle is in the grammar's language
    (lark parses it) and avoids '()()'."""
    lm, g = parens_program
    tok = models.CharTokenizer("$()xy", eos_id=EOS)
    both = g * ppl.BannedStrings(["()()"], tok)
    result = smc.run(ppl.Program(lm, [1], CAP, potential=both), 32, 1)
    texts = ["".join("$()xy"[t] for t in ids if t != EOS) for ids in result.token_ids]
    assert np.isfinite(result.log_z)
    assert all(in_lark(PARENS, t) and "()()" not in t for t, w in zip(texts, result.weights) if w > 0)


@pytest.mark.slow  # compiles one more sweep (~7 s)
def test_empty_language_gives_log_z_minus_inf():
    """A grammar whose language is empty (the only rule needs itself forever) is a result."""
    lm = _lm(5)
    g = ppl.Grammar('start: "(" start ")"', models.CharTokenizer("$()xy", eos_id=EOS), max_depth=3)
    result = smc.run(ppl.Program(lm, [1], CAP, potential=g), 8, 0)
    assert result.log_z == -np.inf and result.message is not None


# ---- composition with MH, the HMM guide and stop strings -----------------------------------------
@pytest.mark.slow  # compiles two MH programs (~25 s)
def test_mh_with_the_grammar_as_log_potential(parens_program):
    """power_mcmc(alpha=1) with log phi = Grammar.log_potential: every chain with a finite
    target holds a string of the language (lark parses it), and the MH steps move chains into
    the language (more of them than plain blockwise sampling, num_mcmc=0, ends with)."""
    from genppl.inference import mcmc

    lm, g = parens_program
    runs = {k: mcmc.power_mcmc(lm, [1], 64, CAP, 0, alpha=1.0, block_size=2, num_mcmc=k,
                               log_potential=g.log_potential) for k in (0, 8)}
    inside = {k: np.isfinite(out.log_targets) for k, out in runs.items()}
    assert inside[8].mean() > inside[0].mean() + 0.1, {k: v.mean() for k, v in inside.items()}
    for ids, ok in zip(runs[8].token_ids, inside[8]):
        if ok:
            assert in_lark(PARENS, "".join("$()xy"[t] for t in ids[:CAP] if t != EOS))


def test_log_potential_is_the_indicator(parens_program):
    _, g = parens_program
    seqs = [[1, 2, 0, 0], [1, 1, 2, 2], [1, 2, 2, 0], [3, 0, 0, 0], [0, 0, 0, 0]]
    num = np.array([3, 4, 3, 2, 1])
    out = np.asarray(g.log_potential(np.array(seqs), num, np.array([True, False, True, True, True])))
    assert list(np.isfinite(out)) == [True, True, False, False, True]


@pytest.mark.slow  # an HMM guide's tables and one SMC compile (~10 s)
def test_the_hmm_guide_runs_on_a_grammar_dfa(parens_program):
    """circuits.HMMGuide over the grammar's token DFA: an exact twist, so every weighted
    particle is in the language and log Z is finite."""
    from genppl import circuits

    lm, g = parens_program
    hmm = circuits.HMM.random(jax.random.key(1), num_states=4, vocab_size=5)
    guide = circuits.HMMGuide(hmm, g.token_dfa, max_new_tokens=CAP)
    result = smc.run(ppl.Program(lm, [1], CAP, potential=guide), 32, 0)
    assert np.isfinite(result.log_z)
    for ids, w in zip(result.token_ids, result.weights):
        if w > 0:
            assert in_lark(PARENS, "".join("$()xy"[t] for t in ids if t != EOS))


@pytest.mark.slow  # one more SMC compile (~7 s)
def test_stop_strings_end_particles_inside_the_language(parens_program):
    """With stop="()", a particle finishes at the first "()" and must then be in the language:
    the weighted texts are exactly "()" or balanced strings without "()"... which is only "()"."""
    lm, g = parens_program
    tok = models.CharTokenizer("$()xy", eos_id=EOS)
    program = ppl.Program(lm, [1], CAP, potential=g, stop=ppl.StopStrings(["()"], tok))
    result = smc.run(program, 32, 0)
    texts = {"".join("$()xy"[t] for t in ids if t != EOS) for ids, w in zip(result.token_ids, result.weights) if w > 0}
    assert np.isfinite(result.log_z) and texts <= {"", "()"}
