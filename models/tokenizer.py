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
    (EOS, padding, ...) add nothing and are listed in ``special_ids``.
    """

    def __init__(self, hf_tokenizer, vocab_size: int | None = None, eos_id: int | None = None):
        self.hf = hf_tokenizer
        self.vocab_size = int(vocab_size or len(hf_tokenizer))
        self.eos_id = hf_tokenizer.eos_token_id if eos_id is None else int(eos_id)
        self.bos_id = hf_tokenizer.bos_token_id
        self.special_ids = frozenset(int(i) for i in hf_tokenizer.all_special_ids)
        self.token_bytes = self._token_bytes()

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> "Tokenizer":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(Path(path))), **kwargs)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
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

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


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
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(self.token_bytes[int(i)].decode() for i in ids)

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.token_bytes[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer({self.alphabet!r}, eos_id={self.eos_id})"
