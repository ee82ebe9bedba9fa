"""Prompts typed on one line: ``\\n``, ``\\t`` and ``\\\\`` stand for a newline, a tab and a
backslash, so a multi-line prompt (a program for the code recipe) fits on a command line,
a REPL line (``odin-infer -e``) or the dashboard's one-line chat box."""
from __future__ import annotations

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def decode_escapes(text: str) -> str:
    """``text`` with ``\\n``, ``\\t`` and ``\\\\`` replaced; any other backslash sequence is
    a ValueError that says where it is."""
    pieces: list[str] = []
    index = 0
    while True:
        found = text.find("\\", index)
        if found < 0:
            pieces.append(text[index:])
            return "".join(pieces)
        pieces.append(text[index:found])
        code = text[found + 1:found + 2]
        if code not in _ESCAPES:
            what = f"unknown escape \\{code}" if code else "a lone \\ at the end"
            raise ValueError(f"{what} at character {found} "
                             "(write \\n for a new line, \\t for a tab, \\\\ for a backslash)")
        pieces.append(_ESCAPES[code])
        index = found + 2


def escape_for_command_line(prompt: str) -> str:
    """The inverse of :func:`decode_escapes`: ``prompt`` on one line."""
    return prompt.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
