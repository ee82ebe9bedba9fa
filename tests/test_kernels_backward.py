"""Backward kernels x every available ISA.

Three independent checks per kernel:
 1. analytic: the C gradient against the float64 analytic gradient of tests/reference.py,
    with non-zero gradient buffers passed in, so the += (accumulate) contract is tested
    at the same time (result - initial buffer == gradient; the same array is returned);
 2. the reference's analytic gradient against central finite differences of the float64
    reference forward (h = 1e-6: truncation ~h^2, cancellation ~1e-16/h, both << 1e-6);
 3. directional derivative of the C FORWARD itself: L(x) = sum(forward(x) * R) for a random
    R; (L(x + e d) - L(x - e d)) must equal <grad, (x + e d) - (x - e d)> where grad is the
    C backward with dout = R. The float32 points are rounded, so the exact float64
    difference of the two rounded points is used. e = 1e-2 (1e-3 for the sharper kernels):
    central-difference truncation is ~e^2 relative and the float32 noise of L is ~1e-7 *
    sqrt(size) against a signal of ~e * size, so a relative tolerance of 1e-2 is generous
    for correct code and a wrong gradient (a missing term, a wrong tail) fails by O(1).
    d = random + (reference gradient / its rms), so <grad, d> is never accidentally ~0.

Analytic tolerances: tol * scale, where scale is the same computation done on absolute
values (|dout| @ |W| for a product, and so on) and tol = c * sqrt(terms summed) * eps as in
test_kernels_forward.py. The backward kernels also receive the C forward's float32 saved
values (mean, rstd, att), whose own errors are folded into the scale.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import odin.kernels as K
import reference as R
from odin.native import ffi, lib
from reference import F32_EPS as EPS, assert_close

ROWS_COLS = [(1, 1), (3, 7), (7, 17), (17, 33), (33, 255), (255, 3), (64, 768)]


def randn(rng, *shape, scale=1.0, loc=0.0):
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32)


def direction(rng, gref):
    """A random direction with a component along the reference gradient."""
    g = R.f64(gref)
    rms = np.sqrt(np.mean(g * g))
    d = rng.standard_normal(g.shape)
    return d + (g / rms if rms > 0 else 0.0)


def directional_check(loss, x, grad, gref, rng, eps=1e-2, rtol=1e-2, what=""):
    """Compare the finite difference of the float32 loss(x) along d with <grad, dx>."""
    d = direction(rng, gref)
    xp, xm, dx = R.perturb_pair(x, d, eps)
    fd = loss(xp) - loss(xm)
    an = float(np.sum(R.f64(grad) * dx))
    assert abs(fd - an) <= rtol * abs(an), f"{what}: finite difference {fd:.6g} vs <grad, dx> {an:.6g}"


def L(out, Rw):
    return float(np.sum(R.f64(out) * Rw))


# ====================================================================== matmul
MATMUL_SHAPES = [(1, 1, 1), (3, 7, 17), (17, 33, 7), (33, 255, 3), (255, 17, 33), (64, 768, 64), (130, 300, 70)]


def _matmul_grads_scales(dout, inp, w):
    ad, ai, aw = np.abs(R.f64(dout)), np.abs(R.f64(inp)), np.abs(R.f64(w))
    return ad @ aw, ad.T @ ai, ad.sum(axis=0)


@pytest.mark.parametrize("M,K_,N", MATMUL_SHAPES)
def test_matmul_backward_analytic_accumulates(isa, rng, M, K_, N):
    inp, w, dout = randn(rng, M, K_), randn(rng, N, K_), randn(rng, M, N)
    g0 = [randn(rng, M, K_), randn(rng, N, K_), randn(rng, N)]
    bufs = [g.copy() for g in g0]
    dinp, dw, db = K.matmul_backward(dout, inp, w, dinp=bufs[0], dweight=bufs[1], dbias=bufs[2])
    assert dinp is bufs[0] and dw is bufs[1] and db is bufs[2], "gradients must be accumulated in place"
    refs = R.matmul_backward(dout, inp, w)
    scales = _matmul_grads_scales(dout, inp, w)
    tols = [2 * np.sqrt(N + 1) * EPS, 2 * np.sqrt(M + 1) * EPS, 2 * np.sqrt(M + 1) * EPS]
    for name, got, start, ref, sc, tol in zip(["dinp", "dweight", "dbias"], (dinp, dw, db), g0, refs, scales, tols):
        # += : result = initial + gradient (the initial value's own rounding: eps |g0|)
        assert_close(got, R.f64(start) + ref, scale=sc + np.abs(start), tol=tol,
                     what=f"matmul {name} {isa} {(M, K_, N)}")


def test_matmul_backward_default_buffers_and_need_bias(isa, rng):
    M, K_, N = 17, 33, 7
    inp, w, dout = randn(rng, M, K_), randn(rng, N, K_), randn(rng, M, N)
    dinp, dw, db = K.matmul_backward(dout, inp, w, need_bias=False)
    assert db is None
    refs = R.matmul_backward(dout, inp, w)
    sc = _matmul_grads_scales(dout, inp, w)
    assert_close(dinp, refs[0], scale=sc[0], tol=2 * np.sqrt(N + 1) * EPS, what="dinp")
    assert_close(dw, refs[1], scale=sc[1], tol=2 * np.sqrt(M + 1) * EPS, what="dweight")


@pytest.mark.parametrize("want", [c for c in itertools.product([0, 1], repeat=3)])
def test_matmul_backward_each_gradient_optional(isa, rng, want):
    """At the C level dinp / dweight / dbias may each be NULL: the others are unaffected
    (bit-identical to computing all three) and nothing crashes."""
    M, K_, N = 33, 70, 17
    inp, w, dout = randn(rng, M, K_), randn(rng, N, K_), randn(rng, M, N)
    full = K.matmul_backward(dout, inp, w)
    bufs = [np.zeros((M, K_), np.float32), np.zeros((N, K_), np.float32), np.zeros(N, np.float32)]
    ptrs = [ffi.cast("float *", ffi.from_buffer(b)) if on else ffi.NULL for b, on in zip(bufs, want)]
    fp = lambda a: ffi.cast("float *", ffi.from_buffer(a))  # noqa: E731
    status = lib.odin_matmul_backward(ptrs[0], ptrs[1], ptrs[2], fp(dout), fp(inp), fp(w), M, K_, N)
    assert status == lib.ODIN_OK
    for on, got, ref in zip(want, bufs, full):
        if on:
            np.testing.assert_array_equal(got, ref)
        else:
            assert np.all(got == 0.0)


@pytest.mark.parametrize("M,K_,N", [(1, 1, 1), (3, 7, 17), (33, 255, 3), (64, 768, 64)])
def test_matmul_backward_directional(isa, rng, M, K_, N):
    inp, w, b = randn(rng, M, K_), randn(rng, N, K_), randn(rng, N)
    Rw = rng.standard_normal((M, N))
    dinp, dw, db = K.matmul_backward(Rw.astype(np.float32), inp, w)
    rdinp, rdw, rdb = R.matmul_backward(Rw, inp, w)
    directional_check(lambda x: L(K.matmul_forward(x, w, b), Rw), inp, dinp, rdinp, rng, what="matmul d/dinp")
    directional_check(lambda x: L(K.matmul_forward(inp, x, b), Rw), w, dw, rdw, rng, what="matmul d/dweight")
    directional_check(lambda x: L(K.matmul_forward(inp, w, x), Rw), b, db, rdb, rng, what="matmul d/dbias")


def test_reference_matmul_backward_vs_finite_differences(rng):
    inp, w, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    Rw = rng.standard_normal((3, 5))
    dinp, dw, db = R.matmul_backward(Rw, inp, w)
    np.testing.assert_allclose(dinp, R.numerical_grad(lambda x: np.sum(R.matmul(x, w, b) * Rw), inp), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, R.numerical_grad(lambda x: np.sum(R.matmul(inp, x, b) * Rw), w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, R.numerical_grad(lambda x: np.sum(R.matmul(inp, w, x) * Rw), b), rtol=1e-6, atol=1e-8)


# ====================================================================== layernorm
def _layernorm_case(rng, N, C):
    x = randn(rng, N, C, scale=2.0, loc=0.5)
    w, b = randn(rng, C, scale=0.5, loc=1.0), randn(rng, C, scale=0.5)
    return x, w, b


@pytest.mark.parametrize("N,C", ROWS_COLS)
def test_layernorm_backward_analytic_accumulates(isa, rng, N, C):
    x, w, b = _layernorm_case(rng, N, C)
    dout = randn(rng, N, C)
    _, mean, rstd = K.layernorm_forward(x, w, b)
    g0 = [randn(rng, N, C), randn(rng, C), randn(rng, C)]
    bufs = [g.copy() for g in g0]
    res = K.layernorm_backward(dout, x, w, mean, rstd, dinp=bufs[0], dweight=bufs[1], dbias=bufs[2])
    assert all(r is bb for r, bb in zip(res, bufs))
    rdx, rdw, rdb = R.layernorm_backward(dout, x, w)
    # magnitudes: the same formula on absolute values; norm's own error (from the saved
    # float32 mean/rstd) is relative to (|x| + |mean|) * rstd
    _, rmean, rrstd = R.layernorm(x, w, b)
    xs = (np.abs(R.f64(x)) + np.abs(rmean)[:, None]) * rrstd[:, None]
    adn = np.abs(R.f64(dout) * w)
    sdx = rrstd[:, None] * (adn + adn.mean(axis=1, keepdims=True) * (1 + xs)
                            + xs * (adn * xs).mean(axis=1, keepdims=True))
    # dinp: row reductions over C; dweight: a sum over N rows of terms carrying norm's
    # sqrt(C) eps error; dbias: a sum over N rows
    tol_c, tol_n = 2 * (np.sqrt(C) + 2) * EPS, 2 * (np.sqrt(N) + 2) * EPS
    assert_close(res[0], R.f64(g0[0]) + rdx, scale=sdx + np.abs(g0[0]), tol=tol_c, what=f"layernorm dinp {isa}")
    assert_close(res[1], R.f64(g0[1]) + rdw, scale=(np.abs(R.f64(dout)) * xs).sum(axis=0) + np.abs(g0[1]),
                 tol=tol_c + tol_n, what=f"layernorm dweight {isa}")
    assert_close(res[2], R.f64(g0[2]) + rdb, scale=np.abs(R.f64(dout)).sum(axis=0) + np.abs(g0[2]), tol=tol_n,
                 what=f"layernorm dbias {isa}")


@pytest.mark.parametrize("N,C", [(1, 3), (3, 7), (17, 33), (64, 768)])
def test_layernorm_backward_directional(isa, rng, N, C):
    x, w, b = _layernorm_case(rng, N, C)
    Rw = rng.standard_normal((N, C))
    _, mean, rstd = K.layernorm_forward(x, w, b)
    dx, dw, db = K.layernorm_backward(Rw.astype(np.float32), x, w, mean, rstd)
    rdx, rdw, rdb = R.layernorm_backward(Rw, x, w)
    directional_check(lambda v: L(K.layernorm_forward(v, w, b)[0], Rw), x, dx, rdx, rng, what="layernorm d/dinp")
    directional_check(lambda v: L(K.layernorm_forward(x, v, b)[0], Rw), w, dw, rdw, rng, what="layernorm d/dweight")
    directional_check(lambda v: L(K.layernorm_forward(x, w, v)[0], Rw), b, db, rdb, rng, what="layernorm d/dbias")


def test_reference_layernorm_backward_vs_finite_differences(rng):
    x, w, b = rng.standard_normal((3, 7)), rng.standard_normal(7), rng.standard_normal(7)
    Rw = rng.standard_normal((3, 7))
    dx, dw, db = R.layernorm_backward(Rw, x, w)
    f = lambda xx, ww, bb: np.sum(R.layernorm(xx, ww, bb)[0] * Rw)  # noqa: E731
    np.testing.assert_allclose(dx, R.numerical_grad(lambda v: f(v, w, b), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, R.numerical_grad(lambda v: f(x, v, b), w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, R.numerical_grad(lambda v: f(x, w, v), b), rtol=1e-6, atol=1e-8)


# ====================================================================== rmsnorm
@pytest.mark.parametrize("N,C", ROWS_COLS)
def test_rmsnorm_backward_analytic_accumulates(isa, rng, N, C):
    x, w = randn(rng, N, C, scale=2.0, loc=0.5), randn(rng, C, scale=0.5, loc=1.0)
    dout = randn(rng, N, C)
    _, rstd = K.rmsnorm_forward(x, w)
    g0 = [randn(rng, N, C), randn(rng, C)]
    bufs = [g.copy() for g in g0]
    res = K.rmsnorm_backward(dout, x, w, rstd, dinp=bufs[0], dweight=bufs[1])
    assert res[0] is bufs[0] and res[1] is bufs[1]
    rdx, rdw = R.rmsnorm_backward(dout, x, w)
    _, rrstd = R.rmsnorm(x, w)
    xs = np.abs(R.f64(x)) * rrstd[:, None]
    adn = np.abs(R.f64(dout) * w)
    sdx = rrstd[:, None] * (adn + xs * (adn * xs).mean(axis=1, keepdims=True))
    tol_c, tol_n = 2 * (np.sqrt(C) + 2) * EPS, 2 * (np.sqrt(N) + 2) * EPS
    assert_close(res[0], R.f64(g0[0]) + rdx, scale=sdx + np.abs(g0[0]), tol=tol_c, what=f"rmsnorm dinp {isa}")
    assert_close(res[1], R.f64(g0[1]) + rdw, scale=(np.abs(R.f64(dout)) * xs).sum(axis=0) + np.abs(g0[1]),
                 tol=tol_c + tol_n, what=f"rmsnorm dweight {isa}")


@pytest.mark.parametrize("N,C", [(1, 3), (3, 7), (17, 33), (64, 768)])
def test_rmsnorm_backward_directional(isa, rng, N, C):
    x, w = randn(rng, N, C, scale=2.0, loc=0.5), randn(rng, C, scale=0.5, loc=1.0)
    Rw = rng.standard_normal((N, C))
    _, rstd = K.rmsnorm_forward(x, w)
    dx, dw = K.rmsnorm_backward(Rw.astype(np.float32), x, w, rstd)
    rdx, rdw = R.rmsnorm_backward(Rw, x, w)
    directional_check(lambda v: L(K.rmsnorm_forward(v, w)[0], Rw), x, dx, rdx, rng, what="rmsnorm d/dinp")
    directional_check(lambda v: L(K.rmsnorm_forward(x, v)[0], Rw), w, dw, rdw, rng, what="rmsnorm d/dweight")


def test_reference_rmsnorm_backward_vs_finite_differences(rng):
    x, w = rng.standard_normal((3, 7)), rng.standard_normal(7)
    Rw = rng.standard_normal((3, 7))
    dx, dw = R.rmsnorm_backward(Rw, x, w)
    np.testing.assert_allclose(dx, R.numerical_grad(lambda v: np.sum(R.rmsnorm(v, w)[0] * Rw), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, R.numerical_grad(lambda v: np.sum(R.rmsnorm(x, v)[0] * Rw), w), rtol=1e-6, atol=1e-8)


# ====================================================================== GELU
@pytest.mark.parametrize("shape", [(1,), (3,), (7,), (17,), (33,), (255,), (64, 768)])
def test_gelu_backward_analytic_accumulates(isa, rng, shape):
    x, dout = randn(rng, *shape, scale=3.0), randn(rng, *shape)
    g0 = randn(rng, *shape)
    buf = g0.copy()
    assert K.gelu_backward(dout, x, dinp=buf) is buf
    # gelu' = 0.5 (1 + t) + 0.5 x (1 - t^2) du: tanh's absolute error (~1.5e-7) is
    # multiplied by |x| du in the second term (du ~ 1 + 3c x^2)
    x64 = np.abs(R.f64(x))
    scale = np.abs(R.f64(dout)) * (1 + x64 * (1 + 3 * R.GELU_C * x64 ** 2)) + np.abs(g0)
    assert_close(buf, R.f64(g0) + R.gelu_grad(x) * dout, scale=scale, tol=8 * EPS, what=f"gelu backward {isa}")


@pytest.mark.parametrize("shape", [(1,), (17,), (255,), (64, 768)])
def test_gelu_backward_directional(isa, rng, shape):
    x = randn(rng, *shape, scale=2.0)
    Rw = rng.standard_normal(shape)
    g = K.gelu_backward(Rw.astype(np.float32), x)
    directional_check(lambda v: L(K.gelu_forward(v), Rw), x, g, R.gelu_grad(x) * Rw, rng, eps=1e-3,
                      what="gelu")


def test_reference_gelu_grad_vs_finite_differences(rng):
    x = np.concatenate([rng.standard_normal(50) * 3, [0.0, -5.0, 5.0]])
    np.testing.assert_allclose(R.gelu_grad(x), R.numerical_grad(lambda v: np.sum(R.gelu(v)), x), rtol=1e-6, atol=1e-8)


# ====================================================================== softmax
@pytest.mark.parametrize("N,C", ROWS_COLS)
def test_softmax_backward_analytic_accumulates(isa, rng, N, C):
    x, dout = randn(rng, N, C, scale=3.0), randn(rng, N, C)
    y = K.softmax_forward(x)
    g0 = randn(rng, N, C)
    buf = g0.copy()
    assert K.softmax_backward(dout, y, dinp=buf) is buf
    y64, ad = R.softmax(x), np.abs(R.f64(dout))
    scale = y64 * (ad + (ad * y64).sum(axis=1, keepdims=True)) + np.abs(g0)
    tol = 4 * (np.sqrt(C) + 2) * EPS
    assert_close(buf, R.f64(g0) + R.softmax_backward(dout, x), scale=scale, tol=tol, what=f"softmax backward {isa}")


@pytest.mark.parametrize("N,C", [(1, 3), (3, 7), (17, 33), (64, 768)])
def test_softmax_backward_directional(isa, rng, N, C):
    x = randn(rng, N, C, scale=2.0)
    Rw = rng.standard_normal((N, C))
    g = K.softmax_backward(Rw.astype(np.float32), K.softmax_forward(x))
    directional_check(lambda v: L(K.softmax_forward(v), Rw), x, g, R.softmax_backward(Rw, x), rng, eps=3e-3,
                      what="softmax")


def test_reference_softmax_backward_vs_finite_differences(rng):
    x, Rw = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    np.testing.assert_allclose(R.softmax_backward(Rw, x),
                               R.numerical_grad(lambda v: np.sum(R.softmax(v) * Rw), x), rtol=1e-6, atol=1e-8)


# ====================================================================== attention
ATTN_SHAPES = [(1, 1, 3, 1), (1, 3, 7, 7), (2, 7, 17, 1), (1, 17, 33, 3), (2, 33, 12, 4), (2, 64, 128, 4),
               (1, 131, 20, 2)]


def _attention_backward_scale(qkv, dout, NH):
    """The backward computation on absolute values, times the forward att's relative error."""
    q64, d64 = R.f64(qkv), np.abs(R.f64(dout))
    B, T, C3 = q64.shape
    C = C3 // 3
    hs = C // NH
    split = lambda a: np.abs(a).reshape(B, T, NH, hs).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q64[:, :, :C]), split(q64[:, :, C:2 * C]), split(q64[:, :, 2 * C:])
    _, att = R.attention(qkv, NH)
    dy = split(d64)
    causal = np.tril(np.ones((T, T), bool))
    smag = np.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs), 0.0).max(axis=-1, keepdims=True)
    att_s = att * (1 + 2 * smag)             # forward att error scale (see test_kernels_forward)
    datt = dy @ v.transpose(0, 1, 3, 2)
    dpre = att_s * (datt + (datt * att).sum(axis=-1, keepdims=True)) / np.sqrt(hs)
    dpre = dpre * (1 + 2 * smag)
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, C)  # noqa: E731
    return np.concatenate([merge(dpre @ k), merge(dpre.transpose(0, 1, 3, 2) @ q),
                           merge(att_s.transpose(0, 1, 3, 2) @ dy)], axis=2), hs, T


