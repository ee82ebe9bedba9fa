"""Speed floor of the wasm SIMD128 kernels over the scalar wasm build (run with
`pytest -m bench`): tools/bench_wasm.py --quick, in node (V8).

Measured (docs/performance.md, wasm section): GEMM ~6x, the other kernels 2.3-5.9x,
geometric mean ~3.9x, the GPT training step ~4.7x (node 20). The floors are far lower so that they
hold on a busy shared machine; they catch a SIMD build that lost its vectorisation.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from wasm_support import wasm_path

pytestmark = [pytest.mark.bench,
              pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the benchmark runs in V8)")]

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_wasm.py"


def test_simd128_faster_than_scalar(tmp_path_factory, pytestconfig):
    wasm = wasm_path("simd128", tmp_path_factory)
    wasm_path("scalar", tmp_path_factory)
    spec = importlib.util.spec_from_file_location("odin_bench_wasm", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["odin_bench_wasm"] = mod
    spec.loader.exec_module(mod)
    res = mod.run(quick=True, wasm_dir=wasm.parent)
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print("\n" + mod.markdown(res))
    matmul = [r["speedup"] for r in res["kernels"] if r["kernel"].startswith("matmul")]
    assert min(matmul) >= 2.0, res["kernels"]
    assert res["geomean_speedup"] >= 1.5
    g = res["gpt"]
    assert g["scalar"]["train_step_s"] / g["simd128"]["train_step_s"] >= 2.0
