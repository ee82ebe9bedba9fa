"""Stage 3, tokenize: one fixed BPE tokenizer, clean texts -> token shards.

The tokenizer is ``FOLDER/tokenizer.json``. It is trained once (byte-level BPE from
:class:`odin.tokenizers.BPETokenizer`) on the clean texts waiting here as soon as they
hold ``[tokenizer].min_chars`` characters, or copied from ``[tokenizer].path``. From then
on it never changes: its SHA-256 is recorded in pipeline.db and in every shard header, and
a start-up with a different file is refused. Items that arrive before it exists wait here.

Each document is encoded and split: the last ``val_fraction`` of its tokens is held out
for validation, the rest is for training (``<bos>`` first, as generation prompts start);
each part ends with ``<end>``. Training tokens
from consecutive documents are packed into shards of exactly ``shard_tokens``; a document
may span two shards. A shard's validation file holds the held-out tails of the documents
that end in it. When the pipeline goes idle the part-filled rest becomes a shard too, so a
single file dropped in gets trained (a rest shorter than one window is trained padded).

Shard files are written first (temp + rename), then one transaction records the shard, its
(item, offset, count) spans and the items that are fully packed. Shard files that no
transaction recorded (a crash in between) are removed at start-up and written again.
"""
from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from odin.pipeline.config import PipelineConfig, PipelinePaths
from odin.pipeline.errors import StageError
from odin.pipeline.shards import shard_id, write_shard
from odin.pipeline.store import Store
from odin.tokenizers import BPETokenizer, CharTokenizer, TokenizerFileError, load_tokenizer


