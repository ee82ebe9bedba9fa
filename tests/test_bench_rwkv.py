"""RWKV vs GPT speed (run with `pytest -m bench -s`): ratios measured side by side, floors
only where a noisy shared 2-core machine cannot break them (numbers: docs/performance.md,
written by tools/bench_rwkv.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import odin.native as native

pytestmark = pytest.mark.bench

TOOLS = Path(__file__).parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
_spec = importlib.util.spec_from_file_location("bench_rwkv", TOOLS / "bench_rwkv.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_rwkv"] = bench
_spec.loader.exec_module(bench)


def test_rwkv_decode_cost_is_flat_in_the_context_while_gpt_grows():
    contexts = [64, 4096]
    models = bench.train_models(max(contexts))
    ms = {name: bench.decode_ms_after(model, contexts) for name, model in models.items()}
    for name, row in ms.items():
        print(f"\n{name}: " + ", ".join(f"ctx {c}: {v:.3f} ms/token" for c, v in row.items()))
    assert ms["RWKV"][4096] < 1.5 * ms["RWKV"][64], "an RWKV decode step must not grow with the context"
    assert ms["GPT"][4096] > 2.0 * ms["GPT"][64], "GPT attends over 64x more keys at 4096"
    assert ms["RWKV"][4096] < ms["GPT"][4096]


def test_rwkv_trains_about_as_fast_as_gpt_of_equal_size():
    models = bench.train_models(64)
    assert abs(models["RWKV"].n_params / models["GPT"].n_params - 1) < 0.05
    tps = {name: bench.model_tokens_per_s(model, 32, 64, 1, steps=4) for name, model in models.items()}
    print(f"\nGPT {tps['GPT']:,.0f} tok/s, RWKV {tps['RWKV']:,.0f} tok/s, RWKV/GPT {tps['RWKV'] / tps['GPT']:.2f}x")
    assert tps["RWKV"] > 0.5 * tps["GPT"]


@pytest.mark.skipif("avx512" not in native.available_isas(), reason="needs AVX-512")
def test_wkv_kernel_avx512_beats_scalar():
    import time

    import numpy as np

    from odin import kernels

    rng = np.random.default_rng(0)
    B, T, C = 4, 256, 768
    k, v = rng.normal(size=(2, B, T, C)).astype(np.float32)
    decay, first = rng.normal(size=(2, C)).astype(np.float32)
    best = {}
    old = native.current_isa()
    try:
        for isa in ("scalar", "avx512"):
            native.set_isa(isa)
            kernels.wkv_forward(decay, first, k, v)
            times = []
            for _ in range(5):
                started = time.perf_counter()
                kernels.wkv_forward(decay, first, k, v)
                times.append(time.perf_counter() - started)
            best[isa] = min(times)
    finally:
        native.set_isa(old)
    print(f"\nWKV forward B={B} T={T} C={C}: scalar {best['scalar'] * 1e3:.2f} ms, "
          f"avx512 {best['avx512'] * 1e3:.2f} ms, {best['scalar'] / best['avx512']:.1f}x")
    assert best["scalar"] > 3 * best["avx512"]
