"""Build the ODIN WebAssembly module (``odin wasm build`` / ``python tools/build_wasm.py``).

Two artifacts from the same C sources as the native library (csrc/, minus the threaded
kissing-spheres trainer), written to ``web/wasm/`` next to a manifest:

* ``odin-simd128.wasm`` — ``-msimd128``: the ``wasm_simd128`` kernels (csrc/kernels/
  wasm_simd128.c) and, selectable with ``odin_set_isa("scalar")``, the scalar ones;
* ``odin-scalar.wasm``  — built without ``-msimd128``: scalar kernels only, no SIMD
  instruction anywhere (the comparison build, and the fallback for engines without SIMD);
* ``odin-wasm.json``    — ODIN version, compiler, flags, the SHA-256 of the C sources it was
  built from (``source_sha256``) and of each artifact.

Target: ``wasm32-wasi`` as a *reactor* (a library: ``_initialize`` runs the constructors,
no ``main``). ``wasm32-freestanding`` has no libc at all, while ODIN's C uses malloc,
vsnprintf, qsort and libm; zig ships wasi-libc, and the module imports at most a handful
of WASI functions (``environ_*`` for ``ODIN_ISA``, ``fd_write``, ``proc_exit``), which
web/odin.js provides in a few lines. Compiler: the ``ziglang`` wheel from PyPI
(``python -m ziglang cc``, a complete clang + wasi-libc); alternatively any clang with
wasm-ld and a WASI sysroot (Debian: ``apt-get install clang lld wasi-libc
libclang-rt-14-dev-wasm32``; ``--cc clang``, whose default sysroot is /usr there).

Each .c file is compiled separately so that scalar.c can be kept scalar inside the SIMD
build (``-fno-vectorize -fno-slp-vectorize``: clang would otherwise auto-vectorise the
baseline it is measured against), then linked with ``--export=`` for every odin.h
function except ``odin_spheres_*``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent.parent
CSRC = ROOT / "csrc"  # only in a source checkout: `odin wasm build` needs it
# The page, odin.js and the .wasm builds: web/ of the checkout, reached through the symlink
# odin/web/static -> ../../web, so that the same files are package data of odin and ship in
# the wheel (in an installed package, static/ is a real folder holding copies).
WEB = (Path(__file__).resolve().parent / "static").resolve()
DEFAULT_OUT = WEB / "wasm"
MANIFEST = "odin-wasm.json"
VARIANTS = ("simd128", "scalar")
# csrc files the wasm module does not contain: threads (the trainer, the decoding pool)
EXCLUDED = {"spheres.c", "pool.c", "avx2.c", "avx512.c"}  # threads; the x86-only ISA files (empty off x86)
# compiled so that "scalar" stays one float at a time even in the SIMD build
NO_VECTORIZE = {"scalar.c"}
BUILD_FORMAT = 1  # bump when the flags or the file list change meaning

COMMON_CFLAGS = ["-O3", "-std=gnu11", "-fno-math-errno", "-Wall", "-Wno-unused-function",
                 "-mexec-model=reactor"]
VARIANT_CFLAGS = {"simd128": ["-msimd128"], "scalar": []}
LDFLAGS = [
    "-mexec-model=reactor",
    "-s",                                  # no debug sections: ~60 KiB instead of ~1 MiB
    "-Wl,-z,stack-size=1048576",           # 1 MiB stack (wasm-ld's default is 64 KiB)
    "-Wl,--max-memory=4294901760",         # the linear memory may grow to 4 GiB - 64 KiB
]


class WasmBuildError(RuntimeError):
    """The wasm module could not be built (no compiler, compile or link error)."""


def artifact_name(variant: str) -> str:
    return f"odin-{variant}.wasm"


def wasm_sources(csrc: Path = CSRC) -> list[Path]:
    """The C files compiled into the module, in a fixed order."""
    return sorted(p for p in csrc.rglob("*.c") if p.name not in EXCLUDED)


def source_files(csrc: Path = CSRC) -> list[Path]:
    """Every file whose content the module depends on: its .c files and all headers."""
    return sorted(set(wasm_sources(csrc)) | set(csrc.rglob("*.h")))


def source_sha256(csrc: Path = CSRC) -> str:
    """One hash over the sources (relative path + content of each) and the build flags."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": BUILD_FORMAT, "cflags": COMMON_CFLAGS, "variants": VARIANT_CFLAGS,
                         "ldflags": LDFLAGS, "excluded": sorted(EXCLUDED)}, sort_keys=True).encode())
    for path in source_files(csrc):
        h.update(path.relative_to(csrc).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def exported_functions(header: Path = CSRC / "odin.h") -> list[str]:
    """Function names declared in odin.h's cdef block, without the spheres trainer."""
    text = header.read_text()
    m = re.search(r"/\* ODIN_CDEF_BEGIN \*/(.*)/\* ODIN_CDEF_END \*/", text, re.S)
    if not m:
        raise WasmBuildError(f"{header}: ODIN_CDEF_BEGIN/END markers not found")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    names = re.findall(r"\b(odin_[A-Za-z0-9_]+)\s*\(", body)
    seen: list[str] = []
    for name in names:
        if name.startswith("odin_spheres") or name in seen:
            continue
        seen.append(name)
    return seen


def wasm_only_exports(source: Path = CSRC / "kernels" / "wasm_api.c") -> list[str]:
    """Names wasm_api.c exports itself (its EXPORT("name") marks): malloc, free, odin_wasm_*."""
    return list(dict.fromkeys(re.findall(r'EXPORT\("([A-Za-z0-9_]+)"\)', source.read_text())))


@dataclass
class Compiler:
    argv: list[str]          # e.g. [python, -m, ziglang, cc] or [clang]
    target_args: list[str]   # --target=wasm32-wasi (+ --sysroot=...)
    description: str


def _run(argv: Sequence[str], what: str, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise WasmBuildError(f"{what}: {error}") from None
    except subprocess.TimeoutExpired:
        raise WasmBuildError(f"{what}: timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise WasmBuildError(f"{what} failed (exit {proc.returncode}):\n  {' '.join(argv)}\n"
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout + proc.stderr


def find_compiler(cc: Optional[str] = None, sysroot: Optional[str] = None) -> Compiler:
    """``ziglang`` (default) or the clang named by ``cc`` (with a WASI ``sysroot``)."""
    if cc in (None, "zig", "ziglang"):
        if importlib.util.find_spec("ziglang") is None:
            if cc is not None:
                raise WasmBuildError("the 'ziglang' package is not installed: pip install ziglang")
            clang = shutil.which("clang")
            if clang and sysroot:
                return find_compiler(clang, sysroot)
            raise WasmBuildError(
                "no WebAssembly compiler: pip install ziglang (or pass --cc clang --sysroot DIR with "
                "Debian's clang, lld and wasi-libc)")
        argv = [sys.executable, "-m", "ziglang", "cc"]
        version = _run([sys.executable, "-m", "ziglang", "version"], "zig version").strip()
        return Compiler(argv, ["--target=wasm32-wasi"], f"zig {version} (ziglang wheel, clang + wasi-libc)")
    if sysroot is None:  # the wasi-sdk layout, or Debian's multiarch one (/usr/include/wasm32-wasi)
        sysroot = "/usr/share/wasi-sysroot" if Path("/usr/share/wasi-sysroot").is_dir() else "/usr"
    if not (Path(sysroot) / "include" / "wasm32-wasi").is_dir() and not (Path(sysroot) / "include" / "stdio.h").is_file():
        raise WasmBuildError(f"no WASI sysroot at {sysroot} (Debian: apt-get install wasi-libc)")
    version = _run([cc, "--version"], f"{cc} --version").splitlines()[0].strip()
    return Compiler([cc], ["--target=wasm32-wasi", f"--sysroot={sysroot}"], version)


def build_variant(variant: str, out_dir: Path, compiler: Compiler, *, csrc: Path = CSRC,
                  jobs: int = 2, verbose: bool = False, extra_cflags: Sequence[str] = ()) -> Path:
    """Compile and link one variant into out_dir/odin-<variant>.wasm (written atomically)."""
    if variant not in VARIANTS:
        raise WasmBuildError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cflags = COMMON_CFLAGS + VARIANT_CFLAGS[variant] + list(extra_cflags) + [f"-I{csrc}"]
    with tempfile.TemporaryDirectory(prefix=f"odin-wasm-{variant}-") as tmp:
        objects: list[Path] = []
        commands: list[list[str]] = []
        for src in wasm_sources(csrc):
            obj = Path(tmp) / (src.relative_to(csrc).as_posix().replace("/", "_") + ".o")
            extra = ["-fno-vectorize", "-fno-slp-vectorize"] if src.name in NO_VECTORIZE else []
            commands.append(compiler.argv + compiler.target_args + cflags + extra + ["-c", str(src), "-o", str(obj)])
            objects.append(obj)
        _run_parallel(commands, jobs, verbose)
        target = out_dir / artifact_name(variant)
        partial = Path(tmp) / target.name
        exports = [f"-Wl,--export={name}" for name in exported_functions(csrc / "odin.h")]
        link = compiler.argv + compiler.target_args + LDFLAGS + exports + [str(o) for o in objects] + ["-o", str(partial)]
        if verbose:
            print(" ".join(link), file=sys.stderr)
        _run(link, f"linking {target.name}")
        os.replace(partial, target) if _same_fs(partial, target) else shutil.move(str(partial), str(target))
    return target


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(a.parent).st_dev == os.stat(b.parent).st_dev
    except OSError:
        return False


def _run_parallel(commands: list[list[str]], jobs: int, verbose: bool) -> None:
    pending = list(commands)
    running: list[tuple[subprocess.Popen, list[str]]] = []
    errors: list[str] = []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            argv = pending.pop(0)
            if verbose:
                print(" ".join(argv), file=sys.stderr)
            running.append((subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), argv))
        proc, argv = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode != 0:
            errors.append(f"  {' '.join(argv)}\n{err.strip() or out.strip()}")
        elif verbose and err.strip():
            print(err.strip(), file=sys.stderr)
    if errors:
        raise WasmBuildError("compiling the wasm module failed:\n" + "\n".join(errors))


def _odin_version(csrc: Path = CSRC) -> str:
    m = re.search(r'#define ODIN_VERSION "([^"]+)"', (csrc / "internal.h").read_text())
    return m.group(1) if m else "unknown"


def build(out_dir: Path = DEFAULT_OUT, variants: Sequence[str] = VARIANTS, *, cc: Optional[str] = None,
          sysroot: Optional[str] = None, jobs: int = 2, verbose: bool = False) -> dict:
    """Build the variants and write the manifest; returns the manifest."""
    if not (CSRC / "odin.h").is_file():
        raise WasmBuildError(f"the C sources are not here ({CSRC}): build from a source checkout of ODIN")
    compiler = find_compiler(cc, sysroot)
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    manifest = read_manifest(out_dir) or {}
    start = time.perf_counter()
    artifacts = dict(manifest.get("artifacts", {})) if manifest.get("source_sha256") == source_sha256() else {}
    for variant in variants:
        path = build_variant(variant, out_dir, compiler, jobs=jobs, verbose=verbose)
        data = path.read_bytes()
        artifacts[variant] = {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                              "cflags": COMMON_CFLAGS + VARIANT_CFLAGS[variant]}
    manifest = {
        "odin_version": _odin_version(),
        "format": BUILD_FORMAT,
        "target": "wasm32-wasi (reactor)",
        "compiler": compiler.description,
        "ldflags": LDFLAGS,
        "source_sha256": source_sha256(),
        "sources": [p.relative_to(CSRC).as_posix() for p in wasm_sources()],
        "exports": exported_functions() + wasm_only_exports(),
        "artifacts": artifacts,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, manifest_path)
    return manifest


def read_manifest(out_dir: Path = DEFAULT_OUT) -> Optional[dict]:
    try:
        return json.loads((Path(out_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def artifact_status(out_dir: Path = DEFAULT_OUT, variant: str = "simd128") -> tuple[bool, str]:
    """(up to date?, reason) for one built artifact against the current C sources."""
    manifest = read_manifest(out_dir)
    path = Path(out_dir) / artifact_name(variant)
    if manifest is None or not path.is_file():
        return False, f"{path} is not built (run: python tools/build_wasm.py)"
    entry = manifest.get("artifacts", {}).get(variant)
    if not entry:
        return False, f"{out_dir / MANIFEST} has no entry for {variant}"
    if manifest.get("source_sha256") != source_sha256():
        return False, (f"{path} was built from other C sources than csrc/ now holds "
                       "(rebuild: python tools/build_wasm.py)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
        return False, f"{path} does not match the sha256 recorded in {MANIFEST}"
    return True, "up to date"


def ensure_built(out_dir: Path = DEFAULT_OUT, variants: Sequence[str] = VARIANTS, **kwargs) -> dict[str, Path]:
    """Paths of the variants, rebuilding those that are missing or stale."""
    stale = [v for v in variants if not artifact_status(out_dir, v)[0]]
    if stale:
        build(out_dir, stale, **kwargs)
    return {v: Path(out_dir) / artifact_name(v) for v in variants}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--variant", choices=VARIANTS, action="append",
                        help="build only this variant (repeatable; default: both)")
    parser.add_argument("--cc", default=None,
                        help="compiler: 'zig' (the ziglang package, default) or a clang with wasm-ld")
    parser.add_argument("--sysroot", default=None,
                        help="WASI sysroot for --cc clang (default /usr/share/wasi-sysroot, else /usr: Debian's wasi-libc)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compiles (default 2)")
    parser.add_argument("--if-stale", action="store_true", help="build only when the sources changed")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the compiler commands")


def run_from_args(args: argparse.Namespace) -> int:
    variants = tuple(args.variant or VARIANTS)
    try:
        if args.if_stale and all(artifact_status(args.out, v)[0] for v in variants):
            print(f"{args.out}: up to date")
            return 0
        manifest = build(args.out, variants, cc=args.cc, sysroot=args.sysroot, jobs=args.jobs, verbose=args.verbose)
    except WasmBuildError as error:
        print(f"odin wasm build: {error}", file=sys.stderr)
        return 1
    for variant in variants:
        entry = manifest["artifacts"][variant]
        print(f"{Path(args.out) / entry['file']}  {entry['bytes'] / 1024:.1f} KiB  sha256 {entry['sha256'][:16]}")
    print(f"{manifest['compiler']}; ODIN {manifest['odin_version']}; {len(manifest['exports'])} exports; "
          f"{manifest['build_seconds']} s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="build_wasm.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
