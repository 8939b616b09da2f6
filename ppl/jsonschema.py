"""JSON Schema as an exact token-level potential: :class:`JSONSchema`.

A schema (draft 2020-12, the subset below) is lowered to a regular language over UTF-8
bytes: the JSON texts, in this module's *serialisation policy*, of the values the schema
accepts. Every subschema is compiled to a minimal byte DFA once and embedded where it is
used; conjunctions (``enum``/``anyOf``/``oneOf``/``$ref`` next to other keywords) are DFA
intersections. The result runs as token tables inside the compiled sweep like any
:class:`~genppl.ppl.constraints.DFAPotential`: weight 1 on every token after which some
token sequence completes a document of the language, 0 otherwise, and EOS only on a
complete document.

**Supported keywords.** ``type`` (a name or a list: object, array, string, number, integer,
boolean, null), ``properties``, ``required``, ``additionalProperties`` (false, true or
absent), ``items``, ``minItems``, ``maxItems``, ``enum``, ``const``, ``pattern``,
``minLength``, ``maxLength``, ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``
(integers only, both bounds, at most ``MAX_INTEGER_RANGE`` integers apart), ``anyOf``, ``oneOf``, ``$ref`` (local: ``#``, ``#/$defs/...``,
``#/definitions/...``) with ``$defs``/``definitions``. Annotations (``title``,
``description``, ``default``, ``examples``, ``$schema``, ``$id``, ``$comment``,
``deprecated``, ``readOnly``, ``writeOnly``) are accepted and have no effect. Any other
keyword raises :class:`InputError` naming it and its JSON path: nothing is silently ignored.

**Serialisation policy** (what the generated text looks like; every such text is valid JSON
whose value validates against the schema):

* whitespace: ``whitespace=None`` (default) allows exactly one optional space after each
  ``,`` and ``:`` and nowhere else (``json.dumps`` style with or without the spaces);
  ``whitespace="<regex>"`` allows that regex at every place JSON allows whitespace (between
  tokens and around the document), e.g. ``"[ \\n]{0,8}"`` (an unbounded ``\\s*`` lets a model
  stall in whitespace: bound it);
* objects list their properties in the schema's order, each at most once; optional ones may
  be left out; no property outside ``properties`` and ``required`` is ever generated (with
  ``additionalProperties`` absent or true that is a subset of the valid documents);
* strings: any character except ``"``, ``\\`` and controls U+0000–U+001F appears as itself;
  escapes are ``\\" \\\\ \\/ \\b \\f \\n \\r \\t`` and ``\\uXXXX`` outside the surrogate range
  (so every escape is one character and ``minLength``/``maxLength`` count characters
  exactly). With ``pattern`` the string has no escapes and its characters must match the
  pattern (ECMA ``pattern`` semantics: a match anywhere unless anchored by ``^``/``$``;
  syntax of :mod:`genppl.ppl.automata.syntax`, ``\\d \\w \\s`` ASCII);
* numbers: ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?``; integers without fraction or
  exponent; ``enum``/``const`` values as ``json.dumps(value, ensure_ascii=False)`` writes
  them (with the whitespace policy inside arrays and objects);
* recursion: a ``$ref`` may be open inside itself at most ``max_depth`` times, and a value
  with no constraint at all (``{}``, ``true``, a property listed only in ``required``) nests
  arrays/objects at most ``max_depth`` deep. The potential is exact for that bounded
  language: past the bound a prefix gets weight 0. Choose ``max_depth`` at least the nesting
  reachable within the generation horizon for exactness over the whole horizon.

``oneOf`` is exact: its branches are compiled and checked to be disjoint (then one-of equals
any-of); overlapping branches raise :class:`InputError` with a text both accept. An
unsatisfiable schema is not an error: the language is empty and log Z = -inf.

>>> from genppl import models
>>> tok = models.CharTokenizer('${}[]":,0123456789abnlrtuefs ', eos_id=0)
>>> s = JSONSchema({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
...                 "additionalProperties": False}, tok)
>>> [s.matches(t) for t in ('{"a":1}', '{"a": 12}', '{}', '{"a":01}')]
[True, True, False, False]
"""

from __future__ import annotations

import json

from genppl.models.interface import InputError

