"""Failures: retry with exponential backoff, then quarantine/ with a reason file.

``quarantine/<hash8>-<name>`` is the item's original (the inbox file, its raw copy, or
for a page a ``.url`` file holding the URL) and ``<that>.reason.txt`` says why::

    reason: invalid UTF-8 at byte 17 (0xff): invalid start byte
    code: invalid-utf8
    stage: preprocess
    attempts: 1
    item: 9f2c...
    name: notes/latin1.txt
    source: notes/latin1.txt
    time: 2025-01-01T12:00:00+00:00

The reason file is written first, then the original is moved, then pipeline.db says
*quarantined*. Quarantine never widens who can read a file: an original is moved (a rename
keeps its permissions; across file systems the copy is created with the original's
permissions), and what could not be read safely — a symbolic link, a FIFO or device —
is recorded, not copied: ``<hash8>-<name>.link`` (``.record`` for a FIFO or device) holds
the inbox path and what the link pointed to, and the entry itself is removed from the inbox (the link, never its target).
Names and reasons in the reason file are escaped (one line per field, whatever the name). :func:`reconcile_quarantine` (start-up) finishes the last step for a
reason file whose database update a crash prevented.
"""
from __future__ import annotations

import os
import re
import sqlite3
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from odin.fileio import write_text_atomic
from odin.pipeline import inbox_fs
from odin.pipeline.config import PipelinePaths, Retry
from odin.pipeline.errors import StageError
from odin.pipeline.status import printable
from odin.pipeline.store import Store

Notify = Callable[..., None]  # (level, stage, name, message, item=..., code=...)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def backoff_delay(attempt: int, retry: Retry) -> float:
    """Seconds before try ``attempt + 1``: backoff, 2x backoff, 4x ... capped."""
    return min(retry.backoff_max_seconds, retry.backoff_seconds * 2 ** (attempt - 1))


def safe_name(name: str, limit: int = 120) -> str:
    """A flat, portable file name: a file's own name, or host_path for a URL (the reason
    file holds the full inbox path or URL)."""
    if "://" in name:
        name = re.sub(r"^[A-Za-z]+://", "", name).replace("/", "_")
    else:
        name = name.rsplit("/", 1)[-1]
    flat = _UNSAFE.sub("_", name).lstrip(".") or "item"  # no hidden files
    return flat[-limit:]


def original_file(paths: PipelinePaths, row: sqlite3.Row, inbox_entry: Optional[str] = None) -> Optional[Path]:
    """Where the item's original bytes are now: the inbox (not yet taken) or raw/; only a
    regular file counts (a link is recorded, never moved or followed). ``inbox_entry``: the
    inbox path as the file system has it, when the caller knows it (``source`` is its text)."""
    if row["kind"] == "url" and row["stage"] == "crawl":
        return None
    raw = paths.raw / f"{row['hash']}{row['ext'] or ''}"
    if _is_regular(paths.raw, raw.name):
        return raw
    entry = inbox_entry or row["source"]
    if row["kind"] in ("file", "urls") and entry:
        if _is_regular(paths.inbox, entry):
            return paths.inbox / entry
    return None


def _is_regular(root: Path, rel: str) -> bool:
    try:
        return stat.S_ISREG(inbox_fs.lstat_entry(root, rel).st_mode)
    except (OSError, ValueError):
        return False


# failures of entries that were never read, because reading them is not safe
UNREAD_CODES = ("symlink", "special-file")


def fail_item(store: Store, paths: PipelinePaths, retry: Retry, row: sqlite3.Row, stage: str,
              error: StageError, notify: Notify, inbox_entry: Optional[str] = None) -> bool:
    """Record a failed attempt; quarantine when it cannot help to retry or the attempts ran
    out. Returns True when the item was quarantined."""
    attempts = int(row["attempts"] or 0) + 1
    if not error.retryable or attempts >= retry.max_attempts:
        quarantine_item(store, paths, row, stage, error, attempts, notify, inbox_entry)
        return True
    delay = backoff_delay(attempts, retry)
    store.update_item(row["hash"], stage=stage, status="failed", error=error.message, reason=error.code,
                      attempts=attempts, next_try=time.time() + delay)
    notify("error", stage, row["name"], f"{error.message} (attempt {attempts} of {retry.max_attempts}, "
                                        f"retry in {delay:.3g} s)", item=row["hash"], code=error.code)
    return False


