"""ppl.JSONSchema: random schemas (hypothesis) whose samples validate with the jsonschema
package and whose valid documents are never cut off (multi-byte UTF-8, tokens straddling
structural characters), SMC against exact enumeration on a word-level vocabulary, errors
with JSON paths, unsupported keywords named, and the empty language."""

import json

import jax
import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genppl import models, ppl
from genppl.inference import smc
from genppl.models.interface import InputError
from genppl.ppl.jsonschema import schema_dfa
from tests.inference.smc.enumeration import assert_unbiased_measure, assert_unbiased_z, run_many

from .test_grammar import tv_floor, tv_to_exact


class Vocab:
    """A tokenizer as the constraint machinery sees it: bytes per token id and an EOS."""

    def __init__(self, pieces, eos_id=0):
        self.token_bytes = [p.encode() if isinstance(p, str) else p for p in pieces]
        self.eos_id, self.vocab_size = eos_id, len(pieces)


# every byte but NUL as a token (so UTF-8 characters can be split), then multi-byte tokens that
# straddle structural characters and whole multi-byte characters
STRADDLE = ['{"', '":', '",', '"}', '"]', ',"', '[{', '}]', '},{', '":"', '":[', '1,', ',1', 'é"', '"é', 'ключ',
            '日本', '本"', 'true,', 'null}', '": ', ', "', '"a', 'a"', '": "']
BYTES = Vocab([b""] + [bytes([b]) for b in range(1, 256)] + STRADDLE)
LONGEST = sorted(range(1, len(BYTES.token_bytes)), key=lambda i: -len(BYTES.token_bytes[i]))


def tokenize(data: bytes) -> list[int]:
    """Greedy longest-match tokenization (the straddling tokens win where they fit)."""
    out, k = [], 0
    while k < len(data):
        t = next(i for i in LONGEST if data.startswith(BYTES.token_bytes[i], k))
        out.append(t)
        k += len(BYTES.token_bytes[t])
    return out


# ---- random schemas and their valid documents ------------------------------------------------
KEYS = st.sampled_from(["a", "b", "ключ", "日本", "x y", "é"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-50, 50), st.sampled_from(["é", "日本", "a\"b", "", "z"]))
TEXT = st.text(st.characters(exclude_categories=("Cs",), max_codepoint=0x2FFFF), max_size=4)


def leaf_schemas():
    return st.one_of(
        st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
                         {"type": "string"}, {"type": "string", "pattern": "^[a-zé]+$"},
                         {"type": "string", "pattern": "日"}, {"type": ["string", "null"]}]),
        st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
                  st.integers(0, 2), st.integers(0, 2)),
        st.lists(SCALARS, min_size=1, max_size=3, unique_by=json.dumps).map(lambda v: {"enum": v}),
        SCALARS.map(lambda v: {"const": v}),
    )


def extend(children):
    def obj(props, required, closed):
        names = list(props)
        out = {"type": "object", "properties": props, "required": [n for n, r in zip(names, required) if r]}
        if closed:
            out["additionalProperties"] = False
        return out

    return st.one_of(
        st.builds(lambda s, lo, extra: {"type": "array", "items": s, "minItems": lo, "maxItems": lo + extra},
                  children, st.integers(0, 1), st.integers(0, 2)),
        st.builds(obj, st.dictionaries(KEYS, children, max_size=3), st.lists(st.booleans(), min_size=3, max_size=3),
                  st.booleans()),
        st.lists(children, min_size=1, max_size=2).map(lambda b: {"anyOf": b}),
    )


SCHEMAS = st.recursive(leaf_schemas(), extend, max_leaves=4)


