#!/usr/bin/env python3
"""Build the ODIN C library with a sanitizer and run a short training under it.

    python tools/sanitize.py [thread|address|all] [--keep] [--csrc DIR]

`thread`  : -fsanitize=thread            (data races, lock-order inversions)
`address` : -fsanitize=address,undefined (out-of-bounds, use-after-free, leaks via
            LeakSanitizer, undefined behaviour via UBSan)

Every csrc/**/*.c (the WebAssembly-only files excepted) is compiled together with
tests/native/sanitize_main.c — no Python in the process — by $CC (default gcc) with
`-O1 -g -fno-omit-frame-pointer -std=gnu11 -pthread -Icsrc` into a temporary directory,
and the program is run with the sanitizer set to stop at its first report. Exit status:
0 clean, 1 a report / build failure / wrong output, 2 this toolchain has no runtime
for the sanitizer (the reason is printed).

ThreadSanitizer on kernels with high ASLR entropy (vm.mmap_rnd_bits > 28) dies with
"unexpected memory mapping" before main; the tool then reruns the program under
`setarch <machine> -R` (ASLR off for that child only), which is the known workaround.
The same retry covers AddressSanitizer's "shadow memory range interleaves" variant.

The functions (supports, unsupported_reason, check_library, check_program) are what
tests/test_sanitizers.py calls.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
NATIVE_TESTS = ROOT / "tests" / "native"
MAIN = NATIVE_TESTS / "sanitize_main.c"
RACY = NATIVE_TESTS / "racy.c"
OVERFLOW = NATIVE_TESTS / "overflow_main.c"
WASM_ONLY = {"wasm_simd128.c", "wasm_api.c"}  # as odin/_build_ffi.py

KINDS = ("thread", "address")
COMMON_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-std=gnu11", "-pthread"]
SANITIZE_FLAGS = {
    "thread": ["-fsanitize=thread"],
    "address": ["-fsanitize=address,undefined"],
}
RUNTIME_ENV = {
    "thread": {"TSAN_OPTIONS": "halt_on_error=1 second_deadlock_stack=1"},
    "address": {
        "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    },
}
RUNTIME_LIB = {"thread": "libtsan", "address": "libasan/libubsan"}
# Lines that mean a sanitizer reported something (checked even when the exit status is 0).
REPORT_PATTERNS = [
    re.compile(r"WARNING: ThreadSanitizer"),
    re.compile(r"ERROR: (Address|Leak|Thread)Sanitizer"),
    re.compile(r"SUMMARY: (Address|Leak|Thread|UndefinedBehavior)Sanitizer"),
    re.compile(r"runtime error: "),
]
# The sanitizer runtime could not set up its shadow memory (ASLR): retry with setarch -R.
ASLR_PATTERNS = [
    re.compile(r"unexpected memory mapping"),
    re.compile(r"Shadow memory range interleaves with an existing memory mapping"),
    re.compile(r"ASan shadow was supposed to be located"),
]

BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 300


class BuildError(RuntimeError):
    """The compiler or linker failed; str() holds the command and its output."""


@dataclasses.dataclass
class Outcome:
    kind: str
    ok: bool                 # built, ran, exit 0, no report, expected output seen
    returncode: int | None   # of the program (None: did not build or timed out)
    output: str              # the program's stdout + stderr (or the build error)
    build_s: float = 0.0
    run_s: float = 0.0
    used_setarch: bool = False
    reports: list[str] = dataclasses.field(default_factory=list)  # sanitizer SUMMARY / first lines
    workdir: str | None = None  # kept build directory (keep=True)

    def describe(self) -> str:
        status = "clean" if self.ok else "FAILED"
        parts = [f"{self.kind}: {status} (build {self.build_s:.1f} s, run {self.run_s:.1f} s"
                 + (", under setarch -R" if self.used_setarch else "") + f", exit {self.returncode})"]
        parts += [f"  report: {r}" for r in self.reports]
        if self.workdir:
            parts.append(f"  build kept in {self.workdir}")
        return "\n".join(parts)


# ---------------------------------------------------------------- toolchain
def compiler() -> list[str]:
    """$CC split like a shell would (e.g. "ccache gcc"), default gcc."""
    return shlex.split(os.environ.get("CC") or "gcc")


def library_sources(csrc: Path = CSRC) -> list[Path]:
    """Every C file of the native library, as the Python extension builds it."""
    return sorted(p for p in Path(csrc).rglob("*.c") if p.name not in WASM_ONLY)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown sanitizer {kind!r}: expected one of {', '.join(KINDS)}")


def _compile_one(cc: list[str], flags: list[str], src: Path, obj: Path) -> None:
    cmd = cc + flags + ["-c", str(src), "-o", str(obj)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=BUILD_TIMEOUT_S)
    if r.returncode != 0:
        raise BuildError(f"$ {shlex.join(cmd)}\n{r.stdout}")


def build(kind: str, sources: list[Path], workdir: Path, name: str = "prog",
          include_dirs: tuple[Path, ...] = (CSRC,)) -> Path:
    """Compile `sources` (in parallel, one object each) and link them with the sanitizer."""
    _check_kind(kind)
    cc = compiler()
    flags = COMMON_FLAGS + SANITIZE_FLAGS[kind] + [f"-I{d}" for d in include_dirs]
    workdir.mkdir(parents=True, exist_ok=True)
    objs = [workdir / f"{i:02d}_{Path(s).stem}.o" for i, s in enumerate(sources)]
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for f in [pool.submit(_compile_one, cc, flags, Path(s), o) for s, o in zip(sources, objs)]:
                f.result()
        exe = workdir / name
        cmd = cc + COMMON_FLAGS + SANITIZE_FLAGS[kind] + [str(o) for o in objs] + ["-o", str(exe), "-lm"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=BUILD_TIMEOUT_S)
    except FileNotFoundError as e:
        raise BuildError(f"C compiler not found: {shlex.join(cc)} ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"compiler timed out after {e.timeout} s: {e.cmd}") from e
    if r.returncode != 0:
        raise BuildError(f"$ {shlex.join(cmd)}\n{r.stdout}")
    return exe


def _env(kind: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RUNTIME_ENV[kind])
    return env


def _exec(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                           timeout=timeout, errors="replace")
        return r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out + f"\n[sanitize.py] timed out after {timeout} s\n"


def run_exe(kind: str, exe: Path, args: tuple[str, ...] = (), timeout: float = RUN_TIMEOUT_S
            ) -> tuple[int | None, str, bool]:
    """Run a sanitized program; returns (exit status, output, ran under setarch -R).
    On a shadow-memory mapping failure (high ASLR entropy) it retries once with ASLR off."""
    env = _env(kind)
    cmd = [str(exe), *args]
    rc, out = _exec(cmd, env, timeout)
    if rc != 0 and any(p.search(out) for p in ASLR_PATTERNS):
        setarch = shutil.which("setarch")
        if setarch is None:
            return rc, out + ("\n[sanitize.py] the sanitizer could not map its shadow memory and "
                              "`setarch` (util-linux) is missing, so it cannot rerun with ASLR off\n"), False
        rc2, out2 = _exec([setarch, platform.machine(), "-R", *cmd], env, timeout)
        return rc2, (f"[sanitize.py] first attempt failed to map shadow memory; "
                     f"reran under `setarch {platform.machine()} -R`\n" + out2), True
    return rc, out, False


def find_reports(output: str) -> list[str]:
    """The sanitizer's own summary lines (or first report lines) in a program's output."""
    lines = [ln.strip() for ln in output.splitlines()]
    summaries = [ln for ln in lines if ln.startswith("SUMMARY:")]
    if summaries:
        return summaries
    return [ln for ln in lines if any(p.search(ln) for p in REPORT_PATTERNS)][:5]


# ---------------------------------------------------------------- support probe
_PROBE = r"""
#include <pthread.h>
#include <stdlib.h>
static int value;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void *work(void *arg) { pthread_mutex_lock(&mu); value += *(int *)arg; pthread_mutex_unlock(&mu); return NULL; }
int main(void) {
    int *one = malloc(sizeof *one);
    *one = 1;
    pthread_t t;
    if (pthread_create(&t, NULL, work, one)) return 1;
    work(one);
    pthread_join(t, NULL);
    free(one);
    return value == 2 ? 0 : 1;
}
"""


@functools.lru_cache(maxsize=None)
def unsupported_reason(kind: str) -> str | None:
    """None when $CC can build AND run a trivial program with this sanitizer; otherwise
    why not (no compiler, no runtime library, the runtime cannot start here)."""
    _check_kind(kind)
    cc = compiler()
    flag = " ".join(SANITIZE_FLAGS[kind])
    with tempfile.TemporaryDirectory(prefix=f"odin-probe-{kind}-") as d:
        src = Path(d) / "probe.c"
        src.write_text(_PROBE)
        try:
            exe = build(kind, [src], Path(d), "probe", include_dirs=())
        except BuildError as e:
            text = str(e)
            if text.startswith("C compiler not found"):
                return text
            lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
            missing = re.search(r"cannot find (-l\S*san\S*|\S*lib\w*san\S*)", text)
            if missing:
                return (f"{shlex.join(cc)} cannot link {flag}: {missing.group(0).rstrip(':')} "
                        f"(the {RUNTIME_LIB[kind]} runtime is not installed)")
            err = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
            return f"{shlex.join(cc)} cannot build {flag} programs: {err}"
        rc, out, _ = run_exe(kind, exe, timeout=60)
        if rc != 0:
            tail = " | ".join(out.strip().splitlines()[-3:])
            return f"a trivial {flag} program built by {shlex.join(cc)} cannot run here (exit {rc}): {tail}"
    return None


def supports(kind: str) -> bool:
    """Can this toolchain build and run programs with the sanitizer `kind`?"""
    return unsupported_reason(kind) is None


# ---------------------------------------------------------------- checks
def check_program(kind: str, sources: list[Path], args: tuple[str, ...] = (), keep: bool = False,
                  expect_output: str | None = None, name: str = "prog",
                  timeout: float = RUN_TIMEOUT_S, include_dirs: tuple[Path, ...] = (CSRC,)) -> Outcome:
    """Build `sources` with the sanitizer and run them. ok only if the program exits 0,
    nothing was reported, and (if given) `expect_output` appears as a whole line."""
    _check_kind(kind)
    workdir = Path(tempfile.mkdtemp(prefix=f"odin-sanitize-{kind}-"))
    try:
        t0 = time.perf_counter()
        try:
            exe = build(kind, list(sources), workdir, name, include_dirs=include_dirs)
        except BuildError as e:
            return Outcome(kind, False, None, f"build failed:\n{e}", time.perf_counter() - t0,
                           workdir=str(workdir) if keep else None)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rc, out, used_setarch = run_exe(kind, exe, args, timeout)
        run_s = time.perf_counter() - t0
        reports = find_reports(out)
        ok = rc == 0 and not reports
        if ok and expect_output is not None and expect_output not in out.splitlines():
            ok = False
            out += f"\n[sanitize.py] expected a line {expect_output!r} in the output\n"
        return Outcome(kind, ok, rc, out, build_s, run_s, used_setarch, reports,
                       str(workdir) if keep else None)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def check_library(kind: str, keep: bool = False, csrc: Path = CSRC,
                  timeout: float = RUN_TIMEOUT_S) -> Outcome:
    """The library (csrc, or another copy of it) + tests/native/sanitize_main.c under the
    sanitizer: a short multi-threaded training with live statistics and control from
    another thread, kernels, generation, for every ISA the CPU runs. ok only if the
    program prints OK, exits 0 and the sanitizer reported nothing."""
    csrc = Path(csrc)
    return check_program(kind, library_sources(csrc) + [MAIN], keep=keep, expect_output="OK",
                         name=f"odin_sanitize_{kind}", timeout=timeout, include_dirs=(csrc,))


def check_overflow_shapes(kind: str = "address", keep: bool = False, csrc: Path = CSRC,
                          timeout: float = RUN_TIMEOUT_S) -> Outcome:
    """The library + tests/native/overflow_main.c: shapes whose sizes overflow int or size_t
    (tensor counts, parameter blocks, workspaces, caches) and NaN sampler inputs, straight
    into the C API. ok only if each is a clean error, the program prints OK, and the
    sanitizer reported nothing (no heap overflow, no signed overflow)."""
    csrc = Path(csrc)
    return check_program(kind, library_sources(csrc) + [OVERFLOW], keep=keep, expect_output="OK",
                         name=f"odin_overflow_{kind}", timeout=timeout, include_dirs=(csrc,))


# ---------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", nargs="?", default="all", choices=[*KINDS, "all"])
    ap.add_argument("--keep", action="store_true", help="keep the build directory (printed)")
    ap.add_argument("--csrc", type=Path, default=CSRC, help="library sources (default: csrc/)")
    ap.add_argument("--quiet", action="store_true", help="print the program's output only on failure")
    args = ap.parse_args(argv)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    failed = unsupported = False
    for kind in kinds:
        reason = unsupported_reason(kind)
        if reason:
            print(f"{kind}: cannot run: {reason}")
            unsupported = True
            continue
        for check in (check_library, check_overflow_shapes):
            out = check(kind, keep=args.keep, csrc=args.csrc)
            if not out.ok or not args.quiet:
                print(f"---- {kind}: {check.__name__} output ----")
                print(out.output.rstrip())
                print("----")
            print(out.describe())
            failed |= not out.ok
    return 1 if failed else 2 if unsupported else 0


if __name__ == "__main__":
    sys.exit(main())
