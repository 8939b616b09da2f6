"""Simple English sentences from a small grammar, for keyword-constrained generation.

A document looks like::

    S: the small dog carries a red ball to the park.

Sentences are lower case, use only the words in :data:`VOCABULARY` (a few hundred real
English words: animals and people, things, places, adjectives, verbs, adverbs and function
words), may contain commas, and end with one full stop. The grammar (see
:func:`generate_sentence`) has five shapes::

    SUBJ VT OBJ [PLACE-PHRASE].                    the girl finds an old key in the garden.
    SUBJ VI [ADVERB] [PLACE-PHRASE].               the tired horse walks slowly to the river.
    in the PLACE, SUBJ VT OBJ.                     in the kitchen, the cat watches a blue cup.
    SUBJ VT OBJ and SUBJ VI [PLACE-PHRASE].        the boy drops a box and the dog runs to the beach.
    SUBJ and SUBJ VI-PLURAL [PLACE-PHRASE].        the farmer and the duck sleep near the lake.

``SUBJ`` is ``the [ADJ] NOUN`` over animate nouns, ``OBJ`` is ``a|an|the [ADJ] THING``; a
place phrase is ``to the PLACE`` after a verb of motion and ``in|near|at|behind|by the
PLACE`` otherwise. Every noun is singular.

The prompt is :func:`prompt_text` (``"S:"``); a completion is the text after it. Models
trained on the bundled corpus see each document after a BOS token, so prepend the
tokenizer's BOS id (``<|endoftext|>``) to the encoded prompt.

Randomness comes from :class:`random.Random` (the standard library).
"""

from __future__ import annotations

import random
import re

__all__ = [
    "VOCABULARY", "ANIMATES", "THINGS", "PLACES", "ADJECTIVES", "TRANSITIVE_VERBS",
    "INTRANSITIVE_VERBS", "ADVERBS", "FUNCTION_WORDS", "CONTENT_WORDS", "generate_sentence",
    "prompt_text", "document", "words", "in_vocabulary", "keyword_coverage",
    "satisfies_keywords", "is_well_formed", "is_grammatical", "keyword_sets", "witness_sentences", "score",
]

ANIMATES = tuple("""
dog cat bird horse cow pig sheep goat duck fox rabbit mouse bear wolf lion tiger frog owl
girl boy man woman child baby teacher farmer doctor baker cook driver pilot nurse king queen
student artist singer sailor painter dancer writer
""".split())

THINGS = tuple("""
ball book apple hat box cup key kite bag coat shoe chair table lamp clock map letter
basket bottle bell drum flag flower leaf stone stick rope cake bread egg orange banana
carrot candle coin ring shell toy train boat car bike blanket pillow brush pencil pen
picture plate spoon bucket ladder umbrella wheel jar hammer fish
""".split())

PLACES = tuple("""
park garden school beach market kitchen river forest city library house farm lake
field hill street shop station yard barn village zoo castle bridge island cave
harbor meadow room hall office museum square pond valley
""".split())

ADJECTIVES = tuple("""
small big little large old young happy sad tired hungry quiet loud brave clever kind
red blue green yellow black white brown pink purple orange gray
heavy light soft hard warm cold wet dry clean dirty new shiny round tall short
funny busy lazy gentle strange pretty
""".split())

# verb (third person singular) -> (plural form, is a verb of motion)
TRANSITIVE_VERBS = {
    "carries": ("carry", True), "brings": ("bring", True), "takes": ("take", True),
    "pushes": ("push", True), "pulls": ("pull", True), "throws": ("throw", True),
    "sends": ("send", True), "rolls": ("roll", True), "drags": ("drag", True),
    "finds": ("find", False), "sees": ("see", False), "likes": ("like", False),
    "wants": ("want", False), "holds": ("hold", False), "paints": ("paint", False),
    "watches": ("watch", False), "buys": ("buy", False), "drops": ("drop", False),
    "washes": ("wash", False), "hides": ("hide", False), "loses": ("lose", False),
    "opens": ("open", False), "cleans": ("clean", False), "fixes": ("fix", False),
    "keeps": ("keep", False), "sells": ("sell", False), "draws": ("draw", False),
    "breaks": ("break", False), "catches": ("catch", False), "picks": ("pick", False),
    "touches": ("touch", False), "shares": ("share", False), "needs": ("need", False),
    "makes": ("make", False), "gives": ("give", True), "follows": ("follow", True),
}

