"""ODIN's tokenizers <-> the byte-level BPE vocabulary of a GGUF file (``tokenizer.ggml.model
= "gpt2"``), the one llama.cpp's ``gpt2`` architecture reads.

llama.cpp stores every token as its *byte-level* text: the token's UTF-8 bytes, each byte
shown as one printable character (GPT-2's byte-to-character table: printable Latin-1 bytes
stand for themselves, the others for code points from U+0100 up). A prompt is split into
words by the GPT-2 regex, every word into those byte characters, and the merges join
neighbours by rank; a piece left over is looked up whole.

* The char tokenizer becomes a vocabulary of single characters in its own id order. ASCII
  characters are one byte, so they stay single symbols and need no merge; a character of
  several UTF-8 bytes (``×``, ``÷``) gets the merges that rebuild it from its bytes, so
  llama.cpp reads it as the one token ODIN does.
* The BPE tokenizer (HF ``tokenizers``, ByteLevel pre-tokenizer with the GPT-2 regex) is
  already this format: its vocabulary and merges are copied as they are.
* ``<pad>``, ``<bos>``, ``<end>`` (and any other special token) are control tokens, which
  llama.cpp never produces from prompt text. Rows of the embedding beyond the tokenizer
  (a vocab_size padded past the tokenizer) are ``[PAD<i>]`` tokens of type unused.

:func:`tokenizer_from_vocab` reads such a vocabulary back: a char vocabulary when the
special tokens lead and every other token is one character, a BPE tokenizer otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from odin.interchange.common import InterchangeError
from odin.tokenizers import SPECIAL_TOKENS, BPETokenizer, CharTokenizer

# gguf.TokenType values (the package is imported lazily by the caller; these are the format's)
NORMAL, CONTROL, UNUSED = 1, 3, 5
PAD_PREFIX = "[PAD"


class VocabError(InterchangeError):
    """A tokenizer that this GGUF vocabulary cannot express, or a GGUF vocabulary ODIN cannot read."""


@dataclass
class GGUFVocab:
    tokens: list[str]      # byte-level text, index = token id
    token_types: list[int]
    merges: list[str]      # "left right", highest priority first


@lru_cache(maxsize=1)
def byte_to_char() -> tuple[str, ...]:
    """GPT-2's table: byte value -> the printable character that stands for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {byte: chr(byte) for byte in printable}
    substitute = 0x100
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(substitute)
            substitute += 1
    return tuple(table[byte] for byte in range(256))


@lru_cache(maxsize=1)
def char_to_byte() -> dict[str, int]:
    return {char: byte for byte, char in enumerate(byte_to_char())}


def to_byte_level(text: str) -> str:
    table = byte_to_char()
    return "".join(table[byte] for byte in text.encode("utf-8"))


def from_byte_level(token: str) -> str | None:
    """The text a byte-level token stands for; None when it is not valid byte-level UTF-8."""
    table = char_to_byte()
    try:
        return bytes(table[char] for char in token).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def vocab_from_tokenizer(tokenizer: CharTokenizer | BPETokenizer, n_rows: int) -> GGUFVocab:
    """The GGUF vocabulary of ``tokenizer`` padded to the embedding's ``n_rows``."""
    if isinstance(tokenizer, CharTokenizer):
        vocab = _char_vocab(tokenizer)
    else:
        vocab = _bpe_vocab(tokenizer)
    if len(vocab.tokens) > n_rows:
        raise VocabError(f"the tokenizer has {len(vocab.tokens)} tokens but the model only {n_rows} embedding rows")
    for row in range(len(vocab.tokens), n_rows):
        vocab.tokens.append(f"{PAD_PREFIX}{row}]")
        vocab.token_types.append(UNUSED)
    return vocab


