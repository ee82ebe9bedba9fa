"""Stage 1, crawl, local side: ready inbox files -> raw/<hash><suffix>, URL lists expanded.

Called by the runner's intake thread for every ready inbox file. The order of the steps is
what makes a crash harmless: read and hash the file; if the hash is known, the file is a
duplicate (or was taken just before a crash) and is only removed; else write the raw copy
(temp + rename), commit the new item, and only then remove the file from the inbox. A file
that cannot be read as text is recorded under a key made of its path, size and mtime (it
has no usable content hash), retried or quarantined.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from odin.pipeline.config import PipelineConfig, PipelinePaths
from odin.pipeline.crawler import is_url_list, parse_url_list, read_inbox_file
from odin.pipeline.errors import NotReady, StageError
from odin.pipeline.inbox_fs import unlink_entry, write_with_mode
from odin.pipeline.quarantine import fail_item
from odin.pipeline.store import Store, content_hash, db_text, path_key, url_key
from odin.pipeline.watcher import InboxWatcher


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"


class Intake:
    def __init__(self, paths: PipelinePaths, config: PipelineConfig, store: Store, watcher: InboxWatcher,
                 notify: Callable[..., None], current: dict[str, str]) -> None:
        self.paths, self.config, self.store, self.watcher = paths, config, store, watcher
        self.notify = notify
        self.current = current  # stage -> what it works on, for the status line
        self._skip_paths: set[tuple[Path, int]] = set()  # taken files the inbox would not let go

    def retry(self, row: sqlite3.Row) -> None:
        """A path-keyed item whose retry time has come (or that a crash interrupted)."""
        row = self.store.item(row["hash"])  # another step may have settled it meanwhile
        if row is None or row["status"] not in ("pending", "failed") or row["next_try"] > time.time():
            return
        path = self.paths.inbox / row["source"]
        if os.path.lexists(path):  # the entry itself: a link is taken (and quarantined) as a link
            self.take(path)
        elif self.store.scalar("SELECT 1 FROM items WHERE source = ? AND hash != ? AND "
                               "NOT (kind = 'file' AND stage = 'crawl')", (row["source"], row["hash"])):
            with self.store.tx() as db:  # taken meanwhile under its content hash
                db.execute("DELETE FROM items WHERE hash = ?", (row["hash"],))
        else:
            fail_item(self.store, self.paths, self.config.retry, row, "crawl",
                      StageError("vanished", "the file vanished before it could be read"), self.notify)

    def take(self, path: Path) -> None:
        """Take one ready inbox file (see the module docstring for the order of the steps)."""
        entry = path.relative_to(self.paths.inbox).as_posix()  # for the file system
        rel = db_text(entry)  # for pipeline.db and people: the same unless the name is not UTF-8
        self.current["crawl"] = rel
        self.watcher.take(path)
        try:
            data, st = read_inbox_file(path, self.config.crawl, root=self.paths.inbox)
        except NotReady:
            self.watcher.note(path)
            return
        except StageError as error:
            self.reject(path, entry, error)
            return
        if (path, st.st_mtime_ns) in self._skip_paths:
            return
        key = content_hash(data)
        existing = self.store.item(key)
        if existing is not None:
            if existing["source"] != rel:
                self.notify("info", "crawl", rel, f"duplicate of {existing['name']} (identical bytes, "
                                                  f"{existing['stage']} {existing['status']}): removed from the inbox",
                            item=key, code="duplicate-file")
        else:
            suffix = path.suffix.lower()
            # the raw copy is readable by no more people than the original was
            write_with_mode(self.paths.raw / f"{key}{suffix}", data, st.st_mode)
            if is_url_list(path):
                self.expand_urls(key, rel, data)
            else:
                self.store.insert_item(key, stage="preprocess", status="pending", name=rel, source=rel,
                                       ext=suffix, size=len(data))
                self.notify("info", "crawl", rel, f"taken ({human_size(len(data))})", item=key)
        # a path-keyed failure record of this file (e.g. permission denied earlier) is settled now
        with self.store.tx() as db:
            db.execute("DELETE FROM items WHERE source = ? AND kind = 'file' AND stage = 'crawl' AND "
                       "status IN ('pending', 'failed', 'running') AND hash != ?", (rel, key))
        try:
            # only the very file that was read (a file put in its place since is a new candidate)
            if not unlink_entry(self.paths.inbox, entry, expect=st):
                self.watcher.note(path)
        except OSError as error:
            self._skip_paths.add((path, st.st_mtime_ns))
            self.notify("warn", "crawl", rel, f"taken, but cannot be removed from the inbox: {error.strerror}")

    def reject(self, path: Path, entry: str, error: StageError) -> None:
        """An inbox file that cannot be read as text: recorded by path (it has no content hash).
        ``entry`` is its path in the inbox as the file system has it."""
        rel = db_text(entry)
        try:
            st = os.lstat(path)  # a link's own size and time: its target is never looked at
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = 0, 0
        key = path_key(entry, size, mtime)
        self.store.insert_item(key, stage="crawl", status="running", name=rel, source=rel, size=size)
        row = self.store.item(key)
        if row["status"] == "failed" and row["next_try"] > time.time():
            return  # found again by a rescan: it waits for its retry time
        if row["status"] == "quarantined":
            return  # quarantined before, but it could not be moved: its record says so
        fail_item(self.store, self.paths, self.config.retry, row, "crawl", error, self.notify, inbox_entry=entry)

    def expand_urls(self, key: str, rel: str, data: bytes) -> None:
        urls, bad = parse_url_list(data, self.config.crawl)
        new = 0
        with self.store.tx():
            self.store.insert_item(key, stage="crawl", status="done", name=rel, kind="urls", source=rel,
                                   ext=".urls", size=len(data), note=f"{len(urls)} URLs")
            for url in urls:
                new += self.store.insert_item(url_key(url), stage="crawl", status="pending", name=url, kind="url",
                                              source=url, parent=key)
            for line, _ in bad:
                self.store.insert_item(url_key(line), stage="crawl", status="running", name=line[:200],
                                       kind="url", source=line, parent=key)
        known = f", {len(urls) - new} known already" if len(urls) > new else ""
        bad_lines = f", {len(bad)} bad line(s)" if bad else ""
        self.notify("info", "crawl", rel, f"URL list: {new} new URL(s){known}{bad_lines}", item=key)
        for line, why in bad:
            row = self.store.item(url_key(line))
            if row is not None and row["status"] == "running":
                fail_item(self.store, self.paths, self.config.retry, row, "crawl", StageError("bad-url", why),
                          self.notify)
