"""cffi API-mode builder for the ODIN native library (used by setup.py `cffi_modules`).

The declarations come from csrc/odin.h (between ODIN_CDEF_BEGIN/END), so the header is
the single source of truth. Every .c file under csrc/ is compiled into the extension,
except the WebAssembly kernels, which only the wasm build uses.

No -march=native: each ISA file enables its own instructions with a target pragma, so
one build runs on any x86-64 and picks its kernels at run time.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
WASM_ONLY = {"wasm_simd128.c", "wasm_api.c"}


def _cdef_from_header(header: Path) -> str:
    text = header.read_text()
    m = re.search(r"/\* ODIN_CDEF_BEGIN \*/(.*)/\* ODIN_CDEF_END \*/", text, re.S)
    if not m:
        raise RuntimeError(f"{header}: ODIN_CDEF_BEGIN/END markers not found")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return body


def _sources() -> list[str]:
    found = sorted(p for p in CSRC.rglob("*.c") if p.name not in WASM_ONLY)
    # setuptools prefers paths relative to the build's working directory
    out = []
    for p in found:
        try:
            out.append(os.path.relpath(p, os.getcwd()))
        except ValueError:
            out.append(str(p))
    return out


def _compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    args = ["-O3", "-std=gnu11", "-fno-math-errno", "-pthread", "-Wall", "-Wno-unused-function"]
    extra = os.environ.get("ODIN_CFLAGS")  # e.g. "-fsanitize=thread -g" for sanitizer builds
    if extra:
        args += extra.split()
    return args


def _link_args() -> list[str]:
    if sys.platform == "win32":
        return []
    args = ["-pthread"]
    extra = os.environ.get("ODIN_LDFLAGS")
    if extra:
        args += extra.split()
    return args


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(CSRC / "odin.h"))
ffibuilder.set_source(
    "odin._native",
    '#include "odin.h"\n',
    sources=_sources(),
    include_dirs=[os.path.relpath(CSRC, os.getcwd()) if os.path.isabs(str(CSRC)) else str(CSRC)],
    extra_compile_args=_compile_args(),
    extra_link_args=_link_args(),
    libraries=[] if sys.platform == "win32" else ["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
