"""Watching the inbox: which files are there, and which of them are finished.

A watchdog observer (recursive) reports created / modified / closed / moved files and
folders; a full walk of the inbox at start-up (files dropped while the pipeline was down)
and every ``rescan_seconds`` catches anything an event missed. A file is *ready*

* when a close-after-write event came for it and it has not changed since, or
* when its size and modification time have not changed for ``settle_seconds``
  (renames, whole-folder moves, the start-up scan and the polling observer, which report
  no close events).

A folder moved or copied into the inbox is walked, so every file in it becomes a candidate.
Links are never followed: a symbolic link (to a file, a folder, itself) is a candidate of its
own, judged by ``lstat``, and an event for a path under a linked folder is taken as being
about the link (the crawler then quarantines it as a link; see inbox_fs).
"""
from __future__ import annotations

import fnmatch
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from watchdog.events import (
    DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileSystemEvent, FileSystemEventHandler, FileMovedEvent,
)

from odin.pipeline.inbox_fs import first_link, walk_entries


@dataclass
class Candidate:
    size: int
    mtime_ns: int
    changed: float  # monotonic time of the last change seen
    closed: bool = False  # a close-after-write event came after the last change


class InboxWatcher:
    """Thread-safe set of inbox files that are not yet taken, and which of them are ready."""

    def __init__(self, inbox: Path, *, settle_seconds: float, rescan_seconds: float,
                 ignore: tuple[str, ...] = (), mode: str = "events") -> None:
        self.inbox = Path(inbox)
        self.settle = settle_seconds
        self.rescan_every = rescan_seconds
        self.ignore = ignore
        self.mode = mode
        self._lock = threading.Lock()
        self._candidates: dict[Path, Candidate] = {}
        self._observer: Optional[object] = None
        self._last_scan = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        if self.mode == "poll":
            from watchdog.observers.polling import PollingObserverVFS

            # lstat: the default stat would walk into linked folders (a link to / = the whole disk)
            observer = PollingObserverVFS(os.lstat, os.scandir)
        else:
            from watchdog.observers import Observer

            observer = Observer()  # inotify: does not follow links unless asked to
        observer.schedule(_Handler(self), str(self.inbox), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.scan()  # after the observer is up: nothing dropped in between is missed

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    # ------------------------------------------------------------------ discovery
    def ignored(self, path: Path) -> bool:
        try:
            parts = path.relative_to(self.inbox).parts
        except ValueError:
            return True
        # a pattern matches any component, so files inside ".git/" or "x.tmp/" are skipped too
        return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in self.ignore)

    def scan(self) -> None:
        """Walk the inbox and note every file (cheap for files already known)."""
        self._last_scan = time.monotonic()
        for path in walk_entries(self.inbox, self.ignored):
            self.note(path)

    def maybe_rescan(self) -> None:
        if time.monotonic() - self._last_scan >= self.rescan_every:
            self.scan()
            self.prune_empty_folders()

    def note(self, path: Path, closed: bool = False) -> None:
        """A file appeared or changed (``closed``: it was just closed after writing)."""
        path = Path(path)
        if self.ignored(path):
            return
        path = first_link(self.inbox, path) or path  # inbox/link/x: the link is what was dropped
        try:
            st = os.lstat(path)
        except OSError:  # gone already, or unreadable: a rescan will tell
            with self._lock:
                self._candidates.pop(path, None)
            return
        if stat.S_ISDIR(st.st_mode):
            return
        now = time.monotonic()
        with self._lock:
            old = self._candidates.get(path)
            if old is None or (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._candidates[path] = Candidate(st.st_size, st.st_mtime_ns, now, closed)
            elif closed:
                old.closed = True

    def note_folder(self, folder: Path) -> None:
        if first_link(self.inbox, folder) is not None:  # a linked folder: the link itself
            self.note(folder)
            return
        for path in walk_entries(folder, self.ignored):
            self.note(path)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._candidates.pop(Path(path), None)

    # ------------------------------------------------------------------ readiness
    def ready(self) -> list[Path]:
        """Files that are finished, oldest change first. Checks each file's stat again."""
        now = time.monotonic()
        with self._lock:
            snapshot = list(self._candidates.items())
        ready: list[tuple[float, Path]] = []
        for path, cand in snapshot:
            try:
                st = os.lstat(path)
            except OSError:  # deleted or moved away before it was finished: not ours
                self.forget(path)
                continue
            with self._lock:
                if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                    cand.size, cand.mtime_ns, cand.changed, cand.closed = st.st_size, st.st_mtime_ns, now, False
                    continue
            if cand.closed or now - cand.changed >= self.settle:
                ready.append((cand.changed, path))
        return [path for _, path in sorted(ready)]

    def take(self, path: Path) -> None:
        """The crawler has the file; it is no longer a candidate (a new change re-adds it)."""
        self.forget(path)

    def pending(self) -> int:
        with self._lock:
            return len(self._candidates)

    def prune_empty_folders(self, min_age: Optional[float] = None) -> None:
        """Remove emptied sub-folders of the inbox (left by whole-folder drops) that have
        not changed for ``min_age`` seconds, so the inbox shows only what still waits."""
        cutoff = time.time() - (max(10.0, 4 * self.settle) if min_age is None else min_age)
        # mtimes before anything is removed: removing an emptied child updates its parent's
        folders = []
        for folder, _, _ in os.walk(self.inbox):
            try:
                if Path(folder) != self.inbox:
                    folders.append((Path(folder), Path(folder).stat().st_mtime))
            except OSError:  # removed meanwhile
                continue
        for path, mtime in sorted(folders, key=lambda f: len(f[0].parts), reverse=True):
            if mtime < cutoff:
                try:
                    path.rmdir()  # only succeeds on an empty folder; fails harmlessly otherwise
                except OSError:
                    pass


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: InboxWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        watcher = self.watcher
        if isinstance(event, (DirMovedEvent, DirCreatedEvent)):
            target = getattr(event, "dest_path", "") or event.src_path
            watcher.note_folder(Path(os.fsdecode(target)))
        elif event.is_directory:
            return
        elif isinstance(event, FileMovedEvent):
            watcher.forget(Path(os.fsdecode(event.src_path)))
            watcher.note(Path(os.fsdecode(event.dest_path)))
        elif event.event_type in ("created", "modified"):
            watcher.note(Path(os.fsdecode(event.src_path)))
        elif isinstance(event, FileClosedEvent):
            watcher.note(Path(os.fsdecode(event.src_path)), closed=True)
        elif event.event_type == "deleted":
            watcher.forget(Path(os.fsdecode(event.src_path)))