class PipelineStateError(RuntimeError):
    """The folder's state contradicts itself or the config; the pipeline cannot go on safely."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class _Doc:
    key: str
    name: str
    train: np.ndarray  # every training token of the document (int64), <end> included
    val: np.ndarray  # its held-out tail, <end> included
    packed: int  # training tokens already in recorded shards


class TokenizeStage:
    def __init__(self, paths: PipelinePaths, config: PipelineConfig, store: Store,
                 on_event: Callable[[str, str, str], None],
                 on_item_error: Callable[[sqlite3.Row, StageError], None]) -> None:
        self.paths, self.config, self.store = paths, config, store
        self.on_event = on_event  # (level, name, message)
        self.on_item_error = on_item_error
        self.tok: Optional[BPETokenizer | CharTokenizer] = None
        self.tok_sha: Optional[str] = None
        self.waiting: Optional[str] = None  # why nothing can move on right now
        self._docs: dict[str, _Doc] = {}

    # ------------------------------------------------------------------ the tokenizer
    def load_existing(self) -> Optional[BPETokenizer | CharTokenizer]:
        """At start-up: the folder's tokenizer (copying the configured one in first, if
        set); checks it is the one the shards were written with."""
        target, configured = self.paths.tokenizer, self.config.tokenizer.path
        if configured:
            source = Path(configured).expanduser()
            if not source.is_absolute() and not self.config.source.startswith("<"):
                source = Path(self.config.source).resolve().parent / source
            if not source.is_file():
                raise PipelineStateError(f"[tokenizer].path: tokenizer file not found: {source}")
            if not target.exists():
                self._load(source)  # validates before copying
                shutil.copyfile(source, target.with_suffix(".json.tmp"))
                target.with_suffix(".json.tmp").replace(target)
            elif file_sha256(source) != file_sha256(target):
                raise PipelineStateError(
                    f"[tokenizer].path ({source}) differs from {target}, which this folder's shards and "
                    f"model were made with; the tokenizer of a folder never changes (use a new folder)")
        if not target.exists():
            recorded = self.store.get_meta("tokenizer_sha256")
            if recorded:
                raise PipelineStateError(f"{target} is missing, but shards were written with tokenizer "
                                         f"{recorded[:12]}...: restore the file (a copy is in every checkpoint)")
            return None
        self._load(target)
        return self.tok

    def _load(self, path: Path) -> None:
        try:
            tok = load_tokenizer(path)
        except (TokenizerFileError, OSError) as error:
            raise PipelineStateError(f"cannot use tokenizer {path}: {error}") from None
        sha = file_sha256(path)
        if path == self.paths.tokenizer:
            recorded = self.store.get_meta("tokenizer_sha256")
            if recorded and recorded != sha:
                raise PipelineStateError(f"{path} changed after shards were written with it "
                                         f"(sha256 {recorded[:12]}... then, {sha[:12]}... now); restore it")
            if not recorded:
                self.store.set_meta("tokenizer_sha256", sha)
            self.tok, self.tok_sha = tok, sha
            if tok.vocab_size != self.config.tokenizer.vocab_size and not self.config.tokenizer.path:
                self.on_event("warn", "tokenizer", f"{path.name} has {tok.vocab_size} tokens; "
                              f"[tokenizer].vocab_size = {self.config.tokenizer.vocab_size} is ignored "
                              f"(the tokenizer is fixed once made)")

    def _waiting_items(self) -> list[sqlite3.Row]:
        return self.store.query("SELECT * FROM items WHERE stage = 'tokenize' AND status != 'quarantined' "
                                "ORDER BY created, hash")

    def try_train(self) -> bool:
        """Train the tokenizer if enough clean text waits; True once a tokenizer exists."""
        if self.tok is not None:
            return True
        items = self._waiting_items()
        have = sum(int(row["chars"] or 0) for row in items)
        need = self.config.tokenizer.min_chars
        if have < need:
            self._set_waiting(items, f"waiting for the tokenizer: {have:,} of {need:,} characters of text "
                                     f"([tokenizer].min_chars)")
            return False
        texts = []
        for row in sorted(items, key=lambda row: row["hash"]):  # sorted: the same texts, the same tokenizer
            try:
                texts.append(self._clean_text(row))
            except StageError as error:
                self.on_item_error(row, error)
        tok = BPETokenizer.train((t for t in texts if t), self.config.tokenizer.vocab_size)
        tok.save(self.paths.tokenizer)  # atomic: after a crash it exists whole or not at all
        self._load(self.paths.tokenizer)
        self.on_event("info", "tokenizer", f"trained a {tok.vocab_size}-token BPE tokenizer on {len(texts)} "
                                           f"documents ({have:,} characters) -> {self.paths.tokenizer.name}")
        self.waiting = None
        return True

    def _set_waiting(self, items: list[sqlite3.Row], message: str) -> None:
        if message != self.waiting:
            with self.store.tx():
                for row in items:
                    if row["note"] != message:
                        self.store.update_item(row["hash"], note=message)
        self.waiting = message

    def _clean_text(self, row: sqlite3.Row) -> str:
        path = self.paths.clean / f"{row['hash']}.txt"
        try:
            return path.read_text(encoding="utf-8")
        except OSError as error:
            raise StageError("io-error", f"clean text {path.name} unreadable: {error}") from None

    # ------------------------------------------------------------------ packing
    def context(self) -> int:
        assert self.tok is not None
        return self.config.run_config(self.tok.vocab_size).model.context

    def _doc(self, row: sqlite3.Row) -> _Doc:
        doc = self._docs.get(row["hash"])
        if doc is None:
            assert self.tok is not None
            body = np.asarray(self.tok.encode(self._clean_text(row)), np.int64)
            n_val = int(len(body) * self.config.tokenizer.val_fraction)
            bos, end = np.array([self.tok.bos_id], np.int64), np.array([self.tok.end_id], np.int64)
            n_train = len(body) - n_val
            val = np.concatenate([body[n_train:], end]) if n_val else np.zeros(0, np.int64)
            # <bos> text <end>: how odin-infer and the dashboard's chat feed a prompt
            doc = _Doc(row["hash"], row["name"], np.concatenate([bos, body[:n_train], end]), val, 0)
            # packed is read once; afterwards only _cut changes it, and it updates the cache
            doc.packed = self.store.packed_tokens(row["hash"])
            self._docs[row["hash"]] = doc
        return doc

    def pack(self, flush: bool) -> list[str]:
        """Write every full shard the waiting documents make (and, with ``flush``, a last
        part-filled one); returns the new shard ids."""
        self.waiting = None
        docs: list[_Doc] = []
        for row in self._waiting_items():
            if row["status"] == "failed" and row["next_try"] > time.time():
                continue
            try:
                docs.append(self._doc(row))
            except StageError as error:
                self.on_item_error(row, error)
        made: list[str] = []
        # a shard needs 2 tokens (one target); shorter than a window it is trained padded
        size, minimum = self.config.tokenizer.shard_tokens, 2
        while True:
            available = sum(len(d.train) - d.packed for d in docs)
            if available >= size:
                made.append(self._cut(docs, size))
            elif flush and available >= minimum:
                made.append(self._cut(docs, available))
            else:
                break
            docs = [d for d in docs if d.packed < len(d.train)]
        if docs:
            left = sum(len(d.train) - d.packed for d in docs)
            self.waiting = f"{left:,} tokens wait for more text to fill a shard (or for the inbox to go idle)"
        return made

    def _cut(self, docs: list[_Doc], count: int) -> str:
        """Write one shard of ``count`` training tokens from the front of ``docs``; record it."""
        assert self.tok is not None and self.tok_sha is not None
        pieces, vals, spans, finished = [], [], [], []
        need = count
        for doc in docs:
            if need == 0:
                break
            take = min(need, len(doc.train) - doc.packed)
            pieces.append(doc.train[doc.packed:doc.packed + take])
            ends_here = doc.packed + take == len(doc.train)
            val_count = len(doc.val) if ends_here else 0
            if val_count:
                vals.append(doc.val)
            spans.append((doc, doc.packed, take, val_count))
            if ends_here:
                finished.append(doc)
            need -= take
        train = np.concatenate(pieces)
        val = np.concatenate(vals) if vals else np.zeros(0, np.int64)
        vocab = self.tok.vocab_size
        seq = self.store.next_shard_seq()
        sid = shard_id(seq, train.astype(np.uint32))
        sources = [{"hash": d.key, "name": d.name, "offset": off, "tokens": n, "val_tokens": v}
                   for d, off, n, v in spans]
        write_shard(self.paths.shards, "train", sid, train, vocab_size=vocab, tokenizer_sha256=self.tok_sha,
                    sources=sources)
        write_shard(self.paths.shards, "val", sid, val, vocab_size=vocab, tokenizer_sha256=self.tok_sha,
                    sources=[s for s in sources if s["val_tokens"]])
        full = self.config.train.steps_per_shard
        steps = full if count >= self.config.tokenizer.shard_tokens else \
            max(1, round(full * count / self.config.tokenizer.shard_tokens))
        with self.store.tx() as db:
            db.execute("INSERT INTO shards(id, seq, tokens, val_tokens, steps, status, created) "
                       "VALUES(?, ?, ?, ?, ?, 'pending', ?)", (sid, seq, len(train), len(val), steps, time.time()))
            db.executemany("INSERT INTO shard_items(shard, item, offset, count, val_count) VALUES(?, ?, ?, ?, ?)",
                           [(sid, d.key, off, n, v) for d, off, n, v in spans])
            for doc in finished:
                self.store.advance(doc.key, "train", tokens=len(doc.train), val_tokens=len(doc.val),
                                   note=None)
            for doc, off, n, _ in spans:
                if doc not in finished:
                    self.store.update_item(doc.key, status="pending",
                                           note=f"{off + n:,} of {len(doc.train):,} tokens in shards")
        for doc, off, n, _ in spans:
            doc.packed = off + n
        for doc in finished:
            self._docs.pop(doc.key, None)
        self.on_event("info", f"shard {sid}", f"{len(train):,} training + {len(val):,} held-out tokens "
                                   f"from {len(spans)} document{'s' if len(spans) != 1 else ''}, "
                                   f"{steps} step{'s' if steps != 1 else ''}")
        return sid

    def remove_unrecorded_shards(self) -> int:
        """Start-up: delete shard files that no transaction recorded (a crash between the
        rename and the commit); they are written again from the same documents."""
        known = {row["id"] for row in self.store.shards()}
        removed = 0
        for split in ("train", "val"):
            for path in (self.paths.shards / split).glob("*"):
                sid = path.name.split(".", 1)[0]
                if sid and sid not in known and path.suffix in (".bin", ".json"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
