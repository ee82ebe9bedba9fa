"""pipeline.db: the state of every item and shard, in SQLite.

One row per item in ``items`` (the table the dashboard reads, docs/dashboard.md), keyed by
the item's identity: the SHA-256 of a file's bytes, of ``url:<URL>`` for a page, or of
``path:<name>:<size>:<mtime>`` for a file rejected before it could be read. ``stage`` is
where the item is (crawl, preprocess, tokenize, train) and ``status`` how it stands there
(pending, running, done, failed = waiting for a retry, quarantined).

Every state change is one short transaction, committed only after the files it refers to
have been renamed into place, so a crash at any point leaves a state that a restart can
continue from (see docs/pipeline.md, "Exactly once"). WAL mode lets ``odin-pipeline
status`` and the dashboard read while the pipeline writes. Each thread opens its own
:class:`Store` (sqlite3 connections are not shared between threads).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

STAGES = ("crawl", "preprocess", "tokenize", "train")
STATUSES = ("pending", "running", "done", "failed", "quarantined")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS items(
    hash TEXT PRIMARY KEY, stage TEXT NOT NULL, status TEXT NOT NULL, name TEXT, error TEXT,
    updated REAL,
    kind TEXT NOT NULL DEFAULT 'file',   -- file | urls (a URL list) | url (one page)
    parent TEXT,                         -- the URL list a page came from
    source TEXT,                         -- inbox-relative path, or the URL
    ext TEXT,                            -- raw file suffix (".html", ".txt"...)
    charset TEXT,                        -- from the HTTP Content-Type, for pages
    size INTEGER, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
    reason TEXT,                         -- failure / skip code (odin.pipeline.errors.REASONS, duplicate...)
    note TEXT,                           -- outcome or what it waits for
    chars INTEGER, tokens INTEGER, val_tokens INTEGER, created REAL);
CREATE INDEX IF NOT EXISTS items_stage ON items(stage, status);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
CREATE TABLE IF NOT EXISTS texts(text_hash TEXT PRIMARY KEY, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signatures(item TEXT PRIMARY KEY, sig BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lsh(band INTEGER NOT NULL, bucket TEXT NOT NULL, item TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS lsh_bucket ON lsh(band, bucket);
CREATE TABLE IF NOT EXISTS shards(
    id TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, tokens INTEGER NOT NULL,
    val_tokens INTEGER NOT NULL, steps INTEGER NOT NULL,
    status TEXT NOT NULL,                -- pending | training | trained | quarantined
    created REAL, trained_at REAL, step_end INTEGER, val_loss REAL, train_loss REAL,
    val_set_tokens INTEGER, tokens_processed INTEGER, seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0, error TEXT);
CREATE TABLE IF NOT EXISTS shard_items(
    shard TEXT NOT NULL, item TEXT NOT NULL, offset INTEGER NOT NULL, count INTEGER NOT NULL,
    val_count INTEGER NOT NULL, PRIMARY KEY(shard, item));
CREATE INDEX IF NOT EXISTS shard_items_item ON shard_items(item);
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, level TEXT NOT NULL, stage TEXT,
    item TEXT, name TEXT, code TEXT, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
"""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def url_key(url: str) -> str:
    return hashlib.sha256(b"url:" + url.encode("utf-8")).hexdigest()


def path_key(name: str, size: int, mtime_ns: int) -> str:
    # surrogateescape: a name that is not UTF-8 keys by its own bytes
    return hashlib.sha256(f"path:{name}:{size}:{mtime_ns}".encode("utf-8", "surrogateescape")).hexdigest()