@pytest.mark.parametrize("B,T,C,NH", ATTN_SHAPES)
def test_attention_backward_analytic_accumulates(isa, rng, B, T, C, NH):
    qkv, dout = randn(rng, B, T, 3 * C), randn(rng, B, T, C)
    _, att = K.attention_forward(qkv, NH)
    g0 = randn(rng, B, T, 3 * C)
    buf = g0.copy()
    assert K.attention_backward(dout, qkv, att, NH, dqkv=buf) is buf
    scale, hs, T_ = _attention_backward_scale(qkv, dout, NH)
    tol = 2 * (np.sqrt(hs) + np.sqrt(T_) + 2) * EPS
    assert_close(buf, R.f64(g0) + R.attention_backward(dout, qkv, NH), scale=scale + np.abs(g0), tol=tol,
                 what=f"attention backward {isa} {(B, T, C, NH)}")


@pytest.mark.parametrize("B,T,C,NH", [(1, 1, 3, 1), (1, 7, 12, 3), (2, 17, 33, 3), (2, 64, 128, 4)])
def test_attention_backward_directional(isa, rng, B, T, C, NH):
    qkv = randn(rng, B, T, 3 * C)
    Rw = rng.standard_normal((B, T, C))
    _, att = K.attention_forward(qkv, NH)
    g = K.attention_backward(Rw.astype(np.float32), qkv, att, NH)
    directional_check(lambda v: L(K.attention_forward(v, NH)[0], Rw), qkv, g, R.attention_backward(Rw, qkv, NH),
                      rng, eps=1e-3, what="attention")


