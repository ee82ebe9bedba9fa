#!/usr/bin/env python3
"""WebAssembly kernel speed: the SIMD128 build against the scalar build, with the native
library (its best ISA, one thread) for reference.

    python tools/bench_wasm.py            # Markdown tables
    python tools/bench_wasm.py --quick    # fewer, shorter repeats (tests/test_wasm_bench.py)
    python tools/bench_wasm.py --json

The wasm modules run in node (V8: the engine of Chromium, so these are the browser's
numbers), driven by tools/bench_wasm.mjs; the native kernels run through cffi here. Each
case gets the same shapes everywhere (uniform [0, 1) data) and its median time per call
over the repeats is reported; "x scalar" = scalar time / SIMD128 time. (wasmtime-py was
the first choice, but its ~50 µs per call would swamp the small kernels; the numerical
tests use it, where call overhead does not matter.) The GPT rows use the default
recipe's shape (arith-3digit: 3 layers, d_model 128, 4 heads, context 32, vocabulary 102):
one training step (forward + backward + AdamW) on a 16 x 14 batch through
OdinModel.trainStep, and token-by-token generation of one sequence through OdinModel.stream.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from odin import native  # noqa: E402
from odin.native import ffi, lib  # noqa: E402

GPT = dict(vocab_size=102, context=32, n_layer=3, n_head=4, d_model=128, batch=16, seq=14)


def cases() -> list[dict]:
    M = K = N = 256
    n = 1 << 18
    R, C = 512, 128
    B, T, Ca, NH = 4, 32, 128, 4
    scratch = ((T + 15) // 16 * 16) * (4 * (Ca // NH) + 2)  # odin_attention_scratch_floats
    V = 1024
    f = lambda k: {"f32": k}  # noqa: E731
    return [
        {"label": "matmul fwd 256x256x256", "flops": 2 * M * K * N, "fn": "odin_matmul_forward",
         "args": [f(M * N), f(M * K), f(N * K), f(N), M, K, N]},
        {"label": "matmul bwd 256x256x256", "flops": 4 * M * K * N, "fn": "odin_matmul_backward",
         "args": [f(M * K), f(N * K), f(N), f(M * N), f(M * K), f(N * K), M, K, N]},
        {"label": "gelu fwd 256k", "fn": "odin_gelu_forward", "args": [f(n), f(n), n]},
        {"label": "gelu bwd 256k", "fn": "odin_gelu_backward", "args": [f(n), f(n), f(n), n]},
        {"label": "exp 256k", "fn": "odin_vexp", "args": [f(n), f(n), n]},
        {"label": "layernorm fwd 512x128", "fn": "odin_layernorm_forward",
         "args": [f(R * C), f(R), f(R), f(R * C), f(C), f(C), R, C, 1e-5]},
        {"label": "layernorm bwd 512x128", "fn": "odin_layernorm_backward",
         "args": [f(R * C), f(C), f(C), f(R * C), f(R * C), f(C), f(R), f(R), R, C]},
        {"label": "softmax fwd 512x1024", "fn": "odin_softmax_forward", "args": [f(R * V), f(R * V), R, V]},
        {"label": "softmax bwd 512x1024", "fn": "odin_softmax_backward", "args": [f(R * V), f(R * V), f(R * V), R, V]},
        {"label": "attention fwd B4 T32 C128 H4", "fn": "odin_attention_forward",
         "args": [f(B * T * Ca), f(B * NH * T * T), f(scratch), f(B * T * 3 * Ca), None, B, T, Ca, NH]},
        {"label": "attention bwd B4 T32 C128 H4", "fn": "odin_attention_backward",
         "args": [f(B * T * 3 * Ca), f(scratch), f(B * T * Ca), f(B * T * 3 * Ca), f(B * NH * T * T), B, T, Ca, NH]},
        {"label": "cross-entropy fwd 512x1024", "fn": "odin_crossentropy_forward",
         "args": [f(1), f(R), f(R), f(R * V), {"i32": [R, V]}, None, R, V]},
        {"label": "cross-entropy bwd 512x1024", "fn": "odin_crossentropy_backward",
         "args": [f(R * V), f(R * V), f(R), {"i32": [R, V]}, None, R, V, 1.0]},
        {"label": "adamw 256k", "fn": "odin_adamw",
         "args": [f(n), f(n), f(n), f(n), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3]},
    ]


def _median_time(fn, repeats: int, min_s: float) -> float:
    fn()
    fn()
    per = []
    for _ in range(repeats):
        k, t0 = 0, time.perf_counter()
        while True:
            fn()
            k += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        per.append(dt / k)
    return statistics.median(per)


def native_side(repeats: int, min_s: float) -> dict:
    rng = np.random.default_rng(1)
    out = {}
    for c in cases():
        keep, cargs = [], []
        for a in c["args"]:
            if isinstance(a, dict):
                if "f32" in a:
                    arr = rng.random(a["f32"], dtype=np.float32)
                    cargs.append(ffi.cast("float *", ffi.from_buffer(arr)))
                else:
                    arr = rng.integers(0, a["i32"][1], a["i32"][0]).astype(np.int32)
                    cargs.append(ffi.cast("int32_t *", ffi.from_buffer(arr)))
                keep.append(arr)  # a cast pointer does not keep its buffer alive
            else:
                cargs.append(ffi.NULL if a is None else a)
        fn = getattr(lib, c["fn"])
        assert fn(*cargs) == 0, f"native {c['fn']}: {native.last_error()}"
        out[c["label"]] = _median_time(lambda: fn(*cargs), repeats, min_s)
    from odin.model import GPT as NativeGPT, GPTShape

    g = GPT
    model = NativeGPT(GPTShape(vocab_size=g["vocab_size"], context=g["context"], n_layer=g["n_layer"],
                               n_head=g["n_head"], d_model=g["d_model"]))
    model.init_weights(1)
    tokens = rng.integers(3, g["vocab_size"], (g["batch"], g["seq"] + 1)).astype(np.int32)
    mask = np.ones((g["batch"], g["seq"]), np.uint8)
    step = [0]

    def train():
        step[0] += 1
        model.zero_grad()
        model.forward(tokens[:, :-1], tokens[:, 1:], mask)
        model.backward()
        model.adamw_step(lr=1e-4, step=step[0])

    train_s = _median_time(train, repeats, min_s)
    rates = []
    for _ in range(repeats):  # the C greedy loop, one sequence to the end of the context
        t0 = time.perf_counter()
        got = model.generate_greedy([[1, 5]], max_new=g["context"] - 2, end_id=-1)[0]
        rates.append(len(got) / (time.perf_counter() - t0))
    return {"kernels": out, "gpt": {"train_step_s": train_s, "decode_tokens_per_s": statistics.median(rates)}}


def wasm_side(repeats: int, min_s: float, wasm_dir: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the wasm benchmark runs in node (V8)")
    spec = {"variants": ["simd128", "scalar"], "cases": cases(), "repeats": repeats, "min_ms": min_s * 1000,
            "wasm_dir": str(wasm_dir), "gpt": GPT}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        proc = subprocess.run([node, str(ROOT / "tools" / "bench_wasm.mjs"), fh.name], capture_output=True,
                              text=True, timeout=600)
    finally:
        Path(fh.name).unlink()
    if proc.returncode:
        raise RuntimeError(f"node failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, wasm_dir: Path = ROOT / "web" / "wasm") -> dict:
    repeats, min_s = (3, 0.02) if quick else (7, 0.2)
    wasm = wasm_side(repeats, min_s, wasm_dir)
    nat = native_side(repeats, min_s)
    rows = []
    for c in cases():
        t = {v: next(k["seconds"] for k in wasm["variants"][v]["kernels"] if k["label"] == c["label"])
             for v in ("simd128", "scalar")}
        t["native"] = nat["kernels"][c["label"]]
        rows.append({"kernel": c["label"], "flops": c.get("flops"), "seconds": t, "speedup": t["scalar"] / t["simd128"]})
    gpt = {v: wasm["variants"][v]["gpt"] for v in ("simd128", "scalar")}
    gpt["native"] = nat["gpt"]
    info = native.cpu_info()
    return {"machine": {"cpu": info["cpu"], "native_isa": info["isa"], "node": wasm["node"]},
            "kernels": rows, "gpt": gpt, "quick": quick,
            "geomean_speedup": float(np.exp(np.mean(np.log([r["speedup"] for r in rows]))))}


def markdown(res: dict) -> str:
    m = res["machine"]
    out = [f"{m['cpu']}; wasm in node {m['node']} (V8, as in Chromium), one thread; native: {m['native_isa']} "
           "kernels, one thread.", "",
           "| kernel | wasm SIMD128 | wasm scalar | SIMD128 vs scalar | native | native vs SIMD128 |",
           "|---|---:|---:|---:|---:|---:|"]

    def fmt(row, side):
        s = row["seconds"][side]
        if row["flops"]:
            return f"{row['flops'] / s / 1e9:.1f} GFLOP/s"
        return f"{s * 1e6:.0f} µs" if s < 1e-2 else f"{s * 1e3:.1f} ms"

    for r in res["kernels"]:
        s = r["seconds"]
        out.append(f"| {r['kernel']} | {fmt(r, 'simd128')} | {fmt(r, 'scalar')} | {r['speedup']:.1f}x | "
                   f"{fmt(r, 'native')} | {s['simd128'] / s['native']:.1f}x |")
    out.append(f"| **geometric mean** | | | **{res['geomean_speedup']:.1f}x** | | |")
    g = res["gpt"]
    tok = GPT["batch"] * GPT["seq"]
    out += ["", "| GPT (arith-3digit shape, 612k parameters) | wasm SIMD128 | wasm scalar | native |", "|---|---:|---:|---:|",
            f"| training step, {GPT['batch']} x {GPT['seq']} tokens (forward + backward + AdamW) | "
            + " | ".join(f"{g[k]['train_step_s'] * 1e3:.1f} ms ({tok / g[k]['train_step_s']:,.0f} tokens/s)"
                         for k in ("simd128", "scalar", "native")) + " |",
            "| generation, one sequence (KV cache) | "
            + " | ".join(f"{g[k]['decode_tokens_per_s']:,.0f} tokens/s" for k in ("simd128", "scalar", "native")) + " |"]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--wasm-dir", type=Path, default=ROOT / "web" / "wasm")
    args = ap.parse_args(argv)
    res = run(args.quick, args.wasm_dir)
    print(json.dumps(res, indent=1) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
