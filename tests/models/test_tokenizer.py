import re

import numpy as np
import pytest

from genppl.models import CharTokenizer, InputError, Tokenizer
from genppl.models.architectures import CheckpointError
from tests.checkpoints import save_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    save_tokenizer(path)
    return Tokenizer.from_pretrained(path)


def test_token_bytes_concatenate_to_the_decoded_text(tokenizer):
    rng = np.random.default_rng(0)
    ordinary = [i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids]
    for _ in range(200):
        ids = rng.choice(ordinary, size=rng.integers(1, 12)).tolist()
        raw = tokenizer.decode_bytes(ids)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a token sequence may split a multi-byte character
        assert text == tokenizer.decode(ids)


def test_encode_round_trips_through_bytes(tokenizer):
    for text in ["the cat sat on the mat.", "Q: 12 + 7 = 19.", "  two  spaces\nnewline"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode_bytes(ids) == text.encode()


def test_special_tokens_have_no_bytes(tokenizer):
    assert tokenizer.eos_id in tokenizer.special_ids
    assert tokenizer.token_bytes[tokenizer.eos_id] == b""


def test_padding_rows_beyond_the_tokenizer(tmp_path):
    save_tokenizer(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path, vocab_size=500)
    assert len(tok.token_bytes) == 500 and tok.token_bytes[-1] == b""


def test_char_tokenizer():
    tok = CharTokenizer("$abc", eos_id=0)
    assert tok.encode("cab") == [3, 1, 2]
    assert tok.decode([3, 1, 0]) == "ca"
    assert tok.token_bytes[0] == b""


# ---- bad text and files (issue 11, cases 8, 9, 11) ---------------------------------------
@pytest.mark.parametrize("text, message", [
    ("ok \ud800 bad", "the text is not valid Unicode: '\\ud800' at position 3 is a lone surrogate"),
    (b"bytes", "text to encode must be a str, got bytes (decode bytes first"),
    (None, "text to encode must be a str, got NoneType"),
])
def test_encode_rejects_text_that_is_not_unicode(tokenizer, text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        tokenizer.encode(text)
    with pytest.raises(InputError, match=re.escape(message)):
        CharTokenizer("$abc", eos_id=0).encode(text)


def test_char_tokenizer_names_unknown_characters():
    with pytest.raises(InputError, match=re.escape("characters 'xz' are not in this tokenizer's alphabet")):
        CharTokenizer("$abc", eos_id=0).encode("abzx")


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path):
    save_tokenizer(tmp_path)
    size = len(Tokenizer.from_pretrained(tmp_path).hf)
    with pytest.raises(CheckpointError, match=f"the tokenizer has {size} tokens but the model's vocabulary "
                                              r"\(vocab_size in config.json\) has 100"):
        Tokenizer.from_pretrained(tmp_path, vocab_size=100)


def test_a_corrupt_tokenizer_file_names_the_file(tmp_path):
    save_tokenizer(tmp_path)
    data = (tmp_path / "tokenizer.json").read_bytes()
    (tmp_path / "tokenizer.json").write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'tokenizer.json'} is not valid JSON")):
        Tokenizer.from_pretrained(tmp_path)


def test_equal_tokenizers_compare_and_hash_equal(tmp_path, tokenizer):
    """A tokenizer is static jit data: two loads of the same files must be equal."""
    save_tokenizer(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again == tokenizer and hash(again) == hash(tokenizer)
    assert Tokenizer.from_pretrained(tmp_path, eos_id=3) != tokenizer
    assert CharTokenizer("$ab", 0) == CharTokenizer("$ab", 0) != CharTokenizer("$ab", 1)
