"""Crash-safe file writes shared by the tokenizer, dataset and checkpoint code.

A reader must never see a half-written file, so everything is written to a
temporary name in the destination directory and then renamed over the target
(``os.replace`` is atomic on POSIX and Windows when both names are on the same
filesystem, which a sibling temp file guarantees).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def user_mode(mode: int = 0o666) -> int:
    """`mode` less the process's umask: what open() would give a new file (0o666) or mkdir a
    new directory (0o777). tempfile's mkstemp / mkdtemp make 0600 / 0700 whatever the umask,
    so a file written through one is chmod-ed to this before it is renamed into place."""
    try:  # Linux reports the umask without changing it (os.umask would, for every thread)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return mode & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mode & ~mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, user_mode())  # mkstemp creates 0600; follow the umask like open() does
        os.replace(tmp_name, target)
    except BaseException:
        # Leave no stray temp file behind, then let the original error surface.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    # Encode here (not via text-mode files) so line endings stay '\n' on every OS.
    write_bytes_atomic(path, text.encode("utf-8"))
