"""Token shards: a flat little-endian token array (``.bin``) plus a JSON header.

``shards/train/<id>.bin`` holds the training tokens of a shard, ``shards/val/<id>.bin`` the
held-out tail of every document that ended in it. Both have a ``<id>.json`` header::

    {"format": "odin-shard", "version": 1, "id": "000003-1a2b3c4d5e", "split": "train",
     "dtype": "uint16", "count": 16384, "vocab_size": 2048, "tokenizer_sha256": "...",
     "sha256": "<of the .bin>", "sources": [{"hash": "...", "name": "...", "tokens": 812}]}

Tokens are uint16 while the vocabulary fits (<= 65536 ids), uint32 above. Documents are
separated by the tokenizer's ``<end>`` token. Files are written to a temp name and renamed;
the header goes last, so a header that exists describes a complete ``.bin``.

:func:`sample_windows` is the one way training windows are drawn from a shard: a pure
function of (seed, shard id, step within the shard), so a run resumed in the middle of a
shard sees exactly the windows an uninterrupted one would have seen.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from odin.fileio import write_bytes_atomic, write_text_atomic

FORMAT = "odin-shard"
VERSION = 1


class ShardError(ValueError):
    """A shard file that is missing, truncated or does not match its header."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_id(seq: int, tokens: np.ndarray) -> str:
    """Sequence number plus a content digest: a checkpoint naming a shard names its content."""
    return f"{seq:06d}-{hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()[:10]}"


def shard_paths(root: Path, split: str, sid: str) -> tuple[Path, Path]:
    return root / split / f"{sid}.bin", root / split / f"{sid}.json"


def write_shard(root: Path, split: str, sid: str, tokens: np.ndarray, *, vocab_size: int,
                tokenizer_sha256: str, sources: Iterable[dict[str, Any]]) -> Path:
    """Write ``<root>/<split>/<sid>.bin`` and its header (both atomically); returns the .bin."""
    data = np.ascontiguousarray(tokens, dtype=token_dtype(vocab_size))
    if data.size and int(data.max()) >= vocab_size:
        raise ShardError(f"shard {sid}: token id {int(data.max())} >= vocab_size {vocab_size}")
    raw = data.tobytes()
    bin_path, header_path = shard_paths(root, split, sid)
    write_bytes_atomic(bin_path, raw)
    header = {"format": FORMAT, "version": VERSION, "id": sid, "split": split, "dtype": data.dtype.name,
              "count": int(data.size), "vocab_size": int(vocab_size), "tokenizer_sha256": tokenizer_sha256,
              "sha256": hashlib.sha256(raw).hexdigest(), "sources": list(sources)}
    write_text_atomic(header_path, json.dumps(header, indent=1) + "\n")
    return bin_path


@dataclass(frozen=True)
class Shard:
    id: str
    split: str
    tokens: np.ndarray  # 1-D, uint16 or uint32 (read-only memory map)
    header: dict[str, Any]


def read_shard(root: Path, split: str, sid: str, *, tokenizer_sha256: str | None = None,
               verify: bool = False) -> Shard:
    """Open a shard, checking its header against the file (and the tokenizer, if given)."""
    bin_path, header_path = shard_paths(root, split, sid)
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"shard header missing: {header_path}") from None
    except (OSError, ValueError) as error:
        raise ShardError(f"{header_path}: unreadable header ({error})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ShardError(f"{header_path}: not an {FORMAT} v{VERSION} header")
    if tokenizer_sha256 is not None and header.get("tokenizer_sha256") != tokenizer_sha256:
        raise ShardError(f"{header_path}: written with another tokenizer than the pipeline's")
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    count = int(header["count"])
    if not bin_path.is_file() or bin_path.stat().st_size != count * dtype.itemsize:
        raise ShardError(f"{bin_path}: expected {count} tokens of {dtype.name} "
                         f"({count * dtype.itemsize} bytes)")
    tokens = np.fromfile(bin_path, dtype=dtype) if count else np.zeros(0, dtype)
    if verify and hashlib.sha256(tokens.tobytes()).hexdigest() != header.get("sha256"):
        raise ShardError(f"{bin_path}: content does not match the header's sha256")
    return Shard(sid, split, tokens, header)


def shard_seed(sid: str) -> int:
    """A shard id as an integer seed for its window sampling."""
    return int(hashlib.sha256(sid.encode("utf-8")).hexdigest()[:15], 16)


def sample_windows(tokens: np.ndarray, sid: str, seed: int, step: int, batch: int, seq_len: int) -> np.ndarray:
    """``batch`` windows of ``seq_len + 1`` tokens (int32) for step ``step`` of shard ``sid``.

    Starting offsets are uniform over the shard; a shard shorter than a window is an error
    (train it with :func:`padded_window`)."""
    n = int(tokens.shape[0])
    if n < seq_len + 1:
        raise ShardError(f"shard {sid} has {n} tokens, fewer than one window of {seq_len + 1}")
    rng = np.random.default_rng([seed, shard_seed(sid), step])
    starts = rng.integers(0, n - seq_len, size=batch)
    index = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return tokens[index].astype(np.int32)


def padded_window(tokens: np.ndarray, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """For a shard shorter than one window: the whole shard padded to ``seq_len + 1`` tokens
    and the loss mask [seq_len] that counts only its real targets (so even a two-token
    document left over at the end of a stream gets trained, never stranded)."""
    n = int(tokens.shape[0])
    window = np.full(seq_len + 1, pad_id, np.int32)
    window[:n] = tokens
    mask = np.zeros(seq_len, np.uint8)
    mask[: n - 1] = 1
    return window, mask


def eval_windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows of ``seq_len + 1`` tokens covering ``tokens`` (the last,
    shorter remainder is dropped; a set shorter than one window gives one short window)."""
    n = int(tokens.shape[0])
    if n < 2:
        return np.zeros((0, 2), np.int32)
    if n < seq_len + 1:
        return tokens[None, :].astype(np.int32)
    rows = (n - 1) // seq_len
    index = np.arange(rows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return tokens[index].astype(np.int32)
