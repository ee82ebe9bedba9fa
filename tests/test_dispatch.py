"""ISA dispatch: switching kernel tables, the ODIN_ISA override, CPU information, and the
ISAs against each other on identical inputs.

Cross-ISA tolerances: scalar and the SIMD files run the same algorithms with different
summation orders (VL lanes, 4 accumulators) and scalar uses unfused multiply-adds, so
results differ by rounding only: a few eps relative to the magnitude of what was summed,
growing like sqrt(terms). The bounds here are tight (c = 1..2 in tol * sqrt(n) * eps)
compared with a real disagreement (a wrong tail lane, a missing term), which is O(1).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import odin.kernels as K
import odin.native as native
import reference as R
from odin.native import UnsupportedISAError
from reference import F32_EPS as EPS, assert_close

ISAS = native.available_isas()


def _run_python(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ODIN_ISA", None)
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


# ================================================================= switching
def test_available_isas_are_sane():
    assert ISAS[0] == "scalar", "scalar is always available and listed first"
    assert len(set(ISAS)) == len(ISAS)
    assert set(ISAS) <= {"scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "wasm_simd128"}
    feats = native.cpu_info()["features"]
    if "avx512" in ISAS:
        assert {"avx512f", "avx512bw", "avx512vl", "avx512dq", "os-zmm-state"} <= set(feats)
        assert "avx2" in ISAS, "a CPU with the AVX-512 set also runs the AVX2 kernels"
    if "avx2" in ISAS:
        assert {"avx2", "fma", "f16c", "os-ymm-state"} <= set(feats)
    # the VNNI rows (quantized products with VNNI dot products) need their base and the feature
    if "avx512vnni" in ISAS:
        assert "avx512" in ISAS and "avx512vnni" in feats
    if "avxvnni" in ISAS:
        assert "avx2" in ISAS and "avxvnni" in feats


def test_default_isa_is_best_or_env(isa_at_import):
    wanted = os.environ.get("ODIN_ISA", "").strip().lower()  # any case is accepted
    assert isa_at_import == (wanted or ISAS[-1])


def test_set_isa_each_and_back():
    start = native.current_isa()
    try:
        for name in ISAS + list(reversed(ISAS)):
            native.set_isa(name)
            assert native.current_isa() == name
            # the table in use really changed: a kernel runs and is right
            x = np.linspace(-3, 3, 37, dtype=np.float32)
            np.testing.assert_allclose(K.vexp(x), np.exp(x.astype(np.float64)), rtol=2e-7)
    finally:
        native.set_isa(start)
    assert native.current_isa() == start


def test_isa_fixture_sets_and_restores(isa):
    assert native.current_isa() == isa


@pytest.mark.parametrize("name", ["bogus", "AVX2", "avx", "sse2", "", "scalar "])
def test_unknown_isa(name):
    before = native.current_isa()
    with pytest.raises(UnsupportedISAError) as ei:
        native.set_isa(name)
    msg = str(ei.value)
    assert f"'{name}'" in msg and "unknown ISA" in msg
    assert "scalar" in msg, "the message lists the ISAs this build knows"
    assert native.current_isa() == before, "a failed switch keeps the current ISA"
    assert isinstance(ei.value, RuntimeError)


def test_cpu_info_keys():
    info = native.cpu_info()
    assert set(info) >= {"cpu", "features", "available_isas", "isa", "compiler", "version"}
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert isinstance(info["features"], list) and all(isinstance(f, str) and f for f in info["features"])
    assert info["available_isas"] == ISAS
    assert info["isa"] == native.current_isa()
    assert info["version"] == native.version() and info["version"].count(".") >= 1
    assert info["compiler"]


# ================================================================= ODIN_ISA
@pytest.mark.parametrize("name", ISAS)
def test_odin_isa_env_override(name):
    res = _run_python("import odin.native as n; print(n.current_isa())", ODIN_ISA=name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == name


def test_odin_isa_env_bogus_fails_loudly():
    res = _run_python("import odin.native as n; print(n.current_isa())", ODIN_ISA="bogus")
    assert res.returncode != 0
    assert "ODIN_ISA" in res.stderr and "bogus" in res.stderr
    assert "UnsupportedISAError" in res.stderr
    assert res.stdout.strip() == "", "nothing may run on a silently substituted ISA"


def test_odin_isa_env_empty_means_best():
    res = _run_python("import odin.native as n; print(n.current_isa())", ODIN_ISA="")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ISAS[-1]


# ================================================================= ISAs against each other
def _on_each_isa(fn):
    """Run fn() on every ISA (restoring the current one); returns {isa: result}."""
    start = native.current_isa()
    out = {}
    try:
        for name in ISAS:
            native.set_isa(name)
            out[name] = fn()
    finally:
        native.set_isa(start)
    return out


def test_isas_agree_matmul():
    rng = np.random.default_rng(1)
    inp, w, b = (rng.standard_normal(s).astype(np.float32) for s in [(67, 300), (45, 300), (45,)])
    res = _on_each_isa(lambda: K.matmul_forward(inp, w, b))
    for name in ISAS:
        assert_close(res[name], res["scalar"], scale=R.matmul_magnitude(inp, w, b), tol=2 * np.sqrt(300) * EPS,
                     what=f"matmul {name}")
    dout = rng.standard_normal((67, 45)).astype(np.float32)
    resb = _on_each_isa(lambda: K.matmul_backward(dout, inp, w))
    sc = [np.abs(dout) @ np.abs(w), np.abs(dout).T @ np.abs(inp), np.abs(dout).sum(0)]
    for i, n in enumerate(["dinp", "dweight", "dbias"]):
        for name in ISAS:
            assert_close(resb[name][i], resb["scalar"][i], scale=sc[i], tol=2 * np.sqrt(67) * EPS, what=f"{n} {name}")


def test_isas_agree_elementwise_math():
    x = np.linspace(-20, 20, 100003).astype(np.float32)   # odd length: a tail for every VL
    for fn, rel in [(K.vexp, 3 * EPS), (K.vsigmoid, 4 * EPS)]:
        res = _on_each_isa(lambda: fn(x))
        for name in ISAS:
            assert_close(res[name], res["scalar"], rtol=rel, what=f"{fn.__name__} {name}")
    for fn in [K.vtanh, K.gelu_forward]:
        res = _on_each_isa(lambda: fn(x))
        for name in ISAS:
            # tanh-based: absolute error ~1.5e-7 (times |x| for GELU)
            assert_close(res[name], res["scalar"], scale=1 + np.abs(x), tol=2 * EPS, what=f"{fn.__name__} {name}")
    dout = np.random.default_rng(2).standard_normal(x.size).astype(np.float32)
    res = _on_each_isa(lambda: K.gelu_backward(dout, x))
    for name in ISAS:
        assert_close(res[name], res["scalar"], scale=np.abs(dout) * (1 + np.abs(x) ** 3), tol=2 * EPS, what="gelu bwd")


def test_isas_agree_norms_softmax():
    rng = np.random.default_rng(3)
    N, C = 33, 777
    x = (rng.standard_normal((N, C)) * 2 + 0.5).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    dout = rng.standard_normal((N, C)).astype(np.float32)
    tol = 2 * (np.sqrt(C) + 2) * EPS
    ln = _on_each_isa(lambda: K.layernorm_forward(x, w, b))
    for name in ISAS:
        assert_close(ln[name][0], ln["scalar"][0], scale=(np.abs(x) + 1) * np.abs(w) * ln["scalar"][2][:, None]
                     + np.abs(b), tol=tol, what=f"layernorm {name}")
        assert_close(ln[name][2], ln["scalar"][2], rtol=tol, what=f"rstd {name}")
    _, mean, rstd = ln["scalar"]
    lnb = _on_each_isa(lambda: K.layernorm_backward(dout, x, w, mean, rstd))
    ref = R.layernorm_backward(dout, x, w)
    for name in ISAS:
        for i in range(3):
            mag = np.abs(ref[i]).max()  # the gradients' own size; row/column sums of O(1) terms
            assert_close(lnb[name][i], lnb["scalar"][i], atol=tol * mag / 2, what=f"layernorm bwd {i} {name}")
    rms = _on_each_isa(lambda: K.rmsnorm_forward(x, w))
    for name in ISAS:
        assert_close(rms[name][0], rms["scalar"][0], scale=np.abs(rms["scalar"][0]), tol=tol, what=f"rmsnorm {name}")
    sm = _on_each_isa(lambda: K.softmax_forward(x))
    for name in ISAS:
        assert_close(sm[name], sm["scalar"], rtol=tol, what=f"softmax {name}")
    smb = _on_each_isa(lambda: K.softmax_backward(dout, sm["scalar"]))
    y = sm["scalar"]
    scale = y * (np.abs(dout) + (np.abs(dout) * y).sum(1, keepdims=True))
    for name in ISAS:
        assert_close(smb[name], smb["scalar"], scale=scale, tol=tol, what=f"softmax bwd {name}")


def test_isas_agree_attention():
    rng = np.random.default_rng(4)
    B, T, C, NH = 2, 37, 36, 4
    qkv = rng.standard_normal((B, T, 3 * C)).astype(np.float32)
    fw = _on_each_isa(lambda: K.attention_forward(qkv, NH))
    tol = 4 * (np.sqrt(C // NH) + np.sqrt(T)) * EPS
    for name in ISAS:
        assert_close(fw[name][1], fw["scalar"][1], atol=tol, rtol=tol, what=f"att {name}")
        assert_close(fw[name][0], fw["scalar"][0], atol=tol * np.abs(qkv).max(), what=f"attention out {name}")
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    att = fw["scalar"][1]
    bw = _on_each_isa(lambda: K.attention_backward(dout, qkv, att, NH))
    mag = np.abs(R.attention_backward(dout, qkv, NH)).max()
    for name in ISAS:
        assert_close(bw[name], bw["scalar"], atol=tol * mag / 2, what=f"attention bwd {name}")


def test_isas_agree_loss_optimizer_embedding():
    rng = np.random.default_rng(5)
    N, V = 65, 1001
    logits = (rng.standard_normal((N, V)) * 3).astype(np.float32)
    targets = rng.integers(0, V, N).astype(np.int32)
    mask = (rng.random(N) < 0.7).astype(np.uint8)
    ce = _on_each_isa(lambda: K.crossentropy_forward(logits, targets, mask))
    tol = 4 * (np.sqrt(V) + 2) * EPS
    for name in ISAS:
        assert abs(ce[name][0] - ce["scalar"][0]) <= tol * (1 + abs(ce["scalar"][0]) + np.abs(logits).max())
        assert_close(ce[name][2], ce["scalar"][2], atol=tol * (1 + np.abs(logits).max()), what=f"lse {name}")
    lse = ce["scalar"][2]
    ceb = _on_each_isa(lambda: K.crossentropy_backward(logits, lse, targets, mask))
    for name in ISAS:
        assert_close(ceb[name], ceb["scalar"], atol=8 * EPS / mask.sum(), rtol=8 * EPS, what=f"ce bwd {name}")

    n = 10007
    p0 = rng.standard_normal(n).astype(np.float32)
    gs = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]

    def opt():
        p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for t, g in enumerate(gs, 1):
            K.adamw(p, g, m, v, lr=1e-2, weight_decay=0.1, step=t)
        return p, m, v
    ad = _on_each_isa(opt)
    mabs = np.zeros(n)   # m = b1 m + (1-b1) g cancels: its rounding is relative to this
    for g in gs:
        mabs = 0.9 * mabs + 0.1 * np.abs(g)
    # p: |p| plus lr * an O(1) update whose relative error follows m's
    scales = [np.abs(ad["scalar"][0]) + 1e-2 * (1 + mabs / np.sqrt(ad["scalar"][2])), mabs, ad["scalar"][2]]
    for name in ISAS:
        for i in range(3):
            assert_close(ad[name][i], ad["scalar"][i], scale=scales[i], tol=16 * EPS, what=f"adamw[{i}] {name}")

    x = rng.standard_normal(100003).astype(np.float32)
    gn = _on_each_isa(lambda: K.global_norm(x))
    for name in ISAS:
        assert gn[name] == pytest.approx(gn["scalar"], rel=4 * np.sqrt(4096) * EPS)

    tokens = rng.integers(0, 50, (3, 41)).astype(np.int32)
    wte, wpe = rng.standard_normal((50, 33)).astype(np.float32), rng.standard_normal((64, 33)).astype(np.float32)
    em = _on_each_isa(lambda: K.embedding_forward(tokens, wte, wpe))
    dout = rng.standard_normal((3, 41, 33)).astype(np.float32)
    emb = _on_each_isa(lambda: K.embedding_backward(dout, tokens, np.zeros_like(wte), np.zeros_like(wpe)))
    for name in ISAS:
        # one addition per output; sums in the same fixed order: bit-identical
        np.testing.assert_array_equal(em[name], em["scalar"])
        np.testing.assert_array_equal(emb[name][0], emb["scalar"][0])
        np.testing.assert_array_equal(emb[name][1], emb["scalar"][1])
