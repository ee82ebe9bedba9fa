"""The exceptions of the ODIN native layer, importable without loading the library.

:mod:`odin.native` raises these (and re-exports them). They live here so that a CLI can
catch the one import-time failure there is — a bad ``ODIN_ISA`` — before the library is
usable: :func:`native_load_error` turns it into the one-line message a CLI prints.
"""
from __future__ import annotations

from typing import Optional


class OdinError(Exception):
    """Base class of every error raised by the ODIN native layer."""


class ShapeError(OdinError, ValueError):
    """An array or size argument has the wrong shape."""


class ArgumentError(OdinError, ValueError):
    """An argument has a value outside its allowed range."""


class DTypeError(OdinError, TypeError):
    """An array has the wrong dtype or memory layout."""


class NanError(OdinError, FloatingPointError):
    """A NaN or Inf appeared where a finite number is required."""


class UnsupportedISAError(OdinError, RuntimeError):
    """The requested instruction set is unknown or not available on this CPU."""


class NativeMemoryError(OdinError, MemoryError):
    """The native library could not allocate memory."""


class NativeIOError(OdinError, OSError):
    """The native library failed to read or write a file."""


class StateError(OdinError, RuntimeError):
    """An operation was called in a state that does not allow it."""


def native_load_error() -> Optional[str]:
    """Load the native library; the reason it cannot be used (a bad ``ODIN_ISA``), or None.

    Every CLI calls this first, so that a bad environment is one line, not a traceback
    from whichever import happens to load the library first.
    """
    try:
        import odin.native  # noqa: F401  (applies ODIN_ISA on import)
    except UnsupportedISAError as error:
        return str(error)
    return None
