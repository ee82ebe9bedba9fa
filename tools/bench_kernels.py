"""Speed of ODIN's native kernels per instruction set, measured side by side in one run.

    python tools/bench_kernels.py                    # full run, plain-text tables
    python tools/bench_kernels.py --quick            # fewer shapes, smaller sizes, fewer repeats
    python tools/bench_kernels.py --markdown --out docs/performance.md

Two tables:
  * matmul : GFLOP/s of the forward product (out = inp . W^T) and both backward products
             (dinp += dout . W, dW += dout^T . inp) per ISA (scalar / AVX2 / AVX-512, switched
             with odin.native.set_isa), next to numpy (OpenBLAS) on ONE thread, same run.
  * others : every other kernel of odin.kernels at a realistic size: time per call per ISA
             and the speedup over the scalar kernels.

Timing: time.perf_counter around one call, a warm-up call first, then best-of-N with the
contestants interleaved (round r times every contestant once) so that a burst of load from
another process on this shared machine hits all of them alike; the best run is the one
least disturbed. numpy overwrites its output where ODIN's backward products accumulate
(+=); the extra M*K / N*K additions are ODIN's cost, not numpy's.

--out FILE replaces the section between <!-- BEGIN kernels (tools/bench_kernels.py) -->
and <!-- END kernels --> in FILE (appended under "## Kernels" when absent).
"""
from __future__ import annotations

import os
import sys

# Single-threaded BLAS, set before numpy is imported (OpenBLAS reads it at load time).
# When numpy is already loaded (imported from pytest) the variables would change nothing
# but the environment of later subprocesses, so they are left alone and
# limit_blas_threads() asks the loaded OpenBLAS instead.
_NUMPY_PRELOADED = "numpy" in sys.modules
if not _NUMPY_PRELOADED:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from odin import native  # noqa: E402
from odin.native import ffi, lib  # noqa: E402

MATMUL_SHAPES: List[Tuple[int, int, int]] = [
    (2048, 128, 384), (2048, 256, 768), (1024, 384, 1536),
    (512, 512, 512), (1024, 1024, 1024), (64, 768, 768),
]
QUICK_MATMUL_SHAPES: List[Tuple[int, int, int]] = [(2048, 128, 384), (512, 512, 512), (64, 768, 768)]
PRODUCTS = ("fwd", "dinp", "dW")


# ----------------------------------------------------------------------------- helpers
def _openblas_libs() -> List[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux), e.g. numpy's."""
    libs = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1]
                if "openblas" in path.lower() and ".so" in path:
                    libs.add(path)
    except OSError:
        pass
    return sorted(libs)


