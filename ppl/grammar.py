"""Context-free grammars (Lark EBNF) as exact token-level potentials: :class:`Grammar`.

The grammar text is parsed by the ``lark`` package (rules, ``|``, ``*``, ``+``, ``?``,
``[...]``, string and regex terminals, ``%import common.X``, ``%ignore``); lark turns the
EBNF into plain rules and resolves the terminals to regular expressions. We lower the rules
to one regular language and compile it to a byte DFA, then to token tables
(:class:`~genppl.ppl.automata.TokenDFA`) that run inside the compiled sweep like any
:class:`~genppl.ppl.constraints.DFAPotential`.

**The language.** A string is in the language when it is the concatenation ``w_1 ... w_k`` of
strings of terminals ``T_1 ... T_k`` derivable from the start rule, with any number of
``%ignore`` terminals before each ``w_i`` and at the end (scannerless semantics: no
longest-match lexer decides where a terminal ends, so ``NUMBER NUMBER`` also accepts ``12``
split as ``1`` ``2``). Terminal regexes use :mod:`genppl.ppl.automata.syntax` (``\\d \\w \\s``
ASCII-only unless ``unicode=True``).

**The depth bound.** A context-free language is not regular in general; we make it so by
bounding nesting: a rule may be open inside itself at most ``max_depth`` times (for
``expr: "(" expr ")" | NUMBER`` that is at most ``max_depth`` nested parentheses). A rule's
own leading and trailing self-references cost nothing and are exact at any depth:
``a: a y | x a | b`` is the language ``x* b y*`` (lark writes ``x*`` and ``x+`` this way,
and ``s: "(" s ")" s |`` loops over its trailing ``s``); only the other occurrences nest one
level deeper. The potential is exact for the bounded language ``L_D``: every string
derivable with nesting at most ``D``. Past the bound a prefix that would need deeper nesting
gets weight 0, so ``L_D`` is a subset of the grammar's language that grows with ``D``; with
``D`` at least the nesting any string within the generation horizon can reach (a prefix of
``T`` bytes opens at most ``T`` brackets, and typically a rule must consume at least two
bytes per level), the potential is exact over the whole horizon. Every rule is compiled to a
minimal DFA once per depth context and embedded where it is used, so compilation is
polynomial in the grammar's size and ``D``; the final DFA's size is what bounds ``D`` in
practice (``max_states``).

Per token v and DFA state s, log phi_next(s, v) = 0 if some token sequence completes the
text after v into the language, -inf otherwise; EOS (and a cut at the cap or a stop string)
is allowed iff the text is in the language. An empty language is not an error: every
particle dies and log Z = -inf.

>>> from genppl import models
>>> tok = models.CharTokenizer("$()", eos_id=0)
>>> g = Grammar('start: ("(" start ")")*', tok, max_depth=3)
>>> [g.matches(t) for t in ("", "()()", "(())", "(()", "((()))", "(((())))")]
[True, True, True, False, True, False]
"""

from __future__ import annotations

from genppl.models.interface import InputError

from .automata import TokenDFA, vocabulary
from .automata.syntax import parse as parse_regex
from .automata.trees import EMPTY, EPSILON, alt, cat, chars, compile_tree, embed, literal, rep
from .constraints import DFAPotential

__all__ = ["Grammar", "eos_ids_of", "grammar_dfa", "grammar_tree"]


def _lark(text: str, start: str):
    try:
        import lark
    except ImportError:  # pragma: no cover - a runtime dependency
        raise InputError("ppl.Grammar needs the lark package: pip install lark") from None
    if not isinstance(text, str) or not text.strip():
        raise InputError("the grammar must be a non-empty string of Lark EBNF, e.g. 'start: \"a\"+'")
    try:
        return lark.Lark(text, start=start, parser="earley", lexer="dynamic")
    except lark.exceptions.UnexpectedInput as e:
        raise InputError(f"invalid grammar at line {e.line} column {e.column}: {e}".strip()) from None
    except lark.exceptions.LarkError as e:
        raise InputError(f"invalid grammar: {e}".strip()) from None


def _terminal_tree(term, unicode: bool):
    pattern = term.pattern
    flags = set(pattern.flags)
    if type(pattern).__name__ == "PatternStr":
        if flags - {"i"}:
            raise InputError(f"terminal {term.name}: flags {sorted(flags)} are not supported (only i on strings)")
        if "i" in flags:
            return cat(*(chars({(ord(x), ord(x)) for x in (c, c.lower(), c.upper()) if len(x) == 1})
                         for c in pattern.value))
        return literal(pattern.value)
    if flags:
        raise InputError(f"terminal {term.name} /{pattern.value}/: regex flags {sorted(flags)} are not supported; "
                         "spell the cases out in the regex, e.g. [aA]")
    try:
        return parse_regex(pattern.value, unicode)
    except InputError as e:
        raise InputError(f"terminal {term.name}: {e}") from None


