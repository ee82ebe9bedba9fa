"""Tokenizers: a fixed character vocabulary for reasoning tasks and byte-level BPE for text.

Both kinds share one interface (``encode``, ``decode``, ``pad_id``, ``bos_id``,
``end_id``, ``vocab_size``, ``save``, ``load``) and are saved as a
``tokenizer.json``; :func:`load_tokenizer` tells them apart.

Character vocabulary (ids are part of the checkpoint format — append, never reorder):

====== =====================================================================
ids    tokens
====== =====================================================================
0-2    ``<pad>`` ``<bos>`` ``<end>``
3-12   digits ``0``-``9``
13-38  ``a``-``z``
39-64  ``A``-``Z``
65-101 space, newline, tab, ``+ - * / % = ( ) [ ] { } < > , . : ; ' " _ ! ? # & | ^ ~`` and
       backtick, ``@ $ \\ × ÷``
====== =====================================================================
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from odin.fileio import write_text_atomic

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
END_TOKEN = "<end>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, END_TOKEN)

CHAR_SYMBOLS: tuple[str, ...] = (
    " ", "\n", "\t",
    "+", "-", "*", "/", "%", "=",
    "(", ")", "[", "]", "{", "}", "<", ">",
    ",", ".", ":", ";", "'", '"',
    "_", "!", "?", "#", "&", "|", "^", "~",
    "`", "@", "$", "\\",
    "\u00d7", "\u00f7",  # × ÷
)

DEFAULT_CHAR_VOCAB: tuple[str, ...] = (
    SPECIAL_TOKENS
    + tuple(string.digits)
    + tuple(string.ascii_lowercase)
    + tuple(string.ascii_uppercase)
    + CHAR_SYMBOLS
)
CHAR_VOCAB_SIZE = len(DEFAULT_CHAR_VOCAB)

CHAR_KIND = "char"
CHAR_FORMAT_VERSION = 1


class TokenizerFileError(ValueError):
    """A tokenizer.json that exists but cannot be understood."""


class Tokenizer(Protocol):
    """What the data and training code needs from any tokenizer."""

    @property
    def pad_id(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def end_id(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...


def _json_target(path: str | os.PathLike[str]) -> Path:
    """A directory means "tokenizer.json inside it"; anything else is the file itself."""
    target = Path(path)
    if target.is_dir():
        return target / "tokenizer.json"
    return target


class CharTokenizer:
    """One token per character over a fixed, documented vocabulary (see module docstring)."""

    def __init__(self, vocab: Sequence[str] = DEFAULT_CHAR_VOCAB) -> None:
        vocab = tuple(vocab)
        if vocab[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(
                f"char vocab must start with {list(SPECIAL_TOKENS)}, got {list(vocab[:3])}"
            )
        for position, token in enumerate(vocab[len(SPECIAL_TOKENS):], start=len(SPECIAL_TOKENS)):
            if len(token) != 1:
                raise ValueError(
                    f"char vocab entry {position} must be a single character, got {token!r}"
                )
        if len(set(vocab)) != len(vocab):
            raise ValueError("char vocab contains duplicate entries")
        self._vocab = vocab
        self._id_of = {token: index for index, token in enumerate(vocab)}

    @property
    def vocab(self) -> tuple[str, ...]:
        return self._vocab

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def encode(self, text: str) -> list[int]:
        id_of = self._id_of
        try:
            return [id_of[char] for char in text]
        except KeyError:
            # Slow path only on failure, to report where the bad character sits.
            for position, char in enumerate(text):
                if char not in id_of:
                    raise ValueError(
                        f"character {char!r} (U+{ord(char):04X}) at position {position} "
                        f"is not in the char tokenizer vocabulary"
                    ) from None
            raise

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        pieces: list[str] = []
        n_special = len(SPECIAL_TOKENS)
        for token_id in ids:
            token_id = int(token_id)
            if not 0 <= token_id < len(self._vocab):
                raise ValueError(
                    f"token id {token_id} is out of range for a vocabulary of {len(self._vocab)}"
                )
            if token_id < n_special and skip_special:
                continue
            pieces.append(self._vocab[token_id])
        return "".join(pieces)

    def to_json(self) -> str:
        payload = {
            "odin_kind": CHAR_KIND,
            "format_version": CHAR_FORMAT_VERSION,
            "vocab": list(self._vocab),
        }
        return json.dumps(payload, ensure_ascii=False, indent=1) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(_json_target(path), self.to_json())

    @classmethod
    def from_json_dict(cls, data: dict, source: str = "<json>") -> "CharTokenizer":
        if data.get("odin_kind") != CHAR_KIND:
            raise TokenizerFileError(f"{source}: 'odin_kind' must be {CHAR_KIND!r}")
        version = data.get("format_version")
        if version != CHAR_FORMAT_VERSION:
            raise TokenizerFileError(
                f"{source}: unsupported char tokenizer format_version {version!r} "
                f"(this version of odin reads {CHAR_FORMAT_VERSION})"
            )
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(token, str) for token in vocab):
            raise TokenizerFileError(f"{source}: 'vocab' must be a list of strings")
        try:
            return cls(vocab)
        except ValueError as error:
            raise TokenizerFileError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CharTokenizer":
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, CharTokenizer):
            raise TokenizerFileError(f"{_json_target(path)} holds a BPE tokenizer, not a char one")
        return tokenizer


class BPETokenizer:
    """Byte-level BPE from the HF ``tokenizers`` library; any text encodes without unknowns."""

    def __init__(self, hf_tokenizer: "object") -> None:
        self._hf = hf_tokenizer
        ids = {token: hf_tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, token_id in ids.items() if token_id is None]
        if missing:
            raise ValueError(f"BPE tokenizer lacks the special tokens {missing}")
        self._pad_id, self._bos_id, self._end_id = (ids[token] for token in SPECIAL_TOKENS)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
    ) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        special_tokens = list(special_tokens)
        missing = [token for token in SPECIAL_TOKENS if token not in special_tokens]
        if missing:
            raise ValueError(f"special_tokens must include {list(SPECIAL_TOKENS)}; missing {missing}")
        byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
        smallest = len(byte_alphabet) + len(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < smallest:
            raise ValueError(
                f"vocab_size must be an integer >= {smallest} "
                f"(256 byte tokens + {len(special_tokens)} special tokens), got {vocab_size!r}"
            )
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            initial_alphabet=byte_alphabet,
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def end_id(self) -> int:
        return self._end_id

    @property
    def vocab_size(self) -> int:
        return int(self._hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        id_list = [int(token_id) for token_id in ids]
        vocab_size = self.vocab_size
        for token_id in id_list:
            if not 0 <= token_id < vocab_size:
                raise ValueError(
                    f"token id {token_id} is out of range for a vocabulary of {vocab_size}"
                )
        return self._hf.decode(id_list, skip_special_tokens=skip_special)

    def to_json(self) -> str:
        return self._hf.to_str()

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(_json_target(path), self.to_json())

    @classmethod
    def from_json_str(cls, text: str, source: str = "<json>") -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(text)
        except Exception as error:  # the library raises a bare Exception on bad input
            raise TokenizerFileError(f"{source}: not a valid HF tokenizer: {error}") from None
        try:
            return cls(hf)
        except ValueError as error:
            raise TokenizerFileError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BPETokenizer":
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, BPETokenizer):
            raise TokenizerFileError(f"{_json_target(path)} holds a char tokenizer, not a BPE one")
        return tokenizer


def tokenizer_from_json(text: str, source: str = "<json>") -> CharTokenizer | BPETokenizer:
    """Parse the contents of a tokenizer.json, whichever kind it is."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise TokenizerFileError(f"{source}: invalid JSON ({error})") from None
    if not isinstance(data, dict):
        raise TokenizerFileError(f"{source}: expected a JSON object at the top level")
    if "odin_kind" in data:
        return CharTokenizer.from_json_dict(data, source)
    if "model" in data:
        return BPETokenizer.from_json_str(text, source)
    raise TokenizerFileError(
        f"{source}: not a tokenizer file (neither an 'odin_kind' nor a 'model' key)"
    )


def load_tokenizer(path: str | os.PathLike[str]) -> CharTokenizer | BPETokenizer:
    """Load a tokenizer.json (or a directory holding one), recognising its kind."""
    target = _json_target(path)
    if not target.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {target}")
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TokenizerFileError(f"{target}: not UTF-8 text ({error})") from None
    return tokenizer_from_json(text, str(target))
