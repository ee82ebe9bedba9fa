"""What every interchange format shares: the error class its refusals raise, the atomic
writer of a single output file, and the command-line wrapper that turns a refusal into
``odin <command>: error: ...`` and exit 2."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from odin.checkpoint_io import CheckpointError
from odin.config import ConfigError
from odin.fileio import user_mode
from odin.tokenizers import TokenizerFileError


class InterchangeError(ValueError):
    """A model, file or option that cannot be converted; the message names the file and why."""


# the errors a conversion reports to the user in one line (anything else is an engine failure)
USER_ERRORS: tuple[type[Exception], ...] = (InterchangeError, CheckpointError, TokenizerFileError, ConfigError)


def write_file_atomically(target: Path, write: Callable[[Path], None], error: type[InterchangeError],
                          what: str) -> Path:
    """Run ``write(staging)`` on a fresh sibling file of ``target``, flush it to disk and rename
    it to ``target``: a failure leaves no partial file and the old ``target`` untouched.
    ``what`` names the file in the refusal when ``target`` is a directory."""
    if target.is_dir():
        raise error(f"{target} is a directory; give the {what} file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(handle)
    staging = Path(name)
    try:
        write(staging)
        os.chmod(staging, user_mode())  # mkstemp makes 0600: follow the umask like open()
        with open(staging, "rb") as written:
            os.fsync(written.fileno())
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return target


def run_command(command: str, action: Callable[[], str]) -> int:
    """``action()``'s message on stdout and 0, or one ``odin <command>: error:`` line and 2."""
    try:
        message = action()
    except USER_ERRORS as failure:
        print(f"odin {command}: error: {failure}", file=sys.stderr)
        return 2
    except OSError as failure:
        where = f"{failure.filename}: " if failure.filename else ""
        print(f"odin {command}: error: {where}{failure.strerror or failure}", file=sys.stderr)
        return 2
    print(message)
    return 0


__all__ = ["InterchangeError", "USER_ERRORS", "run_command", "write_file_atomically"]
