"""Every kernel of the native core, forward and backward, in the WebAssembly module
(under wasmtime) against the native library on the same inputs.

Modules: ``simd128`` (the wasm_simd128 kernels), the scalar kernels inside that same
module (``simd128/scalar``) and the SIMD-free build ``scalar``. The native side runs with
its default ISA (the best this CPU has: AVX-512 / AVX2 with FMA).

Tolerances (error = max |wasm - native| / max |native|, per output array):
* SIMD128 has no FMA, so every multiply-add rounds twice in wasm and once in the native
  FMA kernels, and the vector width (4 vs 8/16 lanes) changes the order of every sum;
  both move results by a few float32 ulps (1 ulp = 1.2e-7 relative).
* elementwise math (exp, sigmoid, tanh, GELU and its gradient; AdamW): <= 1e-6 — the
  polynomials' ~7 roundings; measured <= 3.4e-7 (GELU backward);
* reductions over a row (norms, softmax, attention, cross-entropy, embedding sums):
  <= 2e-6 — the sum order; measured <= 2.7e-7;
* GEMMs (K up to 192): <= 4e-6 — K-long dot products in another order; measured <= 4.1e-7.
(Measured against the AVX-512 kernels on the development machine; the margins of 3-10x
leave room for AVX2's other order of sums.)
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as R
from odin.native import lib
from wasm_support import native_run, wasm_path

ELEMENTWISE, ROWWISE, GEMM = 1e-6, 2e-6, 4e-6
MODULES = [("simd128", None), ("simd128", "scalar"), ("scalar", None)]


@pytest.fixture(scope="module", params=MODULES, ids=lambda m: m[0] + ("/" + m[1] if m[1] else ""))
def rt(request, tmp_path_factory):
    from odin.web.wasmrt import WasmOdin

    variant, isa = request.param
    r = WasmOdin(wasm_path(variant, tmp_path_factory))
    if isa:
        r.set_isa(isa)
    expected = isa or ("wasm_simd128" if variant == "simd128" else "scalar")
    assert r.current_isa() == expected
    return r


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def compare(rt, name, args, outputs, tol):
    """Run name(*args) natively and in wasm on copies; compare the arrays at `outputs`."""
    nat = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    was = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    native_run(name, *nat)
    rt.run(name, *was)
    worst = 0.0
    for i in outputs:
        n, w = nat[i], was[i]
        assert np.isfinite(w).all(), f"{name}: output {i} has NaN/Inf in wasm"
        scale = float(np.max(np.abs(n))) or 1.0
        err = float(np.max(np.abs(w.astype(np.float64) - n))) / scale
        worst = max(worst, err)
        assert err <= tol, f"{name}: output {i} differs by {err:.3g} (relative to max |x| = {scale:.3g}) > {tol:g}"
    return worst


# ---------------------------------------------------------------------------- GEMM
@pytest.mark.parametrize("M,K,N", [(13, 67, 29), (64, 128, 96), (3, 192, 50), (1, 36, 102)])
def test_matmul_forward(rt, rng, M, K, N):
    out = np.zeros((M, N), np.float32)
    compare(rt, "odin_matmul_forward", [out, f32(rng, M, K), f32(rng, N, K), f32(rng, N), M, K, N], [0], GEMM)
    compare(rt, "odin_matmul_forward", [out, f32(rng, M, K), f32(rng, N, K), None, M, K, N], [0], GEMM)


@pytest.mark.parametrize("M,K,N", [(13, 67, 29), (64, 128, 96)])
def test_matmul_backward(rt, rng, M, K, N):
    args = [f32(rng, M, K), f32(rng, N, K), f32(rng, N), f32(rng, M, N), f32(rng, M, K), f32(rng, N, K), M, K, N]
    compare(rt, "odin_matmul_backward", args, [0, 1, 2], GEMM)


def test_sgemm_strided(rt, rng):
    M, N, K = 21, 35, 47
    a = f32(rng, K, M)  # A = a^T: rsa = 1, csa = M
    b = f32(rng, N, K)  # B = b^T: rsb = 1, csb = K
    c = f32(rng, M, N)
    compare(rt, "odin_sgemm", [M, N, K, a, 1, M, b, 1, K, 1.0, c, N], [10], GEMM)


# ---------------------------------------------------------------------------- norms
@pytest.mark.parametrize("N,C", [(5, 67), (8, 128), (3, 3)])
def test_layernorm(rt, rng, N, C):
    x, w, b = f32(rng, N, C, scale=2.0) + 0.5, f32(rng, C), f32(rng, C)
    out, mean, rstd = np.zeros((N, C), np.float32), np.zeros(N, np.float32), np.zeros(N, np.float32)
    compare(rt, "odin_layernorm_forward", [out, mean, rstd, x, w, b, N, C, 1e-5], [0, 1, 2], ROWWISE)
    native_run("odin_layernorm_forward", out, mean, rstd, x, w, b, N, C, 1e-5)
    args = [f32(rng, N, C), f32(rng, C), f32(rng, C), f32(rng, N, C), x, w, mean, rstd, N, C]
    compare(rt, "odin_layernorm_backward", args, [0, 1, 2], ROWWISE)


@pytest.mark.parametrize("N,C", [(5, 67), (8, 128)])
def test_rmsnorm(rt, rng, N, C):
    x, w = f32(rng, N, C), f32(rng, C)
    out, rstd = np.zeros((N, C), np.float32), np.zeros(N, np.float32)
    compare(rt, "odin_rmsnorm_forward", [out, rstd, x, w, N, C, 1e-5], [0, 1], ROWWISE)
    native_run("odin_rmsnorm_forward", out, rstd, x, w, N, C, 1e-5)
    compare(rt, "odin_rmsnorm_backward", [f32(rng, N, C), f32(rng, C), f32(rng, N, C), x, w, rstd, N, C],
            [0, 1], ROWWISE)


# ---------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("n", [1, 7, 1027])
def test_elementwise(rt, rng, n):
    x = f32(rng, n, scale=3.0)
    for name in ("odin_gelu_forward", "odin_vexp", "odin_vsigmoid", "odin_vtanh"):
        compare(rt, name, [np.zeros(n, np.float32), x, n], [0], ELEMENTWISE)
    compare(rt, "odin_gelu_backward", [f32(rng, n), x, f32(rng, n), n], [0], ELEMENTWISE)


def test_exp_range_and_nan(rt):
    # the clamp ends and NaN propagation (vmax/vmin keep x86 maxps/minps semantics)
    x = np.array([-100.0, -87.5, -87.0, -1e-3, 0.0, 1e-3, 10.0, 88.0, 88.5, 100.0, np.inf, -np.inf, np.nan],
                 np.float32)
    nat, was = np.zeros_like(x), np.zeros_like(x)
    native_run("odin_vexp", nat, x, x.size)
    rt.run("odin_vexp", was, x, x.size)
    assert np.isnan(was[-1]) and np.isnan(nat[-1])
    np.testing.assert_allclose(was[:-1], nat[:-1], rtol=ELEMENTWISE, atol=0)


# ---------------------------------------------------------------------------- softmax, attention
@pytest.mark.parametrize("N,C", [(4, 5), (6, 130)])
def test_softmax(rt, rng, N, C):
    x = f32(rng, N, C, scale=4.0)
    out = np.zeros((N, C), np.float32)
    compare(rt, "odin_softmax_forward", [out, x, N, C], [0], ROWWISE)
    native_run("odin_softmax_forward", out, x, N, C)
    compare(rt, "odin_softmax_backward", [f32(rng, N, C), out, f32(rng, N, C), N, C], [0], ROWWISE)


@pytest.mark.parametrize("B,T,C,NH", [(2, 7, 24, 4), (1, 16, 36, 3), (1, 70, 20, 2)])
@pytest.mark.parametrize("alibi", [False, True])
def test_attention(rt, rng, B, T, C, NH, alibi):
    qkv = f32(rng, B, T, 3 * C)
    out, att = np.zeros((B, T, C), np.float32), np.zeros((B, NH, T, T), np.float32)
    scratch = np.zeros(lib.odin_attention_scratch_floats(T, C, NH), np.float32)
    slopes = R.alibi_slopes(NH).astype(np.float32) if alibi else None
    compare(rt, "odin_attention_forward", [out, att, scratch, qkv, slopes, B, T, C, NH], [0, 1], ROWWISE)
    native_run("odin_attention_forward", out, att, scratch, qkv, slopes, B, T, C, NH)
    args = [f32(rng, B, T, 3 * C), scratch, f32(rng, B, T, C), qkv, att, B, T, C, NH]
    compare(rt, "odin_attention_backward", args, [0], ROWWISE)


# ---------------------------------------------------------------------------- embedding, loss
def test_embedding(rt, rng):
    B, T, C, V, maxT = 3, 9, 67, 50, 12
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    wte, wpe = f32(rng, V, C), f32(rng, maxT, C)
    compare(rt, "odin_embedding_forward", [np.zeros((B, T, C), np.float32), tokens, wte, wpe, B, T, C, V, maxT],
            [0], ROWWISE)
    compare(rt, "odin_embedding_backward", [f32(rng, V, C), f32(rng, maxT, C), f32(rng, B, T, C), tokens,
                                            B, T, C, V, maxT], [0, 1], ROWWISE)


@pytest.mark.parametrize("masked", [False, True])
def test_crossentropy(rt, rng, masked):
    N, V = 11, 102
    logits = f32(rng, N, V, scale=3.0)
    targets = rng.integers(0, V, N).astype(np.int32)
    mask = (rng.random(N) < 0.6).astype(np.uint8) if masked else None
    if mask is not None:
        mask[0] = 1
    mean, losses, lse = np.zeros(1, np.float32), np.zeros(N, np.float32), np.zeros(N, np.float32)
    compare(rt, "odin_crossentropy_forward", [mean, losses, lse, logits, targets, mask, N, V], [0, 1, 2], ROWWISE)
    native_run("odin_crossentropy_forward", mean, losses, lse, logits, targets, mask, N, V)
    compare(rt, "odin_crossentropy_backward", [f32(rng, N, V), logits, lse, targets, mask, N, V, 0.7], [0], ROWWISE)


# ---------------------------------------------------------------------------- optimiser
def test_adamw_and_norms(rt, rng):
    n = 1031
    p, g = f32(rng, n), f32(rng, n, scale=1e-2)
    m, v = f32(rng, n, scale=1e-3), np.abs(f32(rng, n, scale=1e-4))
    compare(rt, "odin_adamw", [p, g, m, v, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7], [0, 2, 3], ELEMENTWISE)
    compare(rt, "odin_global_norm", [np.zeros(1, np.float32), g, n], [0], ROWWISE)
    compare(rt, "odin_clip_by_norm", [g, n, 0.05, np.zeros(1, np.float32)], [0, 3], ROWWISE)
    compare(rt, "odin_scale", [g, n, 0.37], [0], ELEMENTWISE)


# ---------------------------------------------------------------------------- errors
def test_errors_match_native(rt, rng):
    """Bad input gives the same status and message in wasm as natively."""
    from odin.native import OdinError
    from odin.web.wasmrt import WasmOdinError

    B, T, C, V, maxT = 1, 3, 8, 10, 4
    tokens = np.array([[1, 12, 3]], np.int32)
    args = [np.zeros((B, T, C), np.float32), tokens, f32(rng, V, C), f32(rng, maxT, C), B, T, C, V, maxT]
    with pytest.raises(OdinError) as nat:
        native_run("odin_embedding_forward", *args)
    with pytest.raises(WasmOdinError) as was:
        rt.run("odin_embedding_forward", *args)
    assert str(was.value) == str(nat.value)
    assert was.value.status_name == "BAD_ARG"
    with pytest.raises(WasmOdinError, match="C \\(10\\) must be divisible by NH \\(3\\)"):
        rt.run("odin_attention_forward", np.zeros(30, np.float32), np.zeros(9, np.float32),
               np.zeros(64, np.float32), np.zeros(90, np.float32), None, 1, 3, 10, 3)
    with pytest.raises(WasmOdinError, match="unknown ISA 'avx512'"):
        rt.set_isa("avx512")


# ---------------------------------------------------------------------------- quantized weights
# The quantizer is the same scalar C in both builds: byte-identical blocks. The products: up to
# 8 rows integer block dot products on 8-bit activations (exact integer sums; the per-block
# scaling and the float sums differ in order and FMA), more rows dequantize-then-GEMM.
# Relative to the largest |output|, the "_0" codes' offset (taken off at the end of a row's sum)
# can cancel terms several times larger than it: 2e-5, measured <= 6.5e-7.
QUANT = 2e-5


@pytest.mark.parametrize("name,type_", [("q8_0", 8), ("q4_0", 2), ("q4_1", 3), ("q5_0", 6), ("q5_1", 7)])
@pytest.mark.parametrize("M,K,N", [(1, 96, 33), (3, 64, 7), (9, 96, 13)])
def test_quantized_products(rt, rng, name, type_, M, K, N):
    W = f32(rng, N, K)
    blocks = np.zeros((N, int(lib.odin_quant_row_bytes(type_, K))), np.uint8)
    native_run("odin_quantize", type_, W, blocks, N, K)
    in_wasm = np.zeros_like(blocks)
    rt.run("odin_quantize", type_, W, in_wasm, N, K)
    assert np.array_equal(blocks, in_wasm)
    out = np.zeros((M, N), np.float32)
    compare(rt, "odin_qmatmul", [type_, blocks, f32(rng, M, K), f32(rng, N), out, M, K, N], [4], QUANT)