@pytest.mark.parametrize("B,T,C,NH", [(1, 7, 12, 3), (1, 131, 20, 2)])
def test_attention_backward_directional_alibi(isa, rng, B, T, C, NH):
    """ALiBi biases are constants: the backward of the biased forward reads only its att."""
    slopes = R.alibi_slopes(NH).astype(np.float32)
    qkv = randn(rng, B, T, 3 * C)
    Rw = rng.standard_normal((B, T, C))
    _, att = K.attention_forward(qkv, NH, slopes)
    g = K.attention_backward(Rw.astype(np.float32), qkv, att, NH)
    directional_check(lambda v: L(K.attention_forward(v, NH, slopes)[0], Rw), qkv, g,
                      R.attention_backward(Rw, qkv, NH, slopes), rng, eps=1e-3, what="attention alibi")


@pytest.mark.parametrize("alibi", [False, True])
def test_reference_attention_backward_vs_finite_differences(rng, alibi):
    B, T, C, NH = 2, 4, 6, 2
    slopes = R.alibi_slopes(NH) if alibi else None
    qkv, Rw = rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, T, C))
    num = R.numerical_grad(lambda v: np.sum(R.attention(v, NH, slopes)[0] * Rw), qkv)
    np.testing.assert_allclose(R.attention_backward(Rw, qkv, NH, slopes), num, rtol=1e-6, atol=1e-8)


