"""Prompts typed on one line: ``\\n``, ``\\t`` and ``\\\\`` stand for a newline, a tab and a
backslash, so a multi-line prompt (a program for the code recipe) fits on a command line,
a REPL line (``odin-infer -e``) or the dashboard's one-line chat box.

Every way a prompt arrives (a command-line argument, a REPL line, a file or stdin) goes
through :func:`prompt_from_bytes` or :func:`prompt_from_text`, so text that is not UTF-8 is
one clear error wherever it comes from, never a tokenizer's TypeError."""
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


def prompt_from_bytes(data: bytes, where: str = "prompt") -> str:
    """``data`` decoded as UTF-8; a ValueError naming the first bad byte and its offset
    otherwise (``where`` names the source: "prompt", "line 3", a file name)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = data[error.start:error.end]
        raise ValueError(f"{where} is not UTF-8 text: byte 0x{bad[0]:02x} at byte offset {error.start} "
                         f"({error.reason})") from None


def prompt_from_text(text: str, where: str = "prompt") -> str:
    """``text`` as received from the OS (a command-line argument, or a line of a stream read
    with ``errors="surrogateescape"``), checked to be UTF-8: bytes that were not valid UTF-8
    arrive as lone surrogates (U+DC80..U+DCFF), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as error:  # a surrogate that stands for no byte
        raise ValueError(f"{where} holds an unpaired surrogate U+{ord(text[error.start]):04X} at character "
                         f"{error.start}; it is not text") from None
    return prompt_from_bytes(data, where)