def _char_vocab(tokenizer: CharTokenizer) -> GGUFVocab:
    n_special = len(SPECIAL_TOKENS)
    tokens = list(SPECIAL_TOKENS)
    merges: list[str] = []
    for char in tokenizer.vocab[n_special:]:
        pieces = [byte_to_char()[byte] for byte in char.encode("utf-8")]
        # a character of several bytes: merge its bytes left to right back into one symbol
        for end in range(1, len(pieces)):
            merges.append(f"{''.join(pieces[:end])} {pieces[end]}")
        tokens.append("".join(pieces))
    return GGUFVocab(tokens=tokens, token_types=[CONTROL] * n_special + [NORMAL] * (len(tokens) - n_special),
                     merges=merges)


def _bpe_vocab(tokenizer: BPETokenizer) -> GGUFVocab:
    data = json.loads(tokenizer.to_json())
    model = data.get("model") or {}
    pre = data.get("pre_tokenizer") or {}
    if model.get("type") != "BPE":
        raise VocabError(f"the tokenizer's model is {model.get('type')!r}; GGUF's gpt2 vocabulary is BPE")
    if data.get("normalizer") is not None:
        raise VocabError("the tokenizer has a normalizer, which llama.cpp's gpt2 tokenizer does not apply")
    if not (pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")):
        raise VocabError("the tokenizer's pre-tokenizer is not byte-level with the GPT-2 regex and no prefix "
                         "space, which is what llama.cpp's gpt2 pre-tokenizer does")
    id_to_token: dict[int, str] = {int(i): token for token, i in model.get("vocab", {}).items()}
    special: set[int] = set()
    for added in data.get("added_tokens", []):
        id_to_token[int(added["id"])] = added["content"]
        if added.get("special"):
            special.add(int(added["id"]))
    n_tokens = tokenizer.vocab_size
    missing = [i for i in range(n_tokens) if i not in id_to_token]
    if missing:
        raise VocabError(f"the tokenizer has no token with id {missing[0]} (ids must be 0..{n_tokens - 1})")
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges", [])]
    return GGUFVocab(tokens=[id_to_token[i] for i in range(n_tokens)],
                     token_types=[CONTROL if i in special else NORMAL for i in range(n_tokens)], merges=merges)


def tokenizer_from_vocab(vocab: GGUFVocab) -> CharTokenizer | BPETokenizer:
    """ODIN's tokenizer for a GGUF vocabulary (trailing unused ``[PAD<i>]`` rows dropped)."""
    tokens, types = list(vocab.tokens), list(vocab.token_types)
    while tokens and types[-1] == UNUSED and tokens[-1].startswith(PAD_PREFIX):
        tokens.pop()
        types.pop()
    for token in SPECIAL_TOKENS:
        if token not in tokens:
            raise VocabError(f"the vocabulary has no {token!r} token; ODIN's tokenizers need "
                             f"{', '.join(SPECIAL_TOKENS)} as control tokens")
    n_special = len(SPECIAL_TOKENS)
    texts = [from_byte_level(token) for token in tokens[n_special:]]
    if tuple(tokens[:n_special]) == SPECIAL_TOKENS and all(text is not None and len(text) == 1 for text in texts):
        try:
            return CharTokenizer([*SPECIAL_TOKENS, *texts])  # type: ignore[list-item]
        except ValueError as error:
            raise VocabError(f"a character vocabulary ODIN cannot use: {error}") from None
    return _bpe_tokenizer(tokens, types, vocab.merges)


def _bpe_tokenizer(tokens: list[str], types: list[int], merges: list[str]) -> BPETokenizer:
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    added = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (token, kind) in enumerate(zip(tokens, types)) if kind == CONTROL]
    if len({token for token in tokens}) != len(tokens):
        raise VocabError("the vocabulary holds the same token text twice")
    pairs = []
    for merge in merges:
        parts = merge.split(" ")
        if len(parts) != 2:
            raise VocabError(f"merge {merge!r} is not two tokens separated by one space")
        pairs.append(parts)
    data = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level}, "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(tokens)}, "merges": pairs},
    }
    try:
        return BPETokenizer.from_json_str(json.dumps(data), "the GGUF vocabulary")
    except ValueError as error:
        raise VocabError(str(error)) from None
