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
*quarantined*. :func:`reconcile_quarantine` (start-up) finishes the last step for a
reason file whose database update a crash prevented.
"""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from odin.fileio import write_text_atomic
from odin.pipeline.config import PipelinePaths, Retry
from odin.pipeline.errors import StageError
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


def original_file(paths: PipelinePaths, row: sqlite3.Row) -> Optional[Path]:
    """Where the item's original bytes are now: the inbox (not yet taken) or raw/."""
    if row["kind"] == "url" and row["stage"] == "crawl":
        return None
    raw = paths.raw / f"{row['hash']}{row['ext'] or ''}"
    if raw.is_file():
        return raw
    if row["kind"] in ("file", "urls") and row["source"]:
        inbox = paths.inbox / row["source"]
        if inbox.is_file():
            return inbox
    return None


def fail_item(store: Store, paths: PipelinePaths, retry: Retry, row: sqlite3.Row, stage: str,
              error: StageError, notify: Notify) -> bool:
    """Record a failed attempt; quarantine when it cannot help to retry or the attempts ran
    out. Returns True when the item was quarantined."""
    attempts = int(row["attempts"] or 0) + 1
    if not error.retryable or attempts >= retry.max_attempts:
        quarantine_item(store, paths, row, stage, error, attempts, notify)
        return True
    delay = backoff_delay(attempts, retry)
    store.update_item(row["hash"], stage=stage, status="failed", error=error.message, reason=error.code,
                      attempts=attempts, next_try=time.time() + delay)
    notify("error", stage, row["name"], f"{error.message} (attempt {attempts} of {retry.max_attempts}, "
                                        f"retry in {delay:.3g} s)", item=row["hash"], code=error.code)
    return False


def quarantine_item(store: Store, paths: PipelinePaths, row: sqlite3.Row, stage: str, error: StageError,
                    attempts: int, notify: Notify) -> Path:
    """Move the item's original into quarantine/ beside a reason file; mark it quarantined."""
    paths.quarantine.mkdir(parents=True, exist_ok=True)
    source = original_file(paths, row)
    base = f"{row['hash'][:8]}-{safe_name(row['name'] or row['source'] or 'item')}"
    if source is None:
        target = paths.quarantine / (base + ".url" if row["kind"] == "url" else base)
    else:
        target = paths.quarantine / base
    tried = "" if attempts <= 1 else f" (after {attempts} attempts)"
    lines = [f"reason: {error.message}{tried}", f"code: {error.code}", f"stage: {stage}",
             f"attempts: {attempts}", f"item: {row['hash']}", f"name: {row['name']}",
             f"source: {row['source'] or ''}", f"time: {datetime.now(timezone.utc).isoformat(timespec='seconds')}"]
    reason_file = target.with_name(target.name + ".reason.txt")
    write_text_atomic(reason_file, "\n".join(lines) + "\n")
    if source is not None:
        try:
            os.replace(source, target)
        except OSError:  # another filesystem (an inbox on a mount): copy, then remove
            shutil.move(str(source), str(target))
    elif row["kind"] == "url" or not target.exists():
        # nothing left to keep (a page never fetched, a file that vanished): a record of it
        write_text_atomic(target, (row["source"] or row["name"] or "") + "\n")
    store.update_item(row["hash"], stage=stage, status="quarantined", error=error.message + tried,
                      reason=error.code, attempts=attempts)
    notify("error", stage, row["name"], f"{error.message}{tried} -> quarantine/{target.name}",
           item=row["hash"], code=error.code)
    return target


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
