"""Loads the compiled ODIN library and turns its status codes into Python exceptions.

Every C function returns an odin_status; `check` raises the matching OdinError subclass
with the library's message, which names the offending argument.
"""
from __future__ import annotations

import os

try:
    from odin._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only when the build is missing
    raise ImportError(
        "the ODIN native library is not built: run `pip install -e .` (or `pip install .`) "
        "in the project root, which compiles csrc/ through cffi"
    ) from exc


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


_STATUS_TO_ERROR: dict[int, type[OdinError]] = {
    lib.ODIN_BAD_SHAPE: ShapeError,
    lib.ODIN_BAD_ARG: ArgumentError,
    lib.ODIN_NO_MEMORY: NativeMemoryError,
    lib.ODIN_NAN_DETECTED: NanError,
    lib.ODIN_UNSUPPORTED_ISA: UnsupportedISAError,
    lib.ODIN_IO: NativeIOError,
    lib.ODIN_STATE: StateError,
}


def last_error() -> str:
    return ffi.string(lib.odin_last_error()).decode("utf-8", "replace")


def check(status: int, where: str) -> None:
    """Raise the exception for a non-OK status, prefixed with the calling function's name."""
    if status == lib.ODIN_OK:
        return
    cls = _STATUS_TO_ERROR.get(status, OdinError)
    raise cls(f"{where}: {last_error()}")


def _cstr(ptr) -> str:
    return ffi.string(ptr).decode("utf-8", "replace")


def version() -> str:
    return _cstr(lib.odin_version())


def current_isa() -> str:
    return _cstr(lib.odin_current_isa())


def available_isas() -> list[str]:
    """ISAs this build contains and this CPU/OS can run, best last."""
    return [s for s in _cstr(lib.odin_available_isas()).split(",") if s]


def set_isa(name: str) -> None:
    """Switch every kernel to one instruction set ('scalar', 'avx2', 'avx512').

    Not thread-safe against kernels running on other threads: switch between calls.
    """
    check(lib.odin_set_isa(name.encode()), "set_isa")


def cpu_info() -> dict[str, object]:
    return {
        "cpu": _cstr(lib.odin_cpu_model()),
        "features": [s for s in _cstr(lib.odin_cpu_features()).split(",") if s],
        "available_isas": available_isas(),
        "isa": current_isa(),
        "compiler": _cstr(lib.odin_compiler()),
        "version": version(),
    }


def _apply_isa_override() -> None:
    # The C side already honoured a valid ODIN_ISA; a bad one must not pass silently.
    wanted = os.environ.get("ODIN_ISA", "").strip()
    if wanted and current_isa() != wanted:
        try:
            set_isa(wanted)
        except UnsupportedISAError as exc:
            raise UnsupportedISAError(f"ODIN_ISA={wanted!r}: {exc}") from None


_apply_isa_override()