from .automata import TokenDFA, intersect, vocabulary
from .automata.syntax import parse as parse_regex
from .automata.trees import (EMPTY, EPSILON, alt, cat, chars, compile_tree, embed, is_empty, literal, optional,
                             rep, without)
from .constraints import DFAPotential
from .grammar import eos_ids_of

__all__ = ["JSONSchema", "schema_dfa"]

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "$defs",
                         "definitions", "deprecated", "readOnly", "writeOnly"})
SUPPORTED = frozenset({"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                       "enum", "const", "pattern", "minLength", "maxLength", "anyOf", "oneOf", "$ref",
                       "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
#: integer bounds are lowered by listing the integers: at most this many
MAX_INTEGER_RANGE = 20_000
TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")

_DIGIT = chars([(48, 57)])
_HEX = chars([(48, 57), (65, 70), (97, 102)])
_INTEGER = cat(optional(literal("-")), alt(literal("0"), cat(chars([(49, 57)]), rep(_DIGIT, 0, None))))
_NUMBER = cat(_INTEGER, optional(cat(literal("."), rep(_DIGIT, 1, None))),
              optional(cat(chars([(69, 69), (101, 101)]), optional(chars([(43, 43), (45, 45)])), rep(_DIGIT, 1, None))))
_FORBIDDEN = [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]  # controls, '"', '\'
_PLAIN = without(chars([(0, 0x10FFFF)]), _FORBIDDEN)
_ESCAPE = cat(literal("\\"), alt(chars([(ord(c), ord(c)) for c in '"\\/bfnrt']),
                                 cat(literal("u"), alt(cat(without(_HEX, [(68, 68), (100, 100)]), _HEX, _HEX, _HEX),
                                                       cat(chars([(68, 68), (100, 100)]), chars([(48, 55)]), _HEX,
                                                           _HEX)))))
_CHAR = alt(_PLAIN, _ESCAPE)


def _pointer(path) -> str:
    return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _count(schema, key, path):
    value = schema[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{key} at {_pointer(path)} must be a non-negative integer, got {value!r}")
    return value


class _Lowering:
    def __init__(self, root, whitespace, max_depth: int, max_states: int):
        self.root, self.max_depth, self.max_states = root, max_depth, max_states
        if whitespace is None:
            space = optional(literal(" "))
            self.pad, self.comma, self.colon = EPSILON, cat(literal(","), space), cat(literal(":"), space)
        else:
            if not isinstance(whitespace, str):
                raise InputError(f"whitespace must be a regex string or None, got {whitespace!r}")
            ws = parse_regex(whitespace)
            self.pad, self.comma, self.colon = ws, cat(ws, literal(","), ws), cat(ws, literal(":"), ws)
        self.any_memo: dict[int, tuple] = {}
        self.memo: dict = {}

    # ---- helpers ------------------------------------------------------------------------
    def compiled(self, tree, path):
        try:
            return embed(compile_tree(tree, f"JSON schema at {_pointer(path)}", self.max_states))
        except InputError as e:
            raise InputError(f"{e} [schema at {_pointer(path)}: simplify it, lower max_depth or raise "
                             "max_states]") from None

    def both(self, a, b, path):
        """The intersection of two languages (trees), as an embedded DFA."""
        if is_empty(a) or is_empty(b):
            return EMPTY
        da, db = self.compiled(a, path)[1], self.compiled(b, path)[1]
        return embed(intersect(da, db))

    def string_literal(self, s: str):
        return literal(json.dumps(s, ensure_ascii=False))

    def value_literal(self, v, path):
        if v is None or isinstance(v, bool) or isinstance(v, (int, float)):
            if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
                raise InputError(f"{_pointer(path)}: {v!r} is not a JSON value")
            return literal(json.dumps(v))
        if isinstance(v, str):
            return self.string_literal(v)
        if isinstance(v, list):
            items = [self.value_literal(x, path) for x in v]
            body = cat(items[0], *(cat(self.comma, x) for x in items[1:])) if items else EPSILON
            return cat(literal("["), self.pad, body, self.pad, literal("]"))
        if isinstance(v, dict):
            members = [cat(self.string_literal(str(k)), self.colon, self.value_literal(x, path)) for k, x in v.items()]
            body = cat(members[0], *(cat(self.comma, m) for m in members[1:])) if members else EPSILON
            return cat(literal("{"), self.pad, body, self.pad, literal("}"))
        raise InputError(f"{_pointer(path)}: {v!r} is not a JSON value")

    def any_value(self, depth: int):
        """Any JSON value nesting arrays/objects at most ``depth`` deep."""
        if depth in self.any_memo:
            return self.any_memo[depth]
        scalars = [literal("null"), literal("true"), literal("false"), _NUMBER, self.string(None, None, None)]
        if depth > 0:
            inner = self.any_value(depth - 1)
            items = cat(inner, rep(cat(self.comma, inner), 0, None))
            member = cat(self.string(None, None, None), self.colon, inner)
            members = cat(member, rep(cat(self.comma, member), 0, None))
            scalars += [cat(literal("["), self.pad, optional(items), self.pad, literal("]")),
                        cat(literal("{"), self.pad, optional(members), self.pad, literal("}"))]
        tree = self.compiled(alt(*scalars), ["<any value>"])
        self.any_memo[depth] = tree
        return tree

    def string(self, pattern, lo, hi):
        if pattern is None:
            body = rep(_CHAR, lo or 0, hi)
        else:
            anchored_start = pattern.startswith("^")
            anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
            anything = rep(_PLAIN, 0, None)
            body = without(cat(EPSILON if anchored_start else anything, parse_regex(pattern),
                               EPSILON if anchored_end else anything), _FORBIDDEN)
            if lo is not None or hi is not None:
                body = self.both(body, rep(_PLAIN, lo or 0, hi), ["<string>"])
        return cat(literal('"'), body, literal('"'))

    # ---- schemas ------------------------------------------------------------------------
    def resolve(self, ref, path):
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise InputError(f"$ref at {_pointer(path)} must be a local reference such as '#/$defs/Name', got "
                             f"{ref!r} (remote references are not supported)")
        target, parts = self.root, [p.replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/")[1:]]
        for p in parts:
            if isinstance(target, dict) and p in target:
                target = target[p]
            elif isinstance(target, list) and p.isdigit() and int(p) < len(target):
                target = target[int(p)]
            else:
                raise InputError(f"$ref {ref!r} at {_pointer(path)} points nowhere (no {p!r})")
        return target, parts

    def lower(self, schema, path, refs):
        key = (id(schema), tuple(sorted(refs.items())))
        if key in self.memo:
            return self.memo[key][1]
        tree = self._lower(schema, path, refs)
        self.memo[key] = (schema, tree)  # keep the schema alive so its id stays unique
        return tree

    def _lower(self, schema, path, refs):
        if schema is True:
            return self.any_value(self.max_depth)
        if schema is False:
            return EMPTY
        if not isinstance(schema, dict):
            raise InputError(f"the schema at {_pointer(path)} must be an object or a boolean, got {schema!r}")
        for k in schema:
            if k not in SUPPORTED and k not in ANNOTATIONS:
                raise InputError(f"unsupported JSON Schema keyword {k!r} at {_pointer(path)}; supported: "
                                 f"{', '.join(sorted(SUPPORTED))} (and annotations)")
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            ref = schema["$ref"]
            target, parts = self.resolve(ref, path + ["$ref"])
            count = refs.get(ref, 0)
            inner = EMPTY if count > self.max_depth else self.lower(target, parts, {**refs, ref: count + 1})
            return self.conjoin(inner, rest, path, refs)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                rest = {k: v for k, v in schema.items() if k != combinator}
                branches = schema[combinator]
                if not isinstance(branches, list) or not branches:
                    raise InputError(f"{combinator} at {_pointer(path)} must be a non-empty list of schemas")
                trees = [self.lower(b, path + [combinator, i], refs) for i, b in enumerate(branches)]
                if combinator == "oneOf":
                    self.check_disjoint(trees, path + [combinator])
                return self.conjoin(alt(*trees), rest, path, refs)
        if "enum" in schema or "const" in schema:
            if "const" in schema:
                values = [schema["const"]]
            else:
                values = schema["enum"]
                if not isinstance(values, list) or not values:
                    raise InputError(f"enum at {_pointer(path)} must be a non-empty list of values")
            rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
            tree = alt(*(self.value_literal(v, path + ["enum", i]) for i, v in enumerate(values)))
            return self.conjoin(tree, rest, path, refs)
        types = schema.get("type", list(TYPES[:6]))  # integer is inside number
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not types or any(t not in TYPES for t in types):
            raise InputError(f"type at {_pointer(path)} must be one of {', '.join(TYPES)} or a list of them, "
                             f"got {schema.get('type')!r}")
        return alt(*(self.typed(t, schema, path, refs) for t in types))

    def conjoin(self, tree, rest, path, refs):
        """``tree`` and the constraints of the sibling keywords ``rest`` (an intersection)."""
        if not any(k in SUPPORTED for k in rest):
            return tree
        return self.both(tree, self.lower(rest, path, refs), path)

    def check_disjoint(self, trees, path):
        dfas = [self.compiled(t, path)[1] for t in trees]
        for i in range(len(dfas)):
            for j in range(i + 1, len(dfas)):
                common = intersect(dfas[i], dfas[j])
                example = _shortest(common)
                if example is not None:
                    raise InputError(f"oneOf at {_pointer(path)}: branches {i} and {j} both accept {example!r}, so "
                                     "such a value matches more than one branch (invalid under oneOf); make the "
                                     "branches disjoint or use anyOf")

    def integer_range(self, schema, path):
        """Integers within minimum/maximum (exclusive forms too): the trie of their decimal
        texts; unbounded when neither bound is given."""
        bounds = {k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema}
        if not bounds:
            return _INTEGER
        for k, v in bounds.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{k} at {_pointer(path)} must be a number, got {v!r}")
        import math

        lo = max([math.ceil(bounds[k]) for k in ("minimum",) if k in bounds]
                 + [math.floor(bounds[k]) + 1 for k in ("exclusiveMinimum",) if k in bounds], default=None)
        hi = min([math.floor(bounds[k]) for k in ("maximum",) if k in bounds]
                 + [math.ceil(bounds[k]) - 1 for k in ("exclusiveMaximum",) if k in bounds], default=None)
        if lo is None or hi is None or hi - lo + 1 > MAX_INTEGER_RANGE:
            raise InputError(f"integer bounds at {_pointer(path)}: give both a minimum and a maximum, at most "
                             f"{MAX_INTEGER_RANGE} integers apart (they are lowered by listing the integers)")
        trie: dict = {}
        for v in range(lo, hi + 1):
            node = trie
            for c in str(v) + "$":
                node = node.setdefault(c, {})

        def tree(node):
            return alt(*(EPSILON if c == "$" else cat(literal(c), tree(sub)) for c, sub in node.items()))

        return tree(trie) if trie else EMPTY

    def typed(self, t, schema, path, refs):
        if t == "null":
            return literal("null")
        if t == "boolean":
            return alt(literal("true"), literal("false"))
        if t == "integer":
            return self.integer_range(schema, path)
        if t == "number":
            if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
                raise InputError(f"minimum/maximum at {_pointer(path)} are supported for type integer only (bounds "
                                 "on a number with a fraction or exponent are not regular in general)")
            return _NUMBER
        if t == "string":
            pattern = schema.get("pattern")
            if pattern is not None and not isinstance(pattern, str):
                raise InputError(f"pattern at {_pointer(path)} must be a string, got {pattern!r}")
            lo = _count(schema, "minLength", path) if "minLength" in schema else None
            hi = _count(schema, "maxLength", path) if "maxLength" in schema else None
            if pattern is not None:
                try:
                    parse_regex(pattern)
                except InputError as e:
                    raise InputError(f"pattern at {_pointer(path)}: {e}") from None
            return self.string(pattern, lo, hi)
        if t == "array":
            items = schema.get("items", True)
            item = self.lower(items, path + ["items"], refs)
            lo = _count(schema, "minItems", path) if "minItems" in schema else 0
            hi = _count(schema, "maxItems", path) if "maxItems" in schema else None
            if hi is not None and hi < lo:
                return EMPTY
            if hi == 0:
                body = EPSILON
            else:
                body = cat(item, rep(cat(self.comma, item), max(lo - 1, 0), None if hi is None else hi - 1))
                body = body if lo > 0 else optional(body)
            return self.compiled(cat(literal("["), self.pad, body, self.pad, literal("]")), path)
        assert t == "object"
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise InputError(f"properties at {_pointer(path)} must be an object mapping names to schemas")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise InputError(f"required at {_pointer(path)} must be a list of property names, got {required!r}")
        extra = schema.get("additionalProperties", True)
        if not isinstance(extra, bool):
            raise InputError(f"additionalProperties at {_pointer(path)}: only true or false is supported (a schema "
                             "for additional properties is not)")
        names = list(props) + [r for r in dict.fromkeys(required) if r not in props]
        if not extra and len(names) > len(props):
            return EMPTY  # a required property that additionalProperties: false forbids
        members, needed = [], []
        for name in names:
            value = self.lower(props[name], path + ["properties", name], refs) if name in props \
                else self.any_value(self.max_depth)
            members.append(cat(self.string_literal(name), self.colon, value))
            needed.append(name in required)
        first_required = needed.index(True) if any(needed) else len(names)
        choices = [] if any(needed) else [EPSILON]
        for i in range(min(first_required + 1, len(names))):  # i: the first property present
            tail = [cat(self.comma, members[j]) if needed[j] else optional(cat(self.comma, members[j]))
                    for j in range(i + 1, len(names))]
            choices.append(cat(members[i], *tail))
        return self.compiled(cat(literal("{"), self.pad, alt(*choices), self.pad, literal("}")), path)


def _shortest(dfa):
    """A shortest text the byte DFA accepts (decoded with replacement), or None."""
    from collections import deque

    reps = {}
    for b in range(256):
        reps.setdefault(int(dfa.byte_class[b]), b)
    seen, queue = {dfa.start: b""}, deque([dfa.start])
    while queue:
        q = queue.popleft()
        if dfa.accepting[q]:
            return seen[q].decode(errors="replace")
        for c, b in reps.items():
            t = int(dfa.trans[q, c])
            if t not in seen and t != dfa.dead:
                seen[t] = seen[q] + bytes([b])
                queue.append(t)
    return None


def load_schema(schema):
    """A schema given as a dict/bool, or as JSON text (errors name the line and column)."""
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except json.JSONDecodeError as e:
            raise InputError(f"the schema is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return schema


def schema_dfa(schema, whitespace=None, max_depth: int = 3, max_states: int = 10_000):
    """The minimal byte DFA of a schema's language (see :class:`JSONSchema` for the policy)."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise InputError(f"max_depth must be a non-negative integer, got {max_depth!r}")
    schema = load_schema(schema)
    lowering = _Lowering(schema, whitespace, max_depth, max_states)
    tree = lowering.lower(schema, [], {})
    return compile_tree(cat(lowering.pad, tree, lowering.pad), "JSON schema", max_states)


class JSONSchema(DFAPotential):
    """The continuation must be a JSON document whose value validates against ``schema``
    (a dict, a bool, or JSON text), written in the module's serialisation policy.

    tokenizer_or_lm: a :class:`models.LanguageModel` or a tokenizer. ``whitespace``: None
    (one optional space after ``,`` and ``:``) or a regex allowed wherever JSON allows
    whitespace; ``max_depth``: the recursion bound of ``$ref`` and of unconstrained values.
    Errors (:class:`InputError`) name the JSON path (``#/properties/steps``) or the position in
    the text; an unsupported keyword is named.

    Host-only attributes (dropped when flattening): ``schema``, ``byte_dfa``, ``token_dfa``.
    """

    static_exclude = ("token_dfa", "schema", "byte_dfa")

    def __init__(self, schema, tokenizer_or_lm, *, whitespace: str | None = None, max_depth: int = 3,
                 max_states: int = 10_000):
        token_bytes, vocab_size, eos_id = vocabulary(tokenizer_or_lm)
        self.schema = load_schema(schema)
        self.byte_dfa = schema_dfa(self.schema, whitespace, max_depth, max_states)
        super().__init__(TokenDFA.build(self.byte_dfa, token_bytes, eos_ids_of(tokenizer_or_lm, eos_id),
                                        vocab_size))

    def matches(self, text) -> bool:
        """Host-side: whether ``text`` is in the potential's language."""
        return self.byte_dfa.matches(text)

    def __repr__(self) -> str:
        return f"JSONSchema({self.num_states} states)"