def openblas_corename() -> Optional[str]:
    """The kernel family OpenBLAS picked at run time ('Haswell', 'SkylakeX', 'Zen', ...)."""
    for path in _openblas_libs():
        try:
            handle = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("openblas_get_corename", "openblas_get_corename64_",
                    "scipy_openblas_get_corename", "scipy_openblas_get_corename64_"):
            fn = getattr(handle, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                name = fn()
                return name.decode() if name else None
    return None


def limit_blas_threads() -> str:
    """Make sure numpy's BLAS runs on one thread; returns a note on how that was ensured.

    The environment variables above only work when this module is imported before numpy
    (the command line). Under pytest numpy is already loaded, so the OpenBLAS that is mapped
    into the process is asked directly."""
    if not _NUMPY_PRELOADED:
        return "OPENBLAS_NUM_THREADS=1 before numpy import"
    done = False
    for path in _openblas_libs():
        try:
            handle = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("openblas_set_num_threads", "openblas_set_num_threads64_",
                    "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_"):
            fn = getattr(handle, sym, None)
            if fn is not None:
                fn(1)
                done = True
                break
    return "openblas_set_num_threads(1)" if done else "numpy imported first: BLAS threads not limited"


def _fp(a: Optional[np.ndarray]):
    return ffi.NULL if a is None else ffi.cast("float *", ffi.from_buffer(a))


def _ip(a: np.ndarray):
    return ffi.cast("int32_t *", ffi.from_buffer(a))


def _check(status: int, what: str) -> None:
    native.check(status, what)


def race(contestants: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Best wall time (s) of each callable; one warm-up call each, then `repeats` rounds
    in which every contestant runs once (interleaved, so load bursts hit all alike).
    A callable may be a (setup, call) pair: setup (e.g. an ISA switch) runs untimed."""
    def split(f):
        return f if isinstance(f, tuple) else (None, f)

    for setup, call in map(split, contestants.values()):
        if setup:
            setup()
        call()
    best = {k: math.inf for k in contestants}
    for _ in range(repeats):
        for name, f in contestants.items():
            setup, call = split(f)
            if setup:
                setup()
            t0 = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _isa_setter(isa: str):
    return lambda: native.set_isa(isa)


def _cpu_details() -> str:
    """' (family 26 model 2; L1d 48K, L2 1024K, L3 32768K)' from Linux's /proc and /sys, or ''."""
    parts = []
    try:
        fields = {}
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        if "cpu family" in fields:
            parts.append(f"family {fields['cpu family']} model {fields.get('model', '?')}")
    except OSError:
        pass
    caches = []
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")) if base.exists() else []:
        try:
            kind = (d / "type").read_text().strip()
            if kind == "Instruction":
                continue
            level = (d / "level").read_text().strip()
            caches.append(f"L{level}{'d' if kind == 'Data' else ''} {(d / 'size').read_text().strip()}")
        except OSError:
            pass
    if caches:
        parts.append(", ".join(caches))
    return f" ({'; '.join(parts)})" if parts else ""


def machine() -> Dict[str, str]:
    info = native.cpu_info()
    blas = "OpenBLAS"
    try:  # numpy >= 1.25
        cfg = np.show_config(mode="dicts")
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = f"{b.get('name', 'BLAS')} {b.get('version', '')}".strip()
    except Exception:  # pragma: no cover - older numpy
        pass
    core = openblas_corename()
    if core:
        blas += f", its {core} kernels"
    return {
        "cpu": str(info["cpu"]) + _cpu_details(),
        "cores": str(os.cpu_count()),
        "isas": ", ".join(native.available_isas()),
        "compiler": str(info["compiler"]),
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": f"numpy {np.__version__} ({blas}, 1 thread)",
        "odin": str(info["version"]),
    }


# ----------------------------------------------------------------------------- matmul
def bench_matmul(shapes: Sequence[Tuple[int, int, int]], isas: Sequence[str], repeats: int,
                 numpy_ref: bool = True) -> List[dict]:
    """Rows {shape, product, gflops: {name: GFLOP/s}} with names numpy + each ISA."""
    rng = np.random.default_rng(0)
    old = native.current_isa()
    rows = []
    try:
        for (M, K, N) in shapes:
            x = rng.standard_normal((M, K), dtype=np.float32)
            w = rng.standard_normal((N, K), dtype=np.float32)
            dy = rng.standard_normal((M, N), dtype=np.float32)
            out = np.zeros((M, N), np.float32)
            dx = np.zeros((M, K), np.float32)
            dw = np.zeros((N, K), np.float32)
            flops = 2.0 * M * N * K
            ours = {
                "fwd": lambda: _check(lib.odin_matmul_forward(_fp(out), _fp(x), _fp(w), ffi.NULL, M, K, N), "fwd"),
                "dinp": lambda: _check(lib.odin_matmul_backward(_fp(dx), ffi.NULL, ffi.NULL, _fp(dy), _fp(x),
                                                                _fp(w), M, K, N), "dinp"),
                "dW": lambda: _check(lib.odin_matmul_backward(ffi.NULL, _fp(dw), ffi.NULL, _fp(dy), _fp(x),
                                                              _fp(w), M, K, N), "dW"),
            }
            theirs = {
                "fwd": lambda: np.matmul(x, w.T, out=out),
                "dinp": lambda: np.matmul(dy, w, out=dx),
                "dW": lambda: np.matmul(dy.T, x, out=dw),
            }
            for prod in PRODUCTS:
                contestants: Dict[str, object] = {}
                if numpy_ref:
                    contestants["numpy"] = theirs[prod]
                for isa in isas:
                    contestants[isa] = (_isa_setter(isa), ours[prod])
                t = race(contestants, repeats)
                rows.append({"shape": (M, K, N), "product": prod,
                             "gflops": {k: flops / v / 1e9 for k, v in t.items()}})
                dx.fill(0.0)
                dw.fill(0.0)
    finally:
        native.set_isa(old)
    return rows


# ----------------------------------------------------------------------------- other kernels
def _kernel_cases(quick: bool) -> List[Tuple[str, str, Callable[[], object]]]:
    """(name, size description, call) for every non-matmul kernel; buffers preallocated."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    cases: List[Tuple[str, str, Callable[[], object]]] = []

    # elementwise: a GPT MLP activation, B*T x 4C for B*T=64*256 tokens, C=192 (= 64*256 x 768)
    n = (16 if quick else 64) * 256 * 768
    x = (rng.standard_normal(n, dtype=f32) * 2).astype(f32)
    g = rng.standard_normal(n, dtype=f32)
    y = np.empty(n, f32)
    dxe = np.zeros(n, f32)
    size = f"{n // 768} x 768"
    cases += [
        ("gelu forward", size, lambda: lib.odin_gelu_forward(_fp(y), _fp(x), n)),
        ("gelu backward", size, lambda: lib.odin_gelu_backward(_fp(dxe), _fp(x), _fp(g), n)),
        ("vexp", size, lambda: lib.odin_vexp(_fp(y), _fp(x), n)),
        ("vsigmoid", size, lambda: lib.odin_vsigmoid(_fp(y), _fp(x), n)),
        ("vtanh", size, lambda: lib.odin_vtanh(_fp(y), _fp(x), n)),
    ]

    # normalisation: B*T rows of C=768
    N, C = (4 if quick else 16) * 256, 768
    xi = rng.standard_normal((N, C), dtype=f32)
    dout = rng.standard_normal((N, C), dtype=f32)
    wt = rng.standard_normal(C, dtype=f32)
    bs = rng.standard_normal(C, dtype=f32)
    o = np.empty((N, C), f32)
    mean, rstd = np.empty(N, f32), np.empty(N, f32)
    dxi, dwt, dbs = np.zeros((N, C), f32), np.zeros(C, f32), np.zeros(C, f32)
    lib.odin_layernorm_forward(_fp(o), _fp(mean), _fp(rstd), _fp(xi), _fp(wt), _fp(bs), N, C, 1e-5)
    size = f"{N} x {C}"
    cases += [
        ("layernorm forward", size,
         lambda: lib.odin_layernorm_forward(_fp(o), _fp(mean), _fp(rstd), _fp(xi), _fp(wt), _fp(bs), N, C, 1e-5)),
        ("layernorm backward", size,
         lambda: lib.odin_layernorm_backward(_fp(dxi), _fp(dwt), _fp(dbs), _fp(dout), _fp(xi), _fp(wt),
                                             _fp(mean), _fp(rstd), N, C)),
        ("rmsnorm forward", size,
         lambda: lib.odin_rmsnorm_forward(_fp(o), _fp(rstd), _fp(xi), _fp(wt), N, C, 1e-5)),
        ("rmsnorm backward", size,
         lambda: lib.odin_rmsnorm_backward(_fp(dxi), _fp(dwt), _fp(dout), _fp(xi), _fp(wt), _fp(rstd), N, C)),
    ]

    # softmax over rows (attention-like: B*NH*T rows of T)
    SN, SC = (2048 if quick else 8192), 512
    si = rng.standard_normal((SN, SC), dtype=f32)
    so = np.empty((SN, SC), f32)
    sd = rng.standard_normal((SN, SC), dtype=f32)
    sdx = np.zeros((SN, SC), f32)
    lib.odin_softmax_forward(_fp(so), _fp(si), SN, SC)
    size = f"{SN} x {SC}"
    cases += [
        ("softmax forward", size, lambda: lib.odin_softmax_forward(_fp(so), _fp(si), SN, SC)),
        ("softmax backward", size, lambda: lib.odin_softmax_backward(_fp(sdx), _fp(so), _fp(sd), SN, SC)),
    ]

    # causal attention B=4, T=128, C=256, NH=8
    B, T, AC, NH = 4, 128, 256, 8
    qkv = (rng.standard_normal((B, T, 3 * AC), dtype=f32) * 0.5).astype(f32)
    aout = np.empty((B, T, AC), f32)
    att = np.zeros((B, NH, T, T), f32)
    ad = rng.standard_normal((B, T, AC), dtype=f32)
    dqkv = np.zeros((B, T, 3 * AC), f32)
    scratch = np.empty(lib.odin_attention_scratch_floats(T, AC, NH), f32)
    slopes = (2.0 ** (-8.0 * np.arange(1, NH + 1) / NH)).astype(f32)
    lib.odin_attention_forward(_fp(aout), _fp(att), _fp(scratch), _fp(qkv), ffi.NULL, B, T, AC, NH)
    size = f"B={B} T={T} C={AC} NH={NH}"
    cases += [
        ("attention forward", size,
         lambda: lib.odin_attention_forward(_fp(aout), _fp(att), _fp(scratch), _fp(qkv), ffi.NULL, B, T, AC, NH)),
        ("attention forward ALiBi", size,
         lambda: lib.odin_attention_forward(_fp(aout), _fp(att), _fp(scratch), _fp(qkv), _fp(slopes), B, T, AC, NH)),
        ("attention backward", size,
         lambda: lib.odin_attention_backward(_fp(dqkv), _fp(scratch), _fp(ad), _fp(qkv), _fp(att), B, T, AC, NH)),
    ]

    # fused softmax + cross-entropy, 2048 tokens x 512 vocabulary
    CN, V = 2048, 512
    logits = rng.standard_normal((CN, V), dtype=f32)
    targets = rng.integers(0, V, CN).astype(np.int32)
    losses, lse = np.empty(CN, f32), np.empty(CN, f32)
    dlogits = np.zeros((CN, V), f32)
    mean_loss = ffi.new("float *")
    lib.odin_crossentropy_forward(mean_loss, _fp(losses), _fp(lse), _fp(logits), _ip(targets), ffi.NULL, CN, V)
    size = f"{CN} x {V}"
    cases += [
        ("crossentropy forward", size,
         lambda: lib.odin_crossentropy_forward(mean_loss, _fp(losses), _fp(lse), _fp(logits), _ip(targets),
                                               ffi.NULL, CN, V)),
        ("crossentropy backward", size,
         lambda: lib.odin_crossentropy_backward(_fp(dlogits), _fp(logits), _fp(lse), _ip(targets), ffi.NULL,
                                                CN, V, 1.0)),
    ]

    # AdamW over a parameter block
    P = (1 if quick else 8) * 1024 * 1024
    params = rng.standard_normal(P, dtype=f32)
    grads = rng.standard_normal(P, dtype=f32) * 1e-3
    m, v = np.zeros(P, f32), np.zeros(P, f32)
    cases += [
        ("adamw", f"{P // (1024 * 1024)}M params",
         lambda: lib.odin_adamw(_fp(params), _fp(grads), _fp(m), _fp(v), P, 1e-4, 0.9, 0.999, 1e-8, 0.01, 10)),
    ]

    # embedding: B*T tokens of C=768, vocabulary 4096, 256 positions
    EB, ET, EC, EV = (16 if quick else 64), 256, 768, 4096
    tokens = rng.integers(0, EV, (EB, ET)).astype(np.int32)
    wte = rng.standard_normal((EV, EC), dtype=f32)
    wpe = rng.standard_normal((ET, EC), dtype=f32)
    eo = np.empty((EB, ET, EC), f32)
    ed = rng.standard_normal((EB, ET, EC), dtype=f32)
    dwte, dwpe = np.zeros((EV, EC), f32), np.zeros((ET, EC), f32)
    size = f"{EB}x{ET} tokens, C={EC}, V={EV}"
    cases += [
        ("embedding forward", size,
         lambda: lib.odin_embedding_forward(_fp(eo), _ip(tokens), _fp(wte), _fp(wpe), EB, ET, EC, EV, ET)),
        ("embedding backward", size,
         lambda: lib.odin_embedding_backward(_fp(dwte), _fp(dwpe), _fp(ed), _ip(tokens), EB, ET, EC, EV, ET)),
    ]

    # RWKV-4 time mixing: the WKV recurrence (lanes = channels, a loop over T) and the token
    # shift, over B x T tokens of C = 768 channels
    RB, RT, RC = (4 if quick else 16), 256, 768
    td = rng.uniform(-5, 3, RC).astype(f32)
    tf = rng.standard_normal(RC, dtype=f32)
    rk, rv, rdy = (rng.standard_normal((RB, RT, RC), dtype=f32) for _ in range(3))
    ry = np.empty((RB, RT, RC), f32)
    dtd, dtf = np.zeros(RC, f32), np.zeros(RC, f32)
    drk, drv = np.zeros((RB, RT, RC), f32), np.zeros((RB, RT, RC), f32)
    wkv_scratch = np.empty(3 * RT * RC, f32)
    mix = rng.random(RC).astype(f32)
    size = f"{RB}x{RT} tokens, C={RC}"
    cases += [
        ("wkv forward", size,
         lambda: lib.odin_wkv_forward(_fp(ry), _fp(td), _fp(tf), _fp(rk), _fp(rv), RB, RT, RC)),
        ("wkv backward", size,
         lambda: lib.odin_wkv_backward(_fp(dtd), _fp(dtf), _fp(drk), _fp(drv), _fp(wkv_scratch), _fp(td), _fp(tf),
                                       _fp(rk), _fp(rv), _fp(rdy), RB, RT, RC)),
        ("token shift forward", size,
         lambda: lib.odin_tokenshift_forward(_fp(ry), _fp(rk), _fp(mix), ffi.NULL, RB, RT, RC)),
        ("token shift backward", size,
         lambda: lib.odin_tokenshift_backward(_fp(drk), _fp(dtd), _fp(rdy), _fp(rk), _fp(mix), RB, RT, RC)),
    ]
    return cases


def bench_kernels(isas: Sequence[str], repeats: int, quick: bool,
                  only: Optional[Sequence[str]] = None) -> List[dict]:
    """Rows {name, size, ms: {isa: ms per call}, speedup: {isa: x over scalar}}."""
    old = native.current_isa()
    rows = []
    try:
        for name, size, call in _kernel_cases(quick):
            if only is not None and name not in only:
                continue

            def checked(call=call, name=name):
                _check(call(), name)

            t = race({isa: (_isa_setter(isa), checked) for isa in isas}, repeats)
            base = t.get("scalar")
            rows.append({"name": name, "size": size, "ms": {k: v * 1e3 for k, v in t.items()},
                         "speedup": {k: (base / v if base else float("nan")) for k, v in t.items()}})
    finally:
        native.set_isa(old)
    return rows


# ----------------------------------------------------------------------------- report
def table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def matmul_table(rows: List[dict], isas: Sequence[str], markdown: bool) -> str:
    have_np = bool(rows) and "numpy" in rows[0]["gflops"]
    header = ["M, K, N", "product"] + (["numpy"] if have_np else []) + list(isas)
    if have_np and "avx512" in isas:
        header.append("avx512 / numpy")
    if have_np and "avx2" in isas:
        header.append("avx2 / numpy")
    for isa in isas:
        if isa != "scalar" and "scalar" in isas:
            header.append(f"{isa} / scalar")
    out = []
    for r in rows:
        g = r["gflops"]
        line = [",".join(str(d) for d in r["shape"]), r["product"]]
        line += ([f"{g['numpy']:.1f}"] if have_np else []) + [f"{g[i]:.1f}" for i in isas]
        if have_np and "avx512" in isas:
            line.append(f"{g['avx512'] / g['numpy'] * 100:.0f}%")
        if have_np and "avx2" in isas:
            line.append(f"{g['avx2'] / g['numpy'] * 100:.0f}%")
        for isa in isas:
            if isa != "scalar" and "scalar" in isas:
                line.append(f"{g[isa] / g['scalar']:.1f}x")
        out.append(line)
    return table(header, out, markdown)


def kernel_table(rows: List[dict], isas: Sequence[str], markdown: bool) -> str:
    header = ["kernel", "size"] + [f"{i} ms" for i in isas] + [f"{i} vs scalar" for i in isas if i != "scalar"]
    out = []
    for r in rows:
        line = [r["name"], r["size"]] + [f"{r['ms'][i]:.3f}" for i in isas]
        line += [f"{r['speedup'][i]:.1f}x" for i in isas if i != "scalar"]
        out.append(line)
    return table(header, out, markdown)


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def summary(mm: List[dict], kr: List[dict], isas: Sequence[str]) -> List[str]:
    lines = []
    if mm and "numpy" in mm[0]["gflops"]:
        for isa in isas:
            lines.append(f"matmul {isa}: geometric mean {geomean([r['gflops'][isa] for r in mm]):.1f} GFLOP/s, "
                         f"{geomean([r['gflops'][isa] / r['gflops']['numpy'] for r in mm]) * 100:.0f}% of numpy "
                         f"({geomean([r['gflops']['numpy'] for r in mm]):.1f} GFLOP/s)")
    if "scalar" in isas:
        for isa in isas:
            if isa == "scalar":
                continue
            if mm:
                lines.append(f"matmul {isa} vs scalar: {geomean([r['gflops'][isa] / r['gflops']['scalar'] for r in mm]):.1f}x "
                             "(geometric mean)")
            if kr:
                lines.append(f"other kernels {isa} vs scalar: {geomean([r['speedup'][isa] for r in kr]):.1f}x "
                             "(geometric mean)")
    return lines


def render(mach: Dict[str, str], blas_note: str, mm: List[dict], kr: List[dict], isas: Sequence[str],
           markdown: bool, quick: bool, repeats: int) -> str:
    out = []
    desc = (f"{mach['cpu']}, {mach['cores']} cores visible, ISAs {mach['isas']}; compiler {mach['compiler']}; "
            f"Python {mach['python']}, {mach['numpy']}; ODIN {mach['odin']}; {mach['date']}"
            f"{' (--quick)' if quick else ''}; best of {repeats} interleaved runs, single thread.")
    if markdown:
        out += [f"Machine: {desc}", "", f"numpy threads: {blas_note}.", ""]
    else:
        out += [f"machine: {desc}", f"numpy threads: {blas_note}", ""]
    if mm:
        head = "GEMM, GFLOP/s (fwd: out = inp . W^T; dinp += dout . W; dW += dout^T . inp)"
        out += [f"### {head}" if markdown else head, "", matmul_table(mm, isas, markdown), ""]
    if kr:
        head = "Other kernels, ms per call and speedup over scalar"
        out += [f"### {head}" if markdown else head, "", kernel_table(kr, isas, markdown), ""]
    s = summary(mm, kr, isas)
    if s:
        out += [("- " if markdown else "") + line for line in s] + [""]
    return "\n".join(out)


def replace_section(path: Path, body: str, name: str = "kernels") -> None:
    start, end = f"<!-- BEGIN {name} (tools/bench_kernels.py) -->", f"<!-- END {name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# ODIN performance\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Kernels\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes, smaller sizes, fewer repeats")
    ap.add_argument("--markdown", action="store_true", help="emit the tables as markdown")
    ap.add_argument("--out", type=Path, help="replace the kernels section of this markdown file (implies --markdown)")
    ap.add_argument("--repeats", type=int, default=None, help="best-of-N (default 5, --quick 3)")
    ap.add_argument("--isa", action="append", help="limit to these ISAs (repeatable)")
    ap.add_argument("--no-matmul", action="store_true")
    ap.add_argument("--no-kernels", action="store_true")
    args = ap.parse_args(argv)
    markdown = args.markdown or args.out is not None
    repeats = args.repeats or (3 if args.quick else 5)
    isas = [i for i in native.available_isas() if not args.isa or i in args.isa]
    blas_note = limit_blas_threads()
    mm = [] if args.no_matmul else bench_matmul(QUICK_MATMUL_SHAPES if args.quick else MATMUL_SHAPES, isas, repeats)
    kr = [] if args.no_kernels else bench_kernels(isas, repeats, args.quick)
    text = render(machine(), blas_note, mm, kr, isas, markdown, args.quick, repeats)
    print(text)
    if args.out:
        replace_section(args.out, text)
        print(f"wrote the kernels section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