def grammar_tree(text: str, start: str = "start", max_depth: int = 8, unicode: bool = False,
                 max_states: int = 10_000):
    """The syntax tree (see :mod:`genppl.ppl.automata.trees`) of a Lark grammar's language
    bounded to recursion depth ``max_depth`` (module docstring). Every rule is compiled to a
    minimal byte DFA once per depth context and embedded where it is used, so the work is
    polynomial in the grammar's size and ``max_depth``."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise InputError(f"max_depth must be a non-negative integer, got {max_depth!r}")
    parser = _lark(text, start)
    rules: dict[str, list[list[str]]] = {}
    for r in parser.rules:
        rules.setdefault(r.origin.name, []).append([s.name for s in r.expansion])
    terminals = {t.name: t for t in parser.terminals}
    ignore = [_terminal_tree(terminals[name], unicode) for name in parser.ignore_tokens]
    skip = rep(alt(*ignore), 0, None) if ignore else EPSILON
    term_trees: dict[str, tuple] = {}

    def terminal(name):
        if name not in term_trees:
            term_trees[name] = cat(skip, _terminal_tree(terminals[name], unicode))
        return term_trees[name]

    memo: dict = {}

    def expand(name, depth):
        """Tree of rule ``name`` when ``depth`` maps each open rule to how often it is open."""
        if name in terminals:
            return terminal(name)
        opened = depth.get(name, 0)
        if opened > max_depth:
            return EMPTY
        key = (name, tuple(sorted(depth.items())))
        if key in memo:
            return memo[key]
        inner = dict(depth)
        inner[name] = opened + 1

        def seq(symbols):
            return cat(*(expand(s, inner) for s in symbols)) if symbols else EPSILON

        alts = rules[name]
        head = [a[1:] for a in alts if a and a[0] == name]  # a: a y  (left recursion)
        tail = [a[:-1] for a in alts if a and a[-1] == name and a[0] != name]  # a: x a
        base = [a for a in alts if not a or (a[0] != name and a[-1] != name)]
        # a: a y | x a | b  ==  x* b y*  (exact; other occurrences of a nest one level deeper)
        tree = cat(rep(alt(*map(seq, tail)), 0, None), alt(*map(seq, base)), rep(alt(*map(seq, head)), 0, None))
        tree = embed(compile_tree(tree, f"rule {name!r} of the grammar", max_states))
        memo[key] = tree
        return tree

    return cat(expand(start, {}), skip)


def grammar_dfa(text: str, start: str = "start", max_depth: int = 8, unicode: bool = False,
                max_states: int = 10_000):
    """The minimal byte DFA of the bounded language of a Lark grammar (see :class:`Grammar`)."""
    try:
        tree = grammar_tree(text, start, max_depth, unicode, max_states)
        return compile_tree(tree, f"grammar (max_depth={max_depth})", max_states)
    except InputError as e:
        if "states" not in str(e):
            raise
        raise InputError(f"{e} [the grammar at max_depth={max_depth} is too large for the automaton engine: "
                         "lower max_depth, or write repetitions as x* instead of recursion]") from None


class Grammar(DFAPotential):
    """The continuation must be a string of the Lark grammar ``text`` (rule ``start``), with
    recursion bounded by ``max_depth`` (module docstring: language, bound, exactness).

    tokenizer_or_lm: a :class:`models.LanguageModel` or a tokenizer with ``token_bytes`` and
    ``eos_id``. An invalid grammar raises :class:`InputError` with lark's line and column.

    Host-only attributes (dropped when flattening): ``text``, ``byte_dfa``, ``token_dfa``; two
    grammars whose token tables have equal shapes share one compiled sweep.

    >>> import jax
    >>> from genppl import models, ppl
    >>> lm = models.TabularLM.random(jax.random.key(0), vocab_size=5, max_len=6)   # tokens "$abcd"
    >>> g = ppl.Grammar('start: "a" start "b" | "c"', lm, max_depth=4)
    >>> g.matches("aacbb"), g.matches("aacb")
    (True, False)
    """

    static_exclude = ("token_dfa", "text", "byte_dfa")

    def __init__(self, text: str, tokenizer_or_lm, *, start: str = "start", max_depth: int = 8,
                 unicode: bool = False, max_states: int = 10_000):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        self.text = text
        self.byte_dfa = grammar_dfa(text, start, max_depth, unicode, max_states)
        super().__init__(TokenDFA.build(self.byte_dfa, token_bytes, eos_ids_of(tokenizer_or_lm, eos_id),
                                        vocab_size))

    def matches(self, text) -> bool:
        """Host-side: whether ``text`` (str or bytes) is in the (bounded) language."""
        return self.byte_dfa.matches(text)

    def __repr__(self) -> str:
        return f"Grammar({self.num_states} states)"


def eos_ids_of(tokenizer_or_lm, eos_id: int):
    """Every EOS id of an LM (``lm.eos_ids``, first = ``eos_id``), or ``eos_id`` alone."""
    ids = getattr(tokenizer_or_lm, "eos_ids", None)
    if not ids:
        return eos_id
    ids = [int(i) for i in ids]
    return [eos_id] + [i for i in ids if i != eos_id]