def test_attention_backward_future_tokens_get_no_gradient_from_the_past(isa, rng):
    """Causality: a loss on position 0 only must give zero gradient to k, v (and q) of t > 0."""
    B, T, C, NH = 1, 9, 12, 2
    qkv = randn(rng, B, T, 3 * C)
    _, att = K.attention_forward(qkv, NH)
    dout = np.zeros((B, T, C), np.float32)
    dout[:, 0] = randn(rng, B, C)
    g = K.attention_backward(dout, qkv, att, NH)
    assert np.all(g[:, 1:] == 0.0)
    assert np.any(g[:, 0] != 0.0)


# ====================================================================== embedding
@pytest.mark.parametrize("B,T,C,V,maxT", [(1, 1, 1, 1, 1), (3, 7, 17, 5, 9), (2, 33, 255, 7, 33), (4, 64, 768, 50, 128)])
def test_embedding_backward_analytic_accumulates(isa, rng, B, T, C, V, maxT):
    tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
    dout = randn(rng, B, T, C)
    g0 = [randn(rng, V, C), randn(rng, maxT, C)]
    bufs = [g.copy() for g in g0]
    dwte, dwpe = K.embedding_backward(dout, tokens, bufs[0], bufs[1])
    assert dwte is bufs[0] and dwpe is bufs[1]
    rwte, rwpe = R.embedding_backward(dout, tokens, V, maxT)
    swte, swpe = R.embedding_backward(np.abs(R.f64(dout)), tokens, V, maxT)
    # sequential float32 sums of at most B*T (dwte) or B (dwpe) terms
    assert_close(dwte, R.f64(g0[0]) + rwte, scale=swte + np.abs(g0[0]), tol=2 * np.sqrt(B * T + 1) * EPS,
                 what=f"dwte {isa}")
    assert_close(dwpe, R.f64(g0[1]) + rwpe, scale=swpe + np.abs(g0[1]), tol=2 * np.sqrt(B + 1) * EPS,
                 what=f"dwpe {isa}")
    # rows of wte no token used, and positions >= T, are untouched
    unused = np.setdiff1d(np.arange(V), tokens)
    np.testing.assert_array_equal(dwte[unused], g0[0][unused])
    np.testing.assert_array_equal(dwpe[T:], g0[1][T:])


