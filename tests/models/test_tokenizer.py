import numpy as np
import pytest

from genppl.models import CharTokenizer, Tokenizer
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
