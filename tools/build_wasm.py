#!/usr/bin/env python3
"""Build the ODIN WebAssembly modules (web/wasm/odin-simd128.wasm, odin-scalar.wasm).

    python tools/build_wasm.py              # both variants, with the ziglang package
    python tools/build_wasm.py --if-stale   # only when csrc/ changed since the last build
    python tools/build_wasm.py --cc clang   # Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32

Same as `odin wasm build`; the logic is in odin/web/build.py (see docs/wasm.md).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from odin.web.build import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