def test_embedding_backward_directional(isa, rng):
    B, T, C, V, maxT = 3, 17, 33, 7, 20
    tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
    wte, wpe = randn(rng, V, C), randn(rng, maxT, C)
    Rw = rng.standard_normal((B, T, C))
    dwte, dwpe = K.embedding_backward(Rw.astype(np.float32), tokens, np.zeros((V, C), np.float32),
                                      np.zeros((maxT, C), np.float32))
    rwte, rwpe = R.embedding_backward(Rw, tokens, V, maxT)
    directional_check(lambda v: L(K.embedding_forward(tokens, v, wpe), Rw), wte, dwte, rwte, rng, what="d/dwte")
    directional_check(lambda v: L(K.embedding_forward(tokens, wte, v), Rw), wpe, dwpe, rwpe, rng, what="d/dwpe")


def test_reference_embedding_backward_vs_finite_differences(rng):
    tokens = np.array([[0, 2, 2], [1, 2, 0]], np.int32)
    wte, wpe, Rw = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((2, 3, 4))
    rwte, rwpe = R.embedding_backward(Rw, tokens, 3, 5)
    np.testing.assert_allclose(rwte, R.numerical_grad(lambda v: np.sum(R.embedding(tokens, v, wpe) * Rw), wte),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(rwpe, R.numerical_grad(lambda v: np.sum(R.embedding(tokens, wte, v) * Rw), wpe),
                               rtol=1e-6, atol=1e-8)


# ====================================================================== cross-entropy
def _ce_case(rng, N, V, masked):
    logits = randn(rng, N, V, scale=3.0)
    targets = rng.integers(0, V, size=N).astype(np.int32)
    mask = None
    if masked:
        mask = (rng.random(N) < 0.6).astype(np.uint8)
        mask[0] = 1
        if N > 1:
            mask[-1] = 0
    return logits, targets, mask


@pytest.mark.parametrize("N,V", [(1, 1), (3, 7), (7, 17), (17, 33), (33, 255), (128, 512)])
@pytest.mark.parametrize("masked", [False, True])
def test_crossentropy_backward_analytic_accumulates(isa, rng, N, V, masked):
    logits, targets, mask = _ce_case(rng, N, V, masked)
    dloss = 0.37
    _, _, lse = K.crossentropy_forward(logits, targets, mask)
    g0 = randn(rng, N, V)
    buf = g0.copy()
    assert K.crossentropy_backward(logits, lse, targets, mask, dloss=dloss, dlogits=buf) is buf
    ref = R.crossentropy_backward(logits, targets, mask, dloss)
    counted = np.ones(N, bool) if mask is None else mask.astype(bool)
    p = R.softmax(logits)
    lse64 = R.logsumexp(logits)
    onehot = np.zeros((N, V))
    onehot[np.arange(N), targets] = 1.0
    # p = exp(x - lse): lse's absolute error (~(|lse| + sqrt(V)) eps) becomes p's relative error
    sc = dloss / counted.sum() * (p * (1 + np.abs(R.f64(logits)) + np.abs(lse64)[:, None] + np.sqrt(V)) + onehot)
    assert_close(buf, R.f64(g0) + ref, scale=sc * counted[:, None] + np.abs(g0), tol=8 * EPS,
                 what=f"ce backward {isa} {(N, V)} masked={masked}")
    # masked rows are not touched at all
    np.testing.assert_array_equal(buf[~counted], g0[~counted])


@pytest.mark.parametrize("N,V", [(1, 3), (7, 17), (33, 255), (128, 512)])
@pytest.mark.parametrize("masked", [False, True])
def test_crossentropy_backward_directional(isa, rng, N, V, masked):
    logits, targets, mask = _ce_case(rng, N, V, masked)
    dloss = 1.7
    _, _, lse = K.crossentropy_forward(logits, targets, mask)
    g = K.crossentropy_backward(logits, lse, targets, mask, dloss=dloss)
    ref = R.crossentropy_backward(logits, targets, mask, dloss)
    directional_check(lambda v: dloss * K.crossentropy_forward(v, targets, mask)[0], logits, g, ref, rng,
                      eps=1e-2, what="crossentropy")


def test_reference_crossentropy_backward_vs_finite_differences(rng):
    N, V = 4, 6
    logits = rng.standard_normal((N, V))
    targets = np.array([0, 5, 2, 2])
    mask = np.array([1, 0, 1, 1], np.uint8)
    num = R.numerical_grad(lambda v: 2.5 * R.crossentropy(v, targets, mask)[0], logits)
    np.testing.assert_allclose(R.crossentropy_backward(logits, targets, mask, 2.5), num, rtol=1e-6, atol=1e-8)
