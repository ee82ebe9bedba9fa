"""RWKV-4 kernels x every available ISA: the WKV recurrence forward and backward, token
shift, squared ReLU and the sigmoid gate, against the float64 references of
tests/rwkv_reference.py and finite differences.

WKV tolerances. The reference runs in float64 on the same float32 inputs, so the difference
is the kernel's rounding. A WKV output is a convex combination of v, so forward errors are
measured relative to max|v| and gradient errors relative to max|reference gradient| of
each tensor. The dominant float32 error is in the exponents: u + k - p rounded at the
magnitude of k costs ~|k| * 2^-24 relative in each weight, so the bound is
    tol = 20 * eps32 * (1 + max|k| + max|u|)
(measured errors are 5-30x below it; a wrong term in a gradient is off by O(1)).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import odin.kernels as K
import rwkv_reference as RR
from odin.native import ArgumentError, DTypeError, ShapeError, ffi, lib
from reference import F32_EPS, f64, perturb_pair

SHAPES = [(B, T, C) for T in (1, 5, 256) for C in (1, 7, 33) for B in (2,)]


def _inputs(seed: int, B: int, T: int, C: int, k_scale: float = 1.0, td=None):
    rng = np.random.default_rng(seed)
    time_decay = (rng.normal(size=C) if td is None else td + 0.5 * rng.normal(size=C)).astype(np.float32)
    time_first = rng.normal(size=C).astype(np.float32)
    k = (k_scale * rng.normal(size=(B, T, C))).astype(np.float32)
    v = rng.normal(size=(B, T, C)).astype(np.float32)
    dy = rng.normal(size=(B, T, C)).astype(np.float32)
    return time_decay, time_first, k, v, dy


@functools.lru_cache(maxsize=None)
def _case(B: int, T: int, C: int, k_scale: float = 1.0, td=None):
    """Inputs and their float64 reference outputs (computed once per shape for all ISAs)."""
    args = _inputs(1000 * T + 10 * C + B, B, T, C, k_scale, td)
    td_, tf, k, v, dy = args
    return args, RR.wkv_softmax(td_, tf, k, v), RR.wkv_softmax_backward(td_, tf, k, v, dy)


def _tol(k, time_first) -> float:
    return 20 * F32_EPS * (1.0 + float(np.abs(k).max()) + float(np.abs(time_first).max()))


def _check_wkv(args, y_ref, g_ref, what: str) -> None:
    td, tf, k, v, dy = args
    tol = _tol(k, tf)
    y = K.wkv_forward(td, tf, k, v)
    err = np.abs(f64(y) - y_ref).max() / np.abs(v).max()
    assert err <= tol, f"{what} y: error {err:.3g} > {tol:.3g}"
    # accumulate into non-zero buffers: the result minus the start is the gradient
    rng = np.random.default_rng(7)
    starts = [rng.normal(size=g.shape).astype(np.float32) for g in g_ref]
    bufs = [s.copy() for s in starts]
    out = K.wkv_backward(dy, td, tf, k, v, *bufs)
    assert all(o is b for o, b in zip(out, bufs)), "gradients must be accumulated in place"
    for name, got, start, ref in zip(("dtime_decay", "dtime_first", "dk", "dv"), bufs, starts, g_ref):
        grad = f64(got) - f64(start)
        scale = np.abs(ref).max()
        # tiny floor: a start value of O(1) can only be represented to ~eps32 in the buffer
        err = np.abs(grad - ref).max()
        assert err <= tol * scale + 4 * F32_EPS, f"{what} {name}: error {err:.3g} > {tol:.3g} x {scale:.3g}"


# ------------------------------------------------------------------ the references agree
def test_reference_wkv_forms_agree():
    """Naive formula, softmax form and stable recurrence (float64) on tame inputs; the
    recurrence carried across two calls through its state equals one call."""
    td, tf, k, v, _ = _inputs(1, 2, 9, 5)
    y_naive = RR.wkv_naive(td, tf, k, v)
    np.testing.assert_allclose(RR.wkv_softmax(td, tf, k, v), y_naive, rtol=1e-12, atol=1e-12)
    y_rec, _ = RR.wkv_recurrent(td, tf, k, v)
    np.testing.assert_allclose(y_rec, y_naive, rtol=1e-12, atol=1e-12)
    y1, state = RR.wkv_recurrent(td, tf, k[:, :4], v[:, :4])
    y2, _ = RR.wkv_recurrent(td, tf, k[:, 4:], v[:, 4:], state)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y_naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [5, 64])
def test_reference_wkv_backward_matches_finite_differences(T):
    """The softmax-form gradient against central differences of the float64 forward,
    along a random direction for each input."""
    td, tf, k, v, dy = (f64(a) for a in _inputs(2, 2, T, 7))
    grads = RR.wkv_softmax_backward(td, tf, k, v, dy)
    rng = np.random.default_rng(3)
    h = 1e-6
    for i, name in enumerate(("time_decay", "time_first", "k", "v")):
        d = rng.normal(size=grads[i].shape)
        args_p = [td, tf, k, v]
        args_m = [td, tf, k, v]
        args_p[i] = args_p[i] + h * d
        args_m[i] = args_m[i] - h * d
        fd = (np.sum(RR.wkv_softmax(*args_p) * dy) - np.sum(RR.wkv_softmax(*args_m) * dy)) / (2 * h)
        an = float(np.sum(grads[i] * d))
        assert abs(fd - an) <= 1e-7 * (1 + abs(an)), f"{name}: fd {fd!r} vs analytic {an!r}"


# ------------------------------------------------------------------ WKV x ISA
@pytest.mark.parametrize("B,T,C", SHAPES)
def test_wkv_forward_backward_match_float64(isa, B, T, C):
    args, y_ref, g_ref = _case(B, T, C)
    _check_wkv(args, y_ref, g_ref, f"[{isa} B={B} T={T} C={C}]")


@pytest.mark.parametrize("T,C", [(5, 7), (256, 33)])
def test_wkv_gradient_matches_finite_differences_of_c_forward(isa, T, C):
    """Directional derivative of L = sum(wkv(...) * dy) computed by the float32 C forward
    against <C gradient, exact step>. eps = 1e-2 on O(1) directions: truncation ~1e-4 and
    float32 noise ~1e-5 of the slope, so 2e-3 relative is a safe bound; a wrong gradient
    term fails by O(1)."""
    td, tf, k, v, dy = _inputs(5, 2, T, C)
    grads = K.wkv_backward(dy, td, tf, k, v)
    rng = np.random.default_rng(11)
    for i, name in enumerate(("time_decay", "time_first", "k", "v")):
        args = [td, tf, k, v]
        g = f64(grads[i])
        d = rng.normal(size=g.shape) + g / (np.sqrt(np.mean(g * g)) + 1e-30)
        xp, xm, dx = perturb_pair(args[i], d, 1e-2)
        args[i] = xp
        lp = float(np.sum(f64(K.wkv_forward(*args)) * dy))
        args[i] = xm
        lm = float(np.sum(f64(K.wkv_forward(*args)) * dy))
        an = float(np.sum(g * dx))
        assert abs((lp - lm) - an) <= 2e-3 * abs(an), f"{name}: finite difference {lp - lm:.6g} vs {an:.6g}"


def test_wkv_large_keys_where_naive_exponent_overflows(isa):
    """T = 256 with keys of +-120: e^(u+k) overflows float32 (> 3.4e38 above ~88.7), so a
    naive float32 WKV gives inf/nan; the stable kernels stay finite and exact."""
    td, tf, k, v, dy = _inputs(9, 2, 256, 33)
    ramp = np.linspace(-120, 120, 256, dtype=np.float32)[None, :, None]
    k = (k + ramp * np.sign(np.sin(np.arange(33)))[None, None, :].astype(np.float32)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(k + tf)  # float32, as a naive kernel would compute it
        naive = (np.cumsum(e * v, 1) / np.cumsum(e, 1)).astype(np.float32)
    assert not np.all(np.isfinite(e)) and not np.all(np.isfinite(naive)), "inputs too tame to overflow"
    _check_wkv((td, tf, k, v, dy), RR.wkv_softmax(td, tf, k, v), RR.wkv_softmax_backward(td, tf, k, v, dy),
               f"[{isa} large k]")


@pytest.mark.parametrize("td,what", [(-20.0, "w ~ -2e-9: no decay"), (3.0, "w ~ -20"),
                                     (20.0, "w ~ -5e8: only the last token survives"),
                                     (95.0, "w below -1e38 in float32 (exp saturates)")])
def test_wkv_extreme_decays(isa, td, what):
    args, y_ref, g_ref = _case(2, 256, 33, 1.0, td)
    _check_wkv(args, y_ref, g_ref, f"[{isa} {what}]")
    if td >= 20:  # e^{(t-1-i) w} = 0 for i < t-1: the decay has exactly no gradient
        assert not K.wkv_backward(args[4], *args[:4])[0].any()


def test_wkv_is_the_same_in_every_isa():
    """Scalar, AVX2 and AVX-512 agree to a few ulps on an awkward shape."""
    import odin.native as native

    td, tf, k, v, dy = _inputs(4, 3, 37, 35)
    prev = native.current_isa()
    outs = {}
    try:
        for name in native.available_isas():
            native.set_isa(name)
            outs[name] = (K.wkv_forward(td, tf, k, v), *K.wkv_backward(dy, td, tf, k, v))
    finally:
        native.set_isa(prev)
    base = outs["scalar"]
    for name, got in outs.items():
        for a, b in zip(got, base):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=name)


# ------------------------------------------------------------------ token shift, relu^2, gate
@pytest.mark.parametrize("B,T,C", [(1, 1, 1), (2, 5, 7), (3, 4, 33)])
def test_tokenshift_forward_backward(isa, rng, B, T, C):
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    mix = rng.random(C).astype(np.float32)
    prev = rng.normal(size=(B, C)).astype(np.float32)
    xx = np.zeros_like(f64(x))
    xx[:, 1:] = x[:, :-1]
    np.testing.assert_allclose(K.tokenshift_forward(x, mix), xx + mix * (x - xx), rtol=1e-6, atol=1e-6)
    xx[:, 0] = prev
    np.testing.assert_allclose(K.tokenshift_forward(x, mix, prev), xx + mix * (x - xx), rtol=1e-6, atol=1e-6)
    if T > 1:  # carrying the last row as `prev` continues the sequence exactly
        whole = K.tokenshift_forward(x, mix)
        tail = K.tokenshift_forward(np.ascontiguousarray(x[:, 2:]), mix, np.ascontiguousarray(x[:, 1]))
        np.testing.assert_array_equal(whole[:, 2:], tail)
    dout = rng.normal(size=(B, T, C)).astype(np.float32)
    x0 = np.zeros_like(f64(x))
    x0[:, 1:] = x[:, :-1]
    dx_ref, dmix_ref = RR._mix_bwd(f64(dout), f64(x), x0, f64(mix))
    dx0, dm0 = rng.normal(size=(B, T, C)).astype(np.float32), rng.normal(size=C).astype(np.float32)
    dx, dmix = K.tokenshift_backward(dout, x, mix, dx0.copy(), dm0.copy())
    np.testing.assert_allclose(f64(dx) - dx0, dx_ref, atol=1e-5)
    np.testing.assert_allclose(f64(dmix) - dm0, dmix_ref, atol=1e-5 * (1 + np.abs(dmix_ref).max()))


def test_sqrelu_and_gate_forward_backward(isa, rng):
    for n in (1, 7, 33, 1000):
        x = (3 * rng.normal(size=n)).astype(np.float32)
        b, g = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
        np.testing.assert_allclose(K.sqrelu_forward(x), np.maximum(f64(x), 0) ** 2, rtol=1e-6)
        d0 = rng.normal(size=n).astype(np.float32)
        np.testing.assert_allclose(f64(K.sqrelu_backward(g, x, d0.copy())) - d0, 2 * np.maximum(f64(x), 0) * g,
                                   atol=1e-5 * (1 + np.abs(x).max()))
        s = 1 / (1 + np.exp(-f64(x)))
        o0 = rng.normal(size=n).astype(np.float32)
        np.testing.assert_allclose(f64(K.sigmoid_gate_forward(x, b, o0.copy())) - o0, s * b, atol=2e-6)
        da, db = K.sigmoid_gate_backward(g, x, b, d0.copy(), d0.copy())
        np.testing.assert_allclose(f64(da) - d0, g * b * s * (1 - s), atol=2e-6)
        np.testing.assert_allclose(f64(db) - d0, g * s, atol=2e-6)
    assert np.isnan(K.sqrelu_forward(np.array([np.nan], np.float32)))[0], "NaN must not be clamped away"


# ------------------------------------------------------------------ bad arguments
def test_bad_arguments_are_clear_errors():
    td, tf, k, v, dy = _inputs(0, 1, 3, 4)
    with pytest.raises(ShapeError, match="time_decay"):
        K.wkv_forward(td[:3], tf, k, v)
    with pytest.raises(ShapeError, match="v must have shape"):
        K.wkv_forward(td, tf, k, v[:, :2])
    with pytest.raises(ShapeError, match=r"k must be 3-D"):
        K.wkv_forward(td, tf, k[0], v)
    with pytest.raises(DTypeError, match="dy"):
        K.wkv_backward(dy.astype(np.float64), td, tf, k, v)
    with pytest.raises(ShapeError, match="prev"):
        K.tokenshift_forward(k, td, prev=np.zeros((2, 4), np.float32))
    fp = lambda a: ffi.cast("float *", ffi.from_buffer(a))
    y = np.empty_like(k)
    from odin.native import check

    with pytest.raises(ArgumentError, match="time_first must not be NULL"):
        check(lib.odin_wkv_forward(fp(y), fp(td), ffi.NULL, fp(k), fp(v), 1, 3, 4), "wkv_forward")
    with pytest.raises(ArgumentError, match="scratch must not be NULL"):
        check(lib.odin_wkv_backward(fp(td), fp(tf), fp(k), fp(v), ffi.NULL, fp(td), fp(tf), fp(k), fp(v), fp(dy),
                                    1, 3, 4), "wkv_backward")
    with pytest.raises(ShapeError, match="T must be > 0"):
        check(lib.odin_wkv_forward(fp(y), fp(td), fp(tf), fp(k), fp(v), 1, 0, 4), "wkv_forward")
    with pytest.raises(ShapeError, match="n must be > 0"):
        check(lib.odin_sigmoid_gate_forward(fp(y), fp(y), fp(y), 0), "sigmoid_gate_forward")