def db_text(value: Any) -> Any:
    """``value`` as SQLite can store it: a file name whose bytes are not UTF-8 (Python
    carries those bytes as lone surrogates, which no UTF-8 text can hold) gets them as
    ``\\xNN``; everything else is unchanged."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


class Store:
    """One connection to pipeline.db with the pipeline's transactions as methods."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if readonly:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        else:
            # check_same_thread off: a stage object is made in the main thread and then used
            # by its own worker thread only; no connection is ever used by two threads at once
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            # WAL: readers (status, dashboard) never block the writer; NORMAL sync is
            # durable against a process crash, which is what exactly-once is about.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._create()
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")

    def _create(self) -> None:
        # one script = one transaction: the tables appear all together or not at all
        self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: takes the write lock up front, so two
        threads never both read a row as claimable and then both claim it)."""
        if self.db.in_transaction:  # nested: part of the outer transaction
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | list = ()) -> Optional[sqlite3.Row]:
        return self.db.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: tuple | list = (), default: Any = None) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return default if row is None or row[0] is None else row[0]

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        value = self.scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return default if value is None else json.loads(value)

    def set_meta(self, key: str, value: Any) -> None:
        with self.tx():
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------ items
    def item(self, key: str) -> Optional[sqlite3.Row]:
        return self.one("SELECT * FROM items WHERE hash = ?", (key,))

    def insert_item(self, key: str, *, stage: str, status: str, name: str, kind: str = "file",
                    **columns: Any) -> bool:
        """Add an item; False (and no change) when the key is known already."""
        now = time.time()
        values = {"hash": key, "stage": stage, "status": status, "name": name, "kind": kind,
                  "updated": now, "created": now, **columns}
        values = {column: db_text(value) for column, value in values.items()}
        sql = (f"INSERT OR IGNORE INTO items({', '.join(values)}) "
               f"VALUES({', '.join('?' for _ in values)})")
        with self.tx():
            return self.db.execute(sql, list(values.values())).rowcount == 1

    def update_item(self, key: str, **columns: Any) -> None:
        columns = {column: db_text(value) for column, value in columns.items()}
        columns["updated"] = time.time()
        sql = f"UPDATE items SET {', '.join(f'{name} = ?' for name in columns)} WHERE hash = ?"
        with self.tx():
            self.db.execute(sql, [*columns.values(), key])

    def advance(self, key: str, stage: str, **columns: Any) -> None:
        """The item finished its stage: it waits in ``stage`` now, with a fresh retry count."""
        self.update_item(key, stage=stage, status="pending", error=None, reason=None, attempts=0,
                         next_try=0.0, **columns)

    def claim(self, stage: str, kind: Optional[str] = None, key: Optional[str] = None) -> Optional[sqlite3.Row]:
        """Mark the oldest item that is due in ``stage`` as running and return it."""
        now = time.time()
        sql = ("SELECT hash FROM items WHERE stage = ? AND (status = 'pending' OR "
               "(status = 'failed' AND next_try <= ?))")
        params: list[Any] = [stage, now]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if key is not None:
            sql += " AND hash = ?"
            params.append(key)
        sql += " ORDER BY created, hash LIMIT 1"
        with self.tx():
            row = self.one(sql, params)
            if row is None:
                return None
            self.db.execute("UPDATE items SET status = 'running', updated = ? WHERE hash = ?", (now, row[0]))
        return self.item(row[0])

    def due(self, stage: str, kind: Optional[str] = None, limit: int = 500,
            exclude_prefixes: Iterable[str] = ()) -> list[sqlite3.Row]:
        """Items of ``stage`` that could be claimed now, oldest first (not claimed), except
        those whose source starts with one of ``exclude_prefixes`` (the URLs of hosts that
        are busy: the rest must not queue behind a long list of one host's URLs)."""
        sql = ("SELECT * FROM items WHERE stage = ? AND (status = 'pending' OR "
               "(status = 'failed' AND next_try <= ?))")
        params: list[Any] = [stage, time.time()]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        for prefix in exclude_prefixes:
            sql += " AND substr(source, 1, ?) != ?"
            params += [len(prefix), prefix]
        return self.query(sql + " ORDER BY created, hash LIMIT ?", [*params, limit])

    def next_retry(self, stage: str) -> Optional[float]:
        return self.scalar("SELECT MIN(next_try) FROM items WHERE stage = ? AND status = 'failed'", (stage,))

    def prune_events(self, keep: int = 100_000) -> None:
        """The event log is for people; a long-running pipeline keeps the newest ``keep``."""
        with self.tx():
            self.db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,))

    def reset_running(self) -> int:
        """At start-up: whatever a dead process was doing is to be done again."""
        with self.tx():
            count = self.db.execute("UPDATE items SET status = 'pending' WHERE status = 'running'").rowcount
            self.db.execute("UPDATE shards SET status = 'pending' WHERE status = 'training'")
        return count

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for row in self.query("SELECT stage, status, COUNT(*) FROM items GROUP BY stage, status"):
            result.setdefault(row[0], {})[row[1]] = row[2]
        return result

    def busy_upstream(self) -> int:
        """Items that may soon reach the tokenizer: anything in crawl or preprocess not
        finished, except pages not fetched yet. Those depend on other hosts' speed (a slow
        host, a retry in a minute): the part-filled shard is not held for them, a page that
        arrives later goes into a later shard."""
        return int(self.scalar(
            "SELECT COUNT(*) FROM items WHERE stage IN ('crawl', 'preprocess') "
            "AND status IN ('pending', 'running', 'failed') AND NOT (stage = 'crawl' AND kind = 'url')",
            default=0))

    # ------------------------------------------------------------------ events
    def event(self, level: str, message: str, *, stage: str | None = None, item: str | None = None,
              name: str | None = None, code: str | None = None) -> None:
        with self.tx():
            self.db.execute("INSERT INTO events(time, level, stage, item, name, code, message) "
                            "VALUES(?, ?, ?, ?, ?, ?, ?)", (time.time(), level, stage, item, db_text(name), code,
                                                             db_text(message)))

    def events(self, since_id: int = 0, limit: int = 50) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", (since_id, limit))[::-1]

    # ------------------------------------------------------------------ shards
    def next_shard_seq(self) -> int:
        return int(self.scalar("SELECT MAX(seq) FROM shards", default=0)) + 1

    def shards(self, status: Optional[str] = None) -> list[sqlite3.Row]:
        if status is None:
            return self.query("SELECT * FROM shards ORDER BY seq")
        return self.query("SELECT * FROM shards WHERE status = ? ORDER BY seq", (status,))

    def shard(self, shard_id: str) -> Optional[sqlite3.Row]:
        return self.one("SELECT * FROM shards WHERE id = ?", (shard_id,))

    def packed_tokens(self, item: str) -> int:
        """Training tokens of ``item`` that are in shards already."""
        return int(self.scalar("SELECT SUM(count) FROM shard_items WHERE item = ?", (item,), default=0))

    def shard_item_rows(self, shard_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM shard_items WHERE shard = ? ORDER BY rowid", (shard_id,))

    def items_done_training(self, keys: list[str]) -> list[str]:
        """Those of ``keys`` whose every shard is trained (and that have no tokens left to pack)."""
        done = []
        for key in keys:
            row = self.one("SELECT stage FROM items WHERE hash = ?", (key,))
            if row is None or row[0] != "train":
                continue
            untrained = self.scalar(
                "SELECT COUNT(*) FROM shard_items JOIN shards ON shards.id = shard_items.shard "
                "WHERE shard_items.item = ? AND shards.status != 'trained'", (key,), default=0)
            if untrained == 0:
                done.append(key)
        return done
