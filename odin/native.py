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


from odin.errors import (  # noqa: E402  re-exported: odin.native.OdinError is the public name
    ArgumentError, DTypeError, NanError, NativeIOError, NativeMemoryError, OdinError, ShapeError, StateError,
    UnsupportedISAError,
)

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
    """Switch every kernel to one instruction set ('scalar', 'avx2', 'avxvnni', 'avx512', 'avx512vnni').

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


def normalise_isa(name: str) -> str:
    """'AVX2', ' avx2 ' -> 'avx2': the C library knows only the exact lowercase names."""
    return name.strip().lower()


def _apply_isa_override() -> None:
    # The C side already honoured an exact valid ODIN_ISA; any other spelling is normalised
    # here, and a name that is still unknown or unusable must not pass silently.
    raw = os.environ.get("ODIN_ISA", "")
    wanted = normalise_isa(raw)
    if wanted and current_isa() != wanted:
        try:
            set_isa(wanted)
        except UnsupportedISAError as exc:
            reason = str(exc).removeprefix("set_isa: ")
            if "usable:" not in reason:
                reason += f"; this CPU can use: {', '.join(available_isas())}"
            raise UnsupportedISAError(f"ODIN_ISA={raw!r}: {reason} (or unset ODIN_ISA for the best one)") from None


_apply_isa_override()
