"""ODIN tokenizers as Hugging Face ``tokenizer.json`` files and back, built with the
``tokenizers`` library.

* The char tokenizer becomes a ``WordLevel`` model over its vocabulary (ids unchanged), a
  pre-tokenizer that isolates every character and a ``Fuse`` decoder (characters are joined
  with nothing between them). A character outside the vocabulary is an error there as in
  ODIN (there is no unknown token).
* The BPE tokenizer already is a ``tokenizers`` file; it is copied.

Both get a post-processor that puts ``<bos>`` in front of an encoded text, so
``tokenizer(prompt)`` in transformers gives what ``odin-infer`` feeds the model
(``[<bos>] + encode(prompt)``); ODIN itself encodes without special tokens and never sees it.
On import the post-processor is dropped again and a ``WordLevel`` file of single characters
with ``<pad> <bos> <end>`` first becomes ODIN's char tokenizer once more.
"""
from __future__ import annotations

import json
from typing import Any

from odin.tokenizers import (BOS_TOKEN, END_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, BPETokenizer, CharTokenizer,
                             TokenizerFileError)

# special_tokens_map / tokenizer_config keys for ODIN's three special tokens
SPECIAL_ROLES: dict[str, str] = {"pad_token": PAD_TOKEN, "bos_token": BOS_TOKEN, "eos_token": END_TOKEN}
_EVERY_CHARACTER = r"[\s\S]"


def hf_tokenizer(tokenizer: CharTokenizer | BPETokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` that encodes and decodes as ``tokenizer`` does, adding <bos>."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    if isinstance(tokenizer, CharTokenizer):
        vocab = {token: index for index, token in enumerate(tokenizer.vocab)}
        hf = Tokenizer(models.WordLevel(vocab, unk_token=None))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(_EVERY_CHARACTER), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    else:
        hf = Tokenizer.from_str(tokenizer.to_json())
    hf.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, tokenizer.bos_id)])
    return hf


def tokenizer_config(context: int | None) -> dict[str, Any]:
    """``tokenizer_config.json``: transformers' generic fast tokenizer over tokenizer.json (a
    model-specific class would rebuild its own pipeline) and ODIN's special tokens."""
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              "add_bos_token": True, **SPECIAL_ROLES}
    if context is not None:
        config["model_max_length"] = context
    return config


def odin_tokenizer(text: str, source: str) -> CharTokenizer | BPETokenizer:
    """The ODIN tokenizer of a HF ``tokenizer.json`` (its text); TokenizerFileError naming
    ``source`` when it is not one or lacks ODIN's special tokens."""
    from tokenizers import Tokenizer

    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise TokenizerFileError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerFileError(f"{source}: not a Hugging Face tokenizers file (no 'model' object)")
    char_vocab = _char_vocab(data)
    if char_vocab is not None:
        try:
            return CharTokenizer(char_vocab)
        except ValueError as error:
            raise TokenizerFileError(f"{source}: {error}") from None
    try:
        hf = Tokenizer.from_str(text)
    except Exception as error:  # the library raises a bare Exception on bad input
        raise TokenizerFileError(f"{source}: not a valid Hugging Face tokenizer ({error})") from None
    missing = [token for token in SPECIAL_TOKENS if hf.token_to_id(token) is None]
    if missing:
        raise TokenizerFileError(f"{source}: lacks the special tokens {', '.join(missing)} that ODIN uses for "
                                 f"padding, the start of a prompt and the end of an answer")
    hf.post_processor = None  # ODIN adds <bos> itself
    return BPETokenizer(hf)


def _char_vocab(data: dict[str, Any]) -> list[str] | None:
    """The vocabulary in id order when ``data`` is a char tokenizer as :func:`hf_tokenizer`
    writes it (WordLevel, one character per token after the three special tokens)."""
    model = data["model"]
    if model.get("type") != "WordLevel" or not isinstance(model.get("vocab"), dict):
        return None
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "Split" or (pre.get("pattern") or {}).get("Regex") != _EVERY_CHARACTER:
        return None
    by_id = sorted((index, token) for token, index in model["vocab"].items())
    if [index for index, _ in by_id] != list(range(len(by_id))):
        return None
    tokens = [token for _, token in by_id]
    if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or not all(len(t) == 1 for t in tokens[3:]):
        return None
    return tokens
