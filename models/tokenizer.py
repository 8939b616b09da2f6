"""Tokenizers that know each token's bytes (constraints are compiled over bytes)."""

from __future__ import annotations

import functools
import re
from pathlib import Path


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of the byte-level BPE alphabet: printable bytes map to themselves, the rest
    to code points from 256 upwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[chr(b)] = b
        else:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class Tokenizer:
    """A Hugging Face tokenizer plus the byte string of every token id.

    ``token_bytes[i]`` is what token ``i`` adds to the decoded byte stream; special tokens
    (EOS, padding, ...) add nothing and are listed in ``special_ids``. ``vocab_size`` is the
    model's vocabulary (ids past the tokenizer's own are padding rows with no bytes); a
    tokenizer with MORE tokens than ``vocab_size`` is refused (its ids would not fit the model).

    Tokenizers compare equal (and hash equal) when their token bytes, special ids, EOS/BOS and
    underlying tokenizer definition agree: a model loaded twice is the same static jit argument.
    """

    def __init__(self, hf_tokenizer, vocab_size: int | None = None, eos_id: int | None = None):
        self.hf = hf_tokenizer
        size = len(hf_tokenizer)
        if vocab_size is not None and size > int(vocab_size):
            from .architectures.config import CheckpointError

            raise CheckpointError(
                f"the tokenizer has {size} tokens but the model's vocabulary (vocab_size in config.json) has "
                f"{int(vocab_size)}: ids {int(vocab_size)}..{size - 1} cannot be fed to the model; use the tokenizer "
                "saved with this model, or resize the model's embeddings to the tokenizer")
        self.vocab_size = int(vocab_size or size)
        self.eos_id = hf_tokenizer.eos_token_id if eos_id is None else int(eos_id)
        self.bos_id = hf_tokenizer.bos_token_id
        self.special_ids = frozenset(int(i) for i in hf_tokenizer.all_special_ids)
        self.token_bytes = self._token_bytes()
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        definition = backend.to_str() if backend is not None else repr(type(hf_tokenizer))
        self._definition = hash((tuple(self.token_bytes), definition))  # computed once: O(V)

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> "Tokenizer":
        """Load the tokenizer files of a local directory (tokenizer.json, tokenizer_config.json, ...).

        A corrupt or unreadable file is one :class:`CheckpointError` naming it.
        """
        import json

        from transformers import AutoTokenizer

        from .architectures.config import CheckpointError

        path = Path(path)
        fix = "re-save the tokenizer with tokenizer.save_pretrained(path)"
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json"):
            file = path / name
            if file.exists():
                try:
                    json.loads(file.read_bytes().decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise CheckpointError(f"{file} is not valid JSON ({e}): the file is corrupt or truncated; "
                                          f"{fix}") from None
        try:
            hf = AutoTokenizer.from_pretrained(str(path))
        except Exception as e:  # noqa: BLE001 - transformers / tokenizers raise many kinds
            raise CheckpointError(f"cannot load the tokenizer in {path} ({type(e).__name__}: {e}): the tokenizer "
                                  f"files are incomplete or corrupt; {fix}") from None
        return cls(hf, **kwargs)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (a ``str`` of valid Unicode: no lone surrogates)."""
        check_text(text)
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids if int(i) < len(self.hf)]
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.token_bytes[int(i)] for i in ids)

    def _token_bytes(self) -> list[bytes]:
        pieces = self.hf.convert_ids_to_tokens(list(range(len(self.hf))))
        byte_level = self._is_byte_level()
        decoder = _byte_decoder()
        out = []
        for i, piece in enumerate(pieces):
            if i in self.special_ids or piece is None:
                out.append(b"")
            elif byte_level:
                out.append(bytes(decoder[c] for c in piece) if all(c in decoder for c in piece) else piece.encode())
            elif m := _BYTE_FALLBACK.match(piece):
                out.append(bytes([int(m.group(1), 16)]))
            else:  # SentencePiece style: '▁' marks a space
                out.append(piece.replace("\u2581", " ").encode("utf-8"))
        # the model's embedding table may be larger than the tokenizer (padding rows)
        out += [b""] * (self.vocab_size - len(out))
        return out[: self.vocab_size]

    def _is_byte_level(self) -> bool:
        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is None:
            return False
        return "ByteLevel" in repr(backend.decoder) or "ByteLevel" in repr(backend.pre_tokenizer)

    def _identity(self) -> tuple:
        return (self.vocab_size, self.eos_id, getattr(self, "eos_ids", None), self.bos_id, self.special_ids,
                self._definition)

    def __eq__(self, other) -> bool:
        return self is other or (type(other) is type(self) and other._identity() == self._identity())

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def check_text(text) -> str:
    """Raise :class:`InputError` unless ``text`` is a ``str`` that encodes to UTF-8."""
    from .interface import InputError

    if not isinstance(text, str):
        raise InputError(f"text to encode must be a str, got {type(text).__name__}"
                         + (" (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(text, bytes) else ""))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"the text is not valid Unicode: {text[e.start:e.end]!r} at position {e.start} is a lone "
                         "surrogate (often from reading bytes with errors='surrogateescape'); fix the input "
                         "or clean it with text.encode('utf-8', 'replace').decode('utf-8')") from None
    return text


class CharTokenizer:
    """A tokenizer for toy models: token i is one character of ``alphabet``; EOS is empty."""

    def __init__(self, alphabet: str, eos_id: int):
        self.alphabet = alphabet
        self.eos_id = eos_id
        self.bos_id = None
        self.vocab_size = len(alphabet)
        self.special_ids = frozenset({eos_id})
        self.token_bytes = [b"" if i == eos_id else c.encode() for i, c in enumerate(alphabet)]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        check_text(text)
        missing = sorted({c for c in text if c not in self.alphabet})
        if missing:
            from .interface import InputError

            raise InputError(f"characters {''.join(missing)!r} are not in this tokenizer's alphabet "
                             f"{self.alphabet!r}: use only those characters")
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(self.token_bytes[int(i)].decode() for i in ids)

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.token_bytes[int(i)] for i in ids)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (other.alphabet, other.eos_id) == (self.alphabet, self.eos_id)

    def __hash__(self) -> int:
        return hash((self.alphabet, self.eos_id))

    def __repr__(self) -> str:
        return f"CharTokenizer({self.alphabet!r}, eos_id={self.eos_id})"