INTRANSITIVE_VERBS = {
    "runs": ("run", True), "walks": ("walk", True), "goes": ("go", True),
    "swims": ("swim", True), "flies": ("fly", True), "jumps": ("jump", True),
    "hurries": ("hurry", True), "returns": ("return", True), "climbs": ("climb", True),
    "sleeps": ("sleep", False), "sits": ("sit", False), "waits": ("wait", False),
    "plays": ("play", False), "sings": ("sing", False), "dances": ("dance", False),
    "laughs": ("laugh", False), "rests": ("rest", False), "reads": ("read", False),
    "works": ("work", False), "eats": ("eat", False), "cries": ("cry", False),
    "smiles": ("smile", False), "hides": ("hide", False), "stays": ("stay", False),
    "listens": ("listen", False), "stands": ("stand", False), "shouts": ("shout", False),
}

ADVERBS = tuple("""
quickly slowly quietly happily sadly loudly carefully gently early late often always
""".split())

_STATIC_PREPOSITIONS = ("in", "near", "at", "behind", "by")
FUNCTION_WORDS = tuple(sorted({"the", "a", "an", "and", "to", *_STATIC_PREPOSITIONS}))

_VERB_FORMS = {v for v in TRANSITIVE_VERBS} | {v for v in INTRANSITIVE_VERBS} | {
    p for p, _ in [*TRANSITIVE_VERBS.values(), *INTRANSITIVE_VERBS.values()]}

#: Words a keyword may be: nouns, places, adjectives, verbs (both forms) and adverbs.
CONTENT_WORDS = frozenset({*ANIMATES, *THINGS, *PLACES, *ADJECTIVES, *_VERB_FORMS, *ADVERBS})
#: Every word the grammar can write.
VOCABULARY = frozenset(CONTENT_WORDS | set(FUNCTION_WORDS))

_VOWELS = "aeiou"


def _article_for(word: str, rng: random.Random) -> str:
    indefinite = "an" if word[0] in _VOWELS else "a"
    return rng.choice([indefinite, indefinite, "the"])


def _subject(rng: random.Random) -> str:
    noun = rng.choice(ANIMATES)
    if rng.random() < 0.5:
        return f"the {rng.choice(ADJECTIVES)} {noun}"
    return f"the {noun}"


def _object(rng: random.Random) -> str:
    noun = rng.choice(THINGS)
    phrase = f"{rng.choice(ADJECTIVES)} {noun}" if rng.random() < 0.5 else noun
    return f"{_article_for(phrase, rng)} {phrase}"


def _place_phrase(rng: random.Random, motion: bool) -> str:
    prep = "to" if motion else rng.choice(_STATIC_PREPOSITIONS)
    return f"{prep} the {rng.choice(PLACES)}"