def quarantine_item(store: Store, paths: PipelinePaths, row: sqlite3.Row, stage: str, error: StageError,
                    attempts: int, notify: Notify, inbox_entry: Optional[str] = None) -> Path:
    """Move the item's original into quarantine/ beside a reason file; mark it quarantined.
    ``inbox_entry``: see original_file."""
    paths.quarantine.mkdir(parents=True, exist_ok=True)
    unread = error.code in UNREAD_CODES
    entry = inbox_entry or row["source"]
    source = None if unread else original_file(paths, row, inbox_entry)
    base = f"{row['hash'][:8]}-{safe_name(row['name'] or row['source'] or 'item')}"
    if unread:
        target = paths.quarantine / (base + (".link" if error.code == "symlink" else ".record"))
    elif source is None:
        target = paths.quarantine / (base + ".url" if row["kind"] == "url" else base)
    else:
        target = paths.quarantine / base
    tried = "" if attempts <= 1 else f" (after {attempts} attempts)"
    lines = [f"reason: {printable(error.message)}{tried}", f"code: {error.code}", f"stage: {stage}",
             f"attempts: {attempts}", f"item: {row['hash']}", f"name: {printable(row['name'] or '')}",
             f"source: {printable(row['source'] or '')}",
             f"time: {datetime.now(timezone.utc).isoformat(timespec='seconds')}"]
    reason_file = target.with_name(target.name + ".reason.txt")
    write_text_atomic(reason_file, "\n".join(lines) + "\n")
    if unread:
        # a record, not a copy: the entry is removed from the inbox (the link itself)
        write_text_atomic(target, f"inbox entry: {printable(row['source'] or '')}\n"
                                  f"{printable(error.message)}\n")
        if entry:
            _remove_unread(paths.inbox, entry)
    elif source is not None:
        try:
            if source.parent == paths.raw:
                try:
                    os.replace(source, target)
                except OSError:  # another file system: a copy as narrow as the original, then remove
                    inbox_fs.move_regular(paths.raw, source.name, target)
            else:
                inbox_fs.move_regular(paths.inbox, entry, target)
        except OSError as move_error:  # swapped for a link meanwhile, a full disk...: recorded, left in place
            write_text_atomic(target, f"{printable(row['source'] or row['name'] or '')}\n"
                                      f"not moved here: {printable(str(move_error))}\n")
    elif row["kind"] == "url" or not target.exists():
        # nothing left to keep (a page never fetched, a file that vanished): a record of it
        write_text_atomic(target, printable(row["source"] or row["name"] or "") + "\n")
    store.update_item(row["hash"], stage=stage, status="quarantined", error=error.message + tried,
                      reason=error.code, attempts=attempts)
    notify("error", stage, row["name"], f"{error.message}{tried} -> quarantine/{target.name}",
           item=row["hash"], code=error.code)
    return target


def _remove_unread(inbox: Path, rel: str) -> None:
    """Remove a link / FIFO / device entry from the inbox, but never a regular file (one
    put in its place since is a new candidate, and its bytes are not recorded anywhere)."""
    try:
        entry = inbox_fs.lstat_entry(inbox, rel)
        if not stat.S_ISREG(entry.st_mode) and not stat.S_ISDIR(entry.st_mode):
            inbox_fs.unlink_entry(inbox, rel, expect=entry)
    except inbox_fs.LinkOnPath as link:  # a folder above became a link: that link goes
        _remove_unread(inbox, link.link)
    except (OSError, ValueError):
        pass


def read_reason_file(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key not in fields:
            fields[key] = value
    return fields


def reconcile_quarantine(store: Store, paths: PipelinePaths) -> int:
    """Start-up: items with a reason file that pipeline.db does not show as quarantined
    (the process died between the move and the commit) are marked quarantined now."""
    fixed = 0
    for reason_file in sorted(paths.quarantine.glob("*.reason.txt")):
        fields = read_reason_file(reason_file)
        key = fields.get("item", "")
        row = store.item(key) if key else None
        if row is None or row["status"] == "quarantined":
            continue
        original = reason_file.with_name(reason_file.name[: -len(".reason.txt")])
        if not original.exists():  # the move never happened: the next attempt redoes it all
            reason_file.unlink(missing_ok=True)
            continue
        store.update_item(key, stage=fields.get("stage", row["stage"]), status="quarantined",
                          error=fields.get("reason", ""), reason=fields.get("code"),
                          attempts=int(fields.get("attempts", "1") or 1))
        fixed += 1
    return fixed
