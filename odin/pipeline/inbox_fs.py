"""Reading, moving and removing inbox entries without ever following a symbolic link.

Anyone who can write into the inbox decides what its entries are: a link to
``/etc/shadow``, a link to a folder outside, a FIFO that blocks every reader. So a path
under the inbox is never handed to ``open()`` as a whole: it is opened one component at
a time from the inbox folder's own descriptor, every component with ``O_NOFOLLOW``
(folders also ``O_DIRECTORY``), and the file is then judged by ``fstat`` on the open
descriptor, never by a second look at the path. A link put anywhere on the path, before
the pipeline looked or swapped in between a check and the open, makes the open fail
instead of leading outside. Removing and moving work the same way (``unlinkat`` /
``renameat`` relative to the parent's descriptor), and only remove the very entry that
was read (same device and inode).
"""
from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the lstat must not block the open; O_NOCTTY: a tty
# must not become our controlling terminal
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class LinkOnPath(OSError):
    """A folder on the way to the entry is a symbolic link; ``link`` is its path, relative
    to the root (the entry to quarantine instead)."""

    def __init__(self, link: str) -> None:
        super().__init__(errno.ELOOP, f"symbolic link on the path: {link}")
        self.link = link


def kind_of(mode: int) -> str:
    """What a non-regular entry is, in words."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "an unknown kind of file"


def relative_parts(rel: str) -> tuple[str, ...]:
    parts = PurePosixPath(rel).parts
    if not parts or any(part in ("", ".", "..", "/") for part in parts):
        raise ValueError(f"not a path inside the folder: {rel!r}")
    return parts


@contextmanager
def open_parent(root: Path, rel: str) -> Iterator[tuple[int, str]]:
    """(descriptor of the folder holding ``rel``, the entry's own name), reached from
    ``root`` without following a link. Raises LinkOnPath, or OSError (ENOENT, ENOTDIR...)."""
    parts = relative_parts(rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself is the user's choice
    try:
        for depth, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                # O_NOFOLLOW|O_DIRECTORY on a link: ELOOP, or ENOTDIR on some kernels
                if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part):
                    raise LinkOnPath("/".join(parts[: depth + 1])) from None
                raise
            os.close(fd)
            fd = child
        yield fd, parts[-1]
    finally:
        os.close(fd)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def lstat_entry(root: Path, rel: str) -> os.stat_result:
    """The entry itself (a link is reported as a link)."""
    with open_parent(root, rel) as (dir_fd, name):
        return os.lstat(name, dir_fd=dir_fd)


def read_link(root: Path, rel: str) -> Optional[str]:
    """Where a link points (as text, never resolved), or None."""
    try:
        with open_parent(root, rel) as (dir_fd, name):
            return os.fsdecode(os.readlink(name, dir_fd=dir_fd))
    except OSError:
        return None


def first_link(root: Path, path: Path) -> Optional[Path]:
    """The outermost component of ``path`` (under ``root``) that is a symbolic link, or
    None: an event for ``inbox/link/x`` must be about ``inbox/link`` itself."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    current = root
    for part in parts:
        current = current / part
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return current
        except OSError:
            return None
    return None


def walk_entries(root: Path, skip=lambda path: False) -> Iterator[Path]:
    """Every entry under ``root`` that is not a folder (files, links, FIFOs...), never
    descending into a linked folder; ``skip(path)`` prunes entries and folders."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                found = list(entries)
        except OSError:  # removed meanwhile, or unreadable: a later scan tells
            continue
        for entry in found:
            path = Path(entry.path)
            if skip(path):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                stack.append(path)
            else:
                yield path


def read_regular(root: Path, rel: str, limit: int) -> tuple[bytes, os.stat_result, os.stat_result]:
    """At most ``limit`` + 1 bytes of the regular file ``rel`` and its fstat before and
    after the read. OSError(ELOOP) when the entry is a link (LinkOnPath when a folder on
    its path is), OSError(EINVAL) with ``.st`` when it is not a regular file."""
    with open_parent(root, rel) as (dir_fd, name):
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            error = OSError(errno.EINVAL, f"not a regular file ({kind_of(before.st_mode)})")
            error.st = before  # type: ignore[attr-defined]
            raise error
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), before, os.fstat(fd)
    finally:
        os.close(fd)


def unlink_entry(root: Path, rel: str, expect: Optional[os.stat_result] = None) -> bool:
    """Remove the entry ``rel`` itself (a link, not its target); with ``expect`` only if it
    is still that file (same device and inode). True when removed or already gone."""
    try:
        with open_parent(root, rel) as (dir_fd, name):
            if expect is not None:
                now = os.lstat(name, dir_fd=dir_fd)
                if (now.st_dev, now.st_ino) != (expect.st_dev, expect.st_ino):
                    return False
            os.unlink(name, dir_fd=dir_fd)
            return True
    except FileNotFoundError:
        return True


def move_regular(root: Path, rel: str, target: Path) -> None:
    """Move the regular file ``rel`` to ``target`` (a rename; across file systems a copy
    that is never readable by more people than the original, then the original removed).
    Raises OSError when it is not a regular file or a link is on its path."""
    with open_parent(root, rel) as (dir_fd, name):
        st = os.lstat(name, dir_fd=dir_fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({kind_of(st.st_mode)})")
        try:
            os.rename(name, target, src_dir_fd=dir_fd)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.EAGAIN, "the file was replaced while it was moved")
            os.set_blocking(fd, True)
            write_with_mode(target, _read_all(fd), opened.st_mode)
        finally:
            os.close(fd)
        unlink_entry(root, rel, expect=st)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def write_with_mode(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically (temp file, then rename) with permissions no wider than
    ``mode`` (and the umask): a copy must not let more people read the bytes than the
    original did. The temp file is created with those permissions, so there is no moment
    at which it is wider."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 stat.S_IMODE(mode) & 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