def generate_sentence(rng: random.Random | int) -> str:
    """Draw one sentence (without the ``"S:"`` prefix), e.g.
    ``"the small dog carries a red ball to the park."``"""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    shape = rng.choices(range(5), weights=[4, 3, 1, 2, 1])[0]
    if shape == 0:
        verb, (_, motion) = rng.choice(list(TRANSITIVE_VERBS.items()))
        parts = [_subject(rng), verb, _object(rng)]
        if rng.random() < 0.7:
            parts.append(_place_phrase(rng, motion))
    elif shape == 1:
        verb, (_, motion) = rng.choice(list(INTRANSITIVE_VERBS.items()))
        parts = [_subject(rng), verb]
        if rng.random() < 0.4:
            parts.append(rng.choice(ADVERBS))
        if rng.random() < 0.8:
            parts.append(_place_phrase(rng, motion))
    elif shape == 2:
        verb = rng.choice(list(TRANSITIVE_VERBS))
        parts = [f"in the {rng.choice(PLACES)},", _subject(rng), verb, _object(rng)]
    elif shape == 3:
        verb = rng.choice(list(TRANSITIVE_VERBS))
        verb2, (_, motion) = rng.choice(list(INTRANSITIVE_VERBS.items()))
        parts = [_subject(rng), verb, _object(rng), "and", _subject(rng), verb2]
        if rng.random() < 0.5:
            parts.append(_place_phrase(rng, motion))
    else:
        _, (verb, motion) = rng.choice(list(INTRANSITIVE_VERBS.items()))
        parts = [_subject(rng), "and", _subject(rng), verb]
        if rng.random() < 0.7:
            parts.append(_place_phrase(rng, motion))
    return " ".join(parts) + "."


def prompt_text() -> str:
    """The prompt ``"S:"`` (prepend BOS when encoding it for the model)."""
    return "S:"


def document(sentence: str) -> str:
    """The training document for a sentence: ``"S: " + sentence``."""
    return f"{prompt_text()} {sentence}"


_WORD = re.compile(r"[A-Za-z]+")