def values(schema):
    """A strategy of Python values the schema accepts, as the serialisation policy writes them."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    if "anyOf" in schema:
        return st.one_of(*(values(b) for b in schema["anyOf"]))
    t = schema["type"]
    if isinstance(t, list):
        return st.one_of(*(values({**schema, "type": x}) for x in t))
    if t == "integer":
        return st.integers(-10**6, 10**6)
    if t == "number":
        return st.one_of(st.integers(-99, 99), st.floats(allow_nan=False, allow_infinity=False))
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "string":
        if schema.get("pattern") == "^[a-zé]+$":
            return st.text(st.sampled_from("abzé"), min_size=1, max_size=4)
        if schema.get("pattern") == "日":
            return st.tuples(st.text(st.sampled_from("a日é"), max_size=2), st.text(st.sampled_from("本x"), max_size=2)) \
                .map(lambda p: p[0] + "日" + p[1])
        return st.text(st.characters(exclude_categories=("Cs",)), min_size=schema.get("minLength", 0),
                       max_size=schema.get("maxLength", 4))
    if t == "array":
        return st.lists(values(schema["items"]), min_size=schema["minItems"], max_size=schema["maxItems"])
    assert t == "object"
    props, required = schema["properties"], set(schema["required"])

    def build(present):
        chosen = [k for k in props if k in required or present[k]]
        return st.fixed_dictionaries({k: values(props[k]) for k in chosen}).map(
            lambda d: {k: d[k] for k in chosen})  # the schema's order (hypothesis shuffles keys)

    return st.fixed_dictionaries({k: st.booleans() for k in props}).flatmap(build)


def serialise(value, spaced: bool) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": ") if spaced else (",", ":"))


def random_walk(tdfa, rng, steps=120):
    """A random token path through the token DFA (EOS taken with prob. 1/2 when allowed);
    None when it did not finish within ``steps``."""
    state, out = tdfa.start, []
    for _ in range(steps):
        allowed = np.flatnonzero(tdfa.allowed[state])
        assert allowed.size, "a live state with no allowed token"
        if tdfa.allowed[state, tdfa.eos_id] and (rng.random() < 0.5 or allowed.size == 1):
            return b"".join(BYTES.token_bytes[t] for t in out)
        body = allowed[allowed != tdfa.eos_id]
        t = int(rng.choice(body))
        out.append(t)
        state = tdfa.table[state, t]
    return None


def check_schema(data, schema, walks):
    potential = ppl.JSONSchema(schema, BYTES, max_depth=2)
    tdfa = potential.token_dfa
    # no false kills: every token prefix of valid documents stays live, EOS allowed at the end
    for spaced in (False, True):
        doc = serialise(data.draw(values(schema)), spaced)
        jsonschema.validate(json.loads(doc), schema)  # the generator itself is right
        state = tdfa.start
        for t in tokenize(doc.encode()):
            assert tdfa.allowed[state, t], (doc, BYTES.token_bytes[t])
            state = tdfa.table[state, t]
        assert tdfa.allowed[state, tdfa.eos_id], doc
    # soundness: every finished random path is a valid document
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    for _ in range(walks):
        text = random_walk(tdfa, rng)
        if text is not None:
            jsonschema.validate(json.loads(text.decode()), schema)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), SCHEMAS)
def test_random_schemas_sound_and_no_false_kills(data, schema):
    """12 random schemas (the slow variant runs 150): valid documents are never cut off, in
    compact and spaced form, token by token with multi-byte characters split across byte
    tokens and tokens straddling '":', '",' ...; every random finished path validates."""
    check_schema(data, schema, walks=5)


@pytest.mark.slow  # 150 schemas, each compiled and lifted to a 280-token vocabulary: ~2 min
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), SCHEMAS)
def test_random_schemas_sound_and_no_false_kills_many(data, schema):
    check_schema(data, schema, walks=20)


def test_recursive_ref_is_bounded_and_exact_inside_the_bound():
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "v": {"enum": ["x", 1, None]}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/node"}
    dfa = schema_dfa(tree, max_depth=2)
    assert dfa.matches('{"v":"x","kids":[{"v":1,"kids":[{"v":null}]},{"v":null,"kids":[]}]}')
    assert not dfa.matches('{"v":"x","kids":[{"v":1,"kids":[{"v":null,"kids":[{"v":1}]}]}]}')  # depth 3
    assert not dfa.matches('{"v":"y"}') and not dfa.matches('{"kids":[],"v":1}')


def test_oneof_disjoint_is_exact_and_overlap_is_refused():
    dfa = schema_dfa({"oneOf": [{"type": "integer"}, {"type": "string"}]})
    assert dfa.matches("12") and dfa.matches('"a"') and not dfa.matches("null")
    with pytest.raises(InputError, match=r"oneOf at #/properties/a/oneOf: branches 0 and 1 both accept '0'"):
        schema_dfa({"type": "object", "properties": {"a": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}})


@pytest.mark.parametrize("schema, fix", [
    ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}},
     r"unsupported JSON Schema keyword 'multipleOf' at #/properties/a"),
    ({"type": "integer", "minimum": 0}, r"integer bounds at #: give both a minimum and a maximum"),
    ({"type": "number", "minimum": 0, "maximum": 1}, r"minimum/maximum at # are supported for type integer only"),
    ({"type": "string", "format": "email"}, r"unsupported JSON Schema keyword 'format' at #"),
    ({"type": "array", "items": {"type": "strng"}}, r"type at #/items must be one of"),
    ({"type": "array", "minItems": -1}, r"minItems at # must be a non-negative integer"),
    ({"properties": {"a": {"$ref": "#/$defs/b"}}}, r"\$ref '#/\$defs/b' at #/properties/a/\$ref points nowhere"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, r"additionalProperties at #: only true or false"),
    ({"type": "string", "pattern": "(?<=a)b"}, r"pattern at #"),
    ('{"type": "object",\n "properties": {,}}', r"not valid JSON: .* at line 2 column 17"),
    ({"anyOf": []}, r"anyOf at # must be a non-empty list"),
])
def test_bad_schemas_name_the_path(schema, fix):
    with pytest.raises(InputError, match=fix):
        ppl.JSONSchema(schema, BYTES)


def test_integer_bounds_are_exact():
    dfa = schema_dfa({"type": "integer", "minimum": -12, "exclusiveMaximum": 105})
    inside = {str(v) for v in range(-12, 105)}
    for v in range(-300, 300):
        assert dfa.matches(str(v)) == (str(v) in inside), v
    assert not dfa.matches("007") and not dfa.matches("-0")


def test_whitespace_policy():
    schema = {"type": "array", "items": {"type": "integer"}}
    default = schema_dfa(schema)
    assert default.matches("[1,2]") and default.matches("[1, 2]") and not default.matches("[ 1,2]")
    loose = schema_dfa(schema, whitespace=r"[ \n]{0,2}")
    assert loose.matches(" [\n1 ,  2 ] ") and not loose.matches("[1,   2]")


# ---- SMC against exact enumeration: a nested object with an enum and an array ----------------
WORDS = Vocab(["", '{"e":', '"u"', '"v"', ',"l":[', "1", ",", "]}"])
NESTED = {"type": "object", "properties": {
    "e": {"enum": ["u", "v"]},
    "l": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
    "required": ["e", "l"], "additionalProperties": False}
JCAP = 6


def valid(text: str) -> bool:
    """The independent oracle: json + jsonschema, in the compact serialisation."""
    try:
        value = json.loads(text)
        jsonschema.validate(value, NESTED)
    except (ValueError, jsonschema.ValidationError):
        return False
    return json.dumps(value, separators=(",", ":")) == text


@pytest.fixture(scope="module")
def word_lm():
    return models.TabularLM.random(jax.random.key(9), vocab_size=len(WORDS.token_bytes), max_len=JCAP, eos_id=0,
                                   eos_boost=1.0)


def text_of(seq):
    return b"".join(WORDS.token_bytes[t] for t in seq if t != 0).decode()


@pytest.mark.slow  # a 7^6 enumeration and 400 vmapped sweeps: ~40 s
def test_smc_is_exact_for_a_nested_schema(word_lm):
    """E[Z_hat] = Z for Z = sum_x p(x) 1[x valid] and the weighted particles approach
    p(x | valid) (400 runs x 8 particles: a 5 % relative bias of Z_hat is 3 standard errors;
    TV within 3x the noise floor of one draw per run)."""
    seqs, logp = word_lm.enumerate(JCAP)
    keep = np.array([valid(text_of(s)) for s in seqs])
    log_z = np.logaddexp.reduce(np.where(keep, logp, -np.inf))
    pi, prior = np.exp(logp - log_z)[keep], np.exp(logp)[keep]
    support = [s for s, k in zip(seqs, keep) if k]
    program = ppl.Program(word_lm, [1], JCAP, potential=ppl.JSONSchema(NESTED, WORDS))
    log_z_hat, logw, samples = run_many(program, 8)
    assert_unbiased_z(log_z_hat, log_z)
    assert_unbiased_measure(logw, samples, support, pi, log_z, prior)
    assert tv_to_exact(logw, samples, support, pi, log_z) < 3 * tv_floor(pi, len(samples))


@pytest.mark.slow  # one more SMC compile (~7 s); the default suite runs SMC with a grammar (test_grammar)
def test_smc_samples_validate(word_lm):
    """Locally optimal SMC with the schema: every weighted particle is a valid document."""
    result = smc.run(ppl.Program(word_lm, [1], JCAP, potential=ppl.JSONSchema(NESTED, WORDS)), 32, 0)
    assert np.isfinite(result.log_z)
    texts = [text_of(ids) for ids, w in zip(result.token_ids, result.weights) if w > 0]
    assert texts and all(valid(t) for t in texts), texts


def test_unsatisfiable_schema_is_an_empty_language():
    """required + additionalProperties: false that forbid each other: no document, no crash
    (the token DFA's start is dead, so every particle dies and log Z = -inf)."""
    p = ppl.JSONSchema({"type": "object", "required": ["a"], "additionalProperties": False}, WORDS)
    assert p.start == p.dead and not p.token_dfa.allowed[p.token_dfa.start].any()


@pytest.mark.slow  # compiles one more sweep (~7 s)
def test_unsatisfiable_schema_gives_log_z_minus_inf(word_lm):
    p = ppl.JSONSchema({"type": "object", "required": ["a"], "additionalProperties": False}, WORDS)
    result = smc.run(ppl.Program(word_lm, [1], JCAP, potential=p), 8, 0)
    assert result.log_z == -np.inf and result.message is not None
