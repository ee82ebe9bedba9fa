"""One process at a time per run folder or pipeline folder, and no silent overwrite of a run.

The lock is an OS lock (``flock``) on the folder itself, taken through a descriptor of the
directory (``os.open(folder, O_RDONLY)``): there is no lock file whose deletion would let a
second process in, and the kernel drops the lock when the process ends however it ends
(``kill -9`` included), so a stale lock cannot outlive its owner. The owner's pid and
command go to ``.odin.lock`` in the folder only so that the refusal can name them.

:func:`existing_run` / :func:`refuse_existing_run` decide whether a folder already holds a
training run (a ``checkpoint/`` or a non-empty ``metrics.jsonl``) and refuse to start a new
one over it unless the caller says to resume it or to overwrite it. ``odin train`` and the
dashboard share them.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional

OWNER_FILE = ".odin.lock"
CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


class FolderInUseError(OSError):
    """Another process (or another lock in this one) holds the folder; ``pid`` and ``who`` name
    the holder when it recorded itself (None and "" otherwise)."""

    def __init__(self, message: str, pid: Optional[int] = None, who: str = "") -> None:
        super().__init__(message)
        self.pid, self.who = pid, who


class RunExistsError(ValueError):
    """The folder holds a run and neither resume nor overwrite was asked for."""


class FolderLock:
    """An exclusive ``flock`` on a directory, held until :meth:`release` (or process exit)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self._fd = folder, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            (self.folder / OWNER_FILE).unlink()
        except OSError:  # gone already, or the folder was removed: the lock goes anyway
            pass
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None

    close = release  # so it can stand where a locked file object stood

    def release_and_remove_if_empty(self) -> None:
        """Release, removing the folder first when nothing but the owner file is in it (a start
        that failed after creating it leaves nothing behind). Removed while still locked, so
        no other process can be writing into it."""
        if self._fd is None:
            return
        try:
            (self.folder / OWNER_FILE).unlink()
        except OSError:
            pass
        try:
            self.folder.rmdir()  # fails, as intended, when anything is in it
        except OSError:
            pass
        self.release()

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release must not hold the folder
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


def _owner(folder: Path) -> tuple[Optional[int], str]:
    """(pid, what) from the owner file: "pid 123, odin train"."""
    try:
        text = (folder / OWNER_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, ""
    head, _, who = " ".join(text.split())[:200].partition(", ")
    number = head.removeprefix("pid ")
    return (int(number) if number.isdigit() else None), who


def lock_folder(folder: str | os.PathLike[str], who: str) -> FolderLock:
    """Lock ``folder`` (created if missing) for this process; ``who`` names the holder in the
    refusal another process gets. Raises :class:`FolderInUseError` when it is held."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for _ in range(10):  # the folder may be renamed or replaced between open and flock: retry
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            refuse_busy_folder(path)
            raise FolderInUseError(f"{path} is in use by another process") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # locked a directory that no longer has this name
            os.close(fd)
            path.mkdir(parents=True, exist_ok=True)
            continue
        lock = FolderLock(path, fd)
        try:
            (path / OWNER_FILE).write_text(f"pid {os.getpid()}, {who}\n", encoding="utf-8")
        except OSError:  # informational only: a read-only folder can still be locked
            pass
        return lock
    raise FolderInUseError(f"{path} keeps being replaced while it is being locked")


def refuse_busy_folder(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`FolderInUseError` now when another process holds ``folder`` (a check before
    slow work; :func:`lock_folder` is what keeps it)."""
    if folder_in_use(folder):
        path = Path(folder)
        pid, holder = _owner(path)
        named = f"{holder or 'an ODIN process'}" + (f", pid {pid}" if pid is not None else "")
        raise FolderInUseError(f"{path} is in use by another process ({named}); wait for it to finish or "
                               f"stop it first", pid, holder)


def folder_in_use(folder: str | os.PathLike[str]) -> bool:
    """Whether some process holds ``folder``'s lock (without taking it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: fails only under an exclusive holder
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the shared lock too
    return False


def existing_run(out_dir: str | os.PathLike[str]) -> Optional[str]:
    """What in ``out_dir`` makes it a training run already (None when nothing does)."""
    path = Path(out_dir)
    if (path / CHECKPOINT_DIR).exists():
        return f"a checkpoint ({path / CHECKPOINT_DIR})"
    metrics = path / METRICS_FILE
    try:
        if metrics.stat().st_size > 0:
            return f"a metrics log ({metrics})"
    except OSError:
        pass
    return None


def refuse_existing_run(out_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> None:
    """Raise :class:`RunExistsError` (one line, saying what to do) when ``out_dir`` holds a run and
    the caller asked neither to resume it nor to overwrite it; also refuse both at once."""
    if resume and overwrite:
        raise RunExistsError("resume and overwrite exclude each other: resume continues the run in "
                             f"{out_dir}, overwrite starts it again from step 0")
    if resume or overwrite:
        return
    found = existing_run(out_dir)
    if found:
        raise RunExistsError(f"{out_dir} already holds a run ({found}); continue it with --resume, start it "
                             f"over with --overwrite, or choose another --out")
