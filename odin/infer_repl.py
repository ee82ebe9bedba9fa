"""Where ``odin-infer``'s interactive loop gets its lines: a terminal with line editing and a
history kept between sessions (GNU readline or libedit, through the standard ``readline``
module), or any other stdin read as bytes.

Every line goes through :func:`odin.prompt_text.prompt_from_bytes` /
:func:`~odin.prompt_text.prompt_from_text`, so a line that is not UTF-8 is that line's
one-line error and the loop goes on.

The history file is ``$XDG_STATE_HOME/odin/infer_history`` (``~/.local/state/odin/...``
when XDG_STATE_HOME is unset): the last :data:`HISTORY_LENGTH` lines, written when the loop
ends through a private temporary file renamed into place (mode 0600: prompts may be
private). A history that cannot be read or written is a one-line note, never an error.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

from odin.prompt_text import prompt_from_bytes, prompt_from_text

HISTORY_LENGTH = 1000
PROMPT = "> "


def history_path(environ: Optional[dict[str, str]] = None) -> Path:
    """The history file (see the module docstring)."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or ""
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"  # the spec ignores relative paths
    return base / "odin" / "infer_history"


class History:
    """readline's history, loaded from and saved to :func:`history_path`."""

    def __init__(self, readline: Any, path: Path, note: Callable[[str], None]) -> None:
        self.readline, self.path, self.note = readline, path, note
        readline.set_history_length(HISTORY_LENGTH)
        try:
            readline.read_history_file(str(path))
        except FileNotFoundError:
            pass
        except OSError as error:
            note(f"cannot read the history file {path} ({error.strerror or error})")

    def save(self) -> None:
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=".infer_history.", dir=self.path.parent)
            os.close(descriptor)
            self.readline.write_history_file(temporary)
            os.replace(temporary, self.path)
            temporary = None
        except OSError as error:
            self.note(f"history not saved to {self.path} ({error.strerror or error})")
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass


def _terminal_lines(note: Callable[[str], None]) -> Iterator[tuple[str, Optional[str]]]:
    """Lines typed at a terminal: (prompt, None) or ("", error). readline edits the line and
    recalls earlier ones (also from earlier sessions); input() decodes the bytes typed with
    stdin's encoding, and surrogateescape keeps bad bytes for prompt_from_text to report."""
    try:
        import readline
    except ImportError:  # a Python built without it: plain lines, no history
        readline = None
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    history = History(readline, history_path(), note) if readline is not None else None
    number = 0
    try:
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                sys.stdout.write("\n")
                return
            number += 1
            try:
                yield prompt_from_text(line, f"line {number}"), None
            except ValueError as error:
                yield "", str(error)
    finally:
        if history is not None:
            history.save()


def _stream_lines(stream: BinaryIO) -> Iterator[tuple[str, Optional[str]]]:
    """Lines of a pipe or file, decoded one by one (a bad line does not end the loop)."""
    for number, raw in enumerate(iter(stream.readline, b""), start=1):
        try:
            yield prompt_from_bytes(raw.rstrip(b"\r\n"), f"line {number}"), None
        except ValueError as error:
            yield "", str(error)


def prompt_lines(note: Callable[[str], None]) -> Iterator[tuple[str, Optional[str]]]:
    """The loop's input: ``(prompt, None)`` per line, or ``("", message)`` for a line that
    is not text. Ends at EOF (the history, if any, is saved then)."""
    if sys.stdin.isatty():
        return _terminal_lines(note)
    return _stream_lines(sys.stdin.buffer)