def _body(text: str) -> str:
    text = text.strip()
    if text.startswith(prompt_text()):
        text = text[len(prompt_text()):].strip()
    return text


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (punctuation dropped; a leading ``"S:"`` ignored)."""
    return [w.lower() for w in _WORD.findall(_body(text))]


def in_vocabulary(text: str) -> bool:
    """Whether every word of ``text`` is in :data:`VOCABULARY`."""
    return all(w in VOCABULARY for w in words(text))


def _check_keywords(keywords) -> list[str]:
    if isinstance(keywords, str):
        raise TypeError("keywords must be a collection of words, not one string "
                        "(write ('dog', 'park') rather than 'dog park')")
    return [k.lower() for k in keywords]


def keyword_coverage(text: str, keywords) -> float:
    """Fraction of ``keywords`` that occur as whole words in ``text`` (1.0 if none)."""
    keys = _check_keywords(keywords)
    if not keys:
        return 1.0
    present = set(words(text))
    return sum(k in present for k in keys) / len(keys)


def satisfies_keywords(text: str, keywords) -> bool:
    """Whether every keyword occurs as a whole word in ``text``."""
    return keyword_coverage(text, keywords) == 1.0


_WELL_FORMED = re.compile(r"[a-z]+(,? [a-z]+)*\.")


def is_well_formed(text: str) -> bool:
    """One lower-case sentence of vocabulary words separated by single spaces (commas
    allowed), ending with one full stop. A leading ``"S:"`` and surrounding white space are
    ignored. It checks the vocabulary, not the grammar."""
    body = _body(text)
    return bool(_WELL_FORMED.fullmatch(body)) and in_vocabulary(body)


def _alternatives(words) -> str:
    return "(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + ")"


def _grammar() -> re.Pattern:
    """The five sentence shapes of :func:`generate_sentence` as one regular expression."""
    adj, anim, thing, place = (_alternatives(w) for w in (ADJECTIVES, ANIMATES, THINGS, PLACES))
    vt, vi = _alternatives(TRANSITIVE_VERBS), _alternatives(INTRANSITIVE_VERBS)
    vi_plural = _alternatives({plural for plural, _ in INTRANSITIVE_VERBS.values()})
    subject = f"the (?:{adj} )?{anim}"
    obj = f"(?:a|an|the) (?:{adj} )?{thing}"
    where = f"(?:to|{'|'.join(_STATIC_PREPOSITIONS)}) the {place}"
    shapes = [f"{subject} {vt} {obj}(?: {where})?",
              f"{subject} {vi}(?: {_alternatives(ADVERBS)})?(?: {where})?",
              f"in the {place}, {subject} {vt} {obj}",
              f"{subject} {vt} {obj} and {subject} {vi}(?: {where})?",
              f"{subject} and {subject} {vi_plural}(?: {where})?"]
    return re.compile("(?:" + "|".join(shapes) + r")\.")


_GRAMMAR = _grammar()


def is_grammatical(text: str) -> bool:
    """Whether ``text`` (a leading ``"S:"`` and white space ignored) is one sentence of the
    grammar's five shapes: word order, articles and prepositions, not only the vocabulary
    (:func:`is_well_formed`). A fluency check for constrained generation."""
    return bool(_GRAMMAR.fullmatch(_body(text)))


def _keyword_triple(rng: random.Random) -> tuple[tuple[str, str, str], str]:
    """Three keywords from different roles, and a sentence of the grammar that uses them."""
    kind = rng.randrange(4)
    subject = rng.choice(ANIMATES)
    thing = rng.choice(THINGS)
    place = rng.choice(PLACES)
    if kind == 0:  # animal/person, thing, place
        verb, (_, motion) = rng.choice(list(TRANSITIVE_VERBS.items()))
        prep = "to" if motion else rng.choice(_STATIC_PREPOSITIONS)
        article = "an" if thing[0] in _VOWELS else "a"
        return (subject, thing, place), f"the {subject} {verb} {article} {thing} {prep} the {place}."
    if kind == 1:  # animal/person, verb, place
        verb, (_, motion) = rng.choice(list(INTRANSITIVE_VERBS.items()))
        prep = "to" if motion else rng.choice(_STATIC_PREPOSITIONS)
        return (subject, verb, place), f"the {subject} {verb} {prep} the {place}."
    if kind == 2:  # adjective, thing, place
        adjective = rng.choice(ADJECTIVES)
        verb = rng.choice(list(TRANSITIVE_VERBS))
        article = "an" if adjective[0] in _VOWELS else "a"
        return (adjective, thing, place), f"in the {place}, the {subject} {verb} {article} {adjective} {thing}."
    # two animals/people and a thing
    other = rng.choice([a for a in ANIMATES if a != subject])
    verb = rng.choice(list(TRANSITIVE_VERBS))
    verb2 = rng.choice(list(INTRANSITIVE_VERBS))
    article = "an" if thing[0] in _VOWELS else "a"
    return (subject, thing, other), f"the {subject} {verb} {article} {thing} and the {other} {verb2}."


def keyword_sets(n: int = 100, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` keyword triples, each jointly satisfiable by the grammar (see
    :func:`witness_sentences`): e.g. ``("dog", "ball", "park")``, ``("cat", "sleeps",
    "garden")``, ``("red", "kite", "beach")`` or ``("girl", "book", "horse")``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(seed)
    return [_keyword_triple(rng)[0] for _ in range(n)]


def witness_sentences(n: int = 100, seed: int = 0) -> list[str]:
    """For ``keyword_sets(n, seed)``, a sentence of the grammar using each triple."""
    rng = random.Random(seed)
    return [_keyword_triple(rng)[1] for _ in range(n)]


def score(texts, weights=None, keywords=None) -> dict[str, float]:
    """Metrics of the samples of one prompt: ``well_formed``, the share of well-formed
    sentences, and with ``keywords`` ``keywords_satisfied``, the share using every keyword.
    With ``weights`` (the normalised weights of SMC particles) the shares are weighted."""
    texts = list(texts)
    if weights is not None and len(weights) != len(texts):
        raise ValueError(f"got {len(weights)} weights for {len(texts)} texts")

    def share(flags):
        if weights is None:
            return sum(flags) / len(flags) if flags else 0.0
        return float(sum(float(w) for w, f in zip(weights, flags) if f))

    out = {"well_formed": float(share([is_well_formed(t) for t in texts]))}
    if keywords:
        out["keywords_satisfied"] = float(share([satisfies_keywords(t, keywords) for t in texts]))
    return out
