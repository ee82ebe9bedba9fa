"""Accuracy of the vectorised exp / sigmoid / tanh (and GELU) against float64 numpy.

The bounds asserted here are the ones documented at the top of csrc/kernels/kernel_body.h
(measured values plus a little margin). Run with `-s` to see the measured errors.

Error measures, for a float32 result y and the float64 reference r:
  relative  |y - r| / |r|
  ulp       |y - r| / spacing(float32(|r|))   (1 ulp = the gap between adjacent floats at r)
  absolute  |y - r|
"""
from __future__ import annotations

import numpy as np
import pytest

import odin.kernels as K
import reference as R

# ---- the documented bounds (kernel_body.h) --------------------------------------------
EXP_MAX_ULP, EXP_MAX_REL = 2.0, 1.5e-7          # measured 1.31 ulp, 1.19e-7
SIGMOID_MAX_ULP, SIGMOID_MAX_REL = 4.0, 2.5e-7  # measured 3.18 ulp, 1.92e-7
TANH_MAX_ABS = 2.0e-7                           # measured 1.48e-7
TANH_MAX_REL_ABOVE_HALF = 2.5e-7                # |x| >= 0.5, measured 1.73e-7
GELU_MAX_ABS_PER_X = 2.0e-7                     # |err| <= 2e-7 |x| over [-10, 10], measured 1.13e-7
GELU_MAX_REL_POS = 3.0e-7                       # x > 0.1, measured 1.97e-7

LO, HI = -87.0, 88.0   # the documented range: results are normal floats throughout


@pytest.fixture(scope="module")
def grid():
    """A dense grid of [-87, 88] (step ~4e-5) plus random floats of every exponent in it."""
    rng = np.random.default_rng(20240607)
    dense = np.linspace(LO, HI, 1 << 22, dtype=np.float64).astype(np.float32)
    # random bit patterns: uniform over exponents too, so tiny |x| is well represented
    bits = rng.integers(0, 0x42B00000, size=1 << 20, dtype=np.uint32)
    bits |= rng.integers(0, 2, size=bits.size, dtype=np.uint32) << np.uint32(31)
    rnd = bits.view(np.float32)
    rnd = rnd[(rnd >= LO) & (rnd <= HI)]
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, LO, HI,
                        np.log(2.0), -np.log(2.0), 0.34657359, -0.34657359], np.float32)
    return np.concatenate([dense, rnd, special])


def _errors(y, r):
    y = y.astype(np.float64)
    err = np.abs(y - r)
    nz = r != 0
    rel = np.zeros_like(err)
    rel[nz] = err[nz] / np.abs(r[nz])
    ulp = err / np.spacing(np.abs(r).astype(np.float32)).astype(np.float64)
    return err, rel, ulp


def _report(name, isa, x, err, rel, ulp):
    i = int(np.argmax(rel))
    print(f"\n[{isa}] {name}: max rel {rel.max():.3e} (x={x[i]:.6g}), max ulp {ulp.max():.2f}, "
          f"max abs {err.max():.3e}")


def test_exp_accuracy(isa, grid):
    y = K.vexp(grid)
    err, rel, ulp = _errors(y, np.exp(grid.astype(np.float64)))
    _report("exp", isa, grid, err, rel, ulp)
    assert rel.max() <= EXP_MAX_REL, f"exp max relative error {rel.max():.3e} > {EXP_MAX_REL}"
    assert ulp.max() <= EXP_MAX_ULP, f"exp max error {ulp.max():.2f} ulp > {EXP_MAX_ULP}"


def test_sigmoid_accuracy(isa, grid):
    y = K.vsigmoid(grid)
    err, rel, ulp = _errors(y, R.sigmoid(grid))
    _report("sigmoid", isa, grid, err, rel, ulp)
    assert rel.max() <= SIGMOID_MAX_REL, f"sigmoid max relative error {rel.max():.3e} > {SIGMOID_MAX_REL}"
    assert ulp.max() <= SIGMOID_MAX_ULP, f"sigmoid max error {ulp.max():.2f} ulp > {SIGMOID_MAX_ULP}"


def test_tanh_accuracy(isa, grid):
    small = np.geomspace(1e-30, 1.0, 1 << 16).astype(np.float32)
    x = np.concatenate([grid, small, -small])
    y = K.vtanh(x)
    x64 = x.astype(np.float64)
    err, rel, ulp = _errors(y, np.tanh(x64))
    big = np.abs(x64) >= 0.5
    print(f"\n[{isa}] tanh: max abs {err.max():.3e} (x={x[np.argmax(err)]:.6g}); for |x| >= 0.5: "
          f"max rel {rel[big].max():.3e}, max ulp {ulp[big].max():.2f}")
    assert err.max() <= TANH_MAX_ABS, f"tanh max absolute error {err.max():.3e} > {TANH_MAX_ABS}"
    assert rel[big].max() <= TANH_MAX_REL_ABOVE_HALF, f"tanh relative error {rel[big].max():.3e} for |x| >= 0.5"
    # odd function, exactly (the sign is copied onto the result)
    np.testing.assert_array_equal(K.vtanh(-x), -y)


def test_gelu_accuracy(isa):
    x = np.linspace(-10.0, 10.0, 1 << 21).astype(np.float32)
    y = K.gelu_forward(x).astype(np.float64)
    x64 = x.astype(np.float64)
    r = R.gelu(x64)
    err = np.abs(y - r)
    per_x = err / np.maximum(np.abs(x64), 1e-30)
    pos = x64 > 0.1
    rel_pos = err[pos] / r[pos]
    print(f"\n[{isa}] gelu: max abs {err.max():.3e}, max abs/|x| {per_x.max():.3e}, max rel (x>0.1) {rel_pos.max():.3e}")
    assert per_x.max() <= GELU_MAX_ABS_PER_X
    assert rel_pos.max() <= GELU_MAX_REL_POS


# ---- extremes ------------------------------------------------------------------------------
VERY_NEG = np.array([-87.5, -88.0, -90.0, -103.0, -150.0, -1e4, -3.4e38, -np.inf], np.float32)
VERY_POS = np.array([88.5, 88.7, 89.0, 100.0, 1e4, 3.4e38, np.inf], np.float32)


def test_exp_extremes(isa):
    lo = K.vexp(VERY_NEG)
    assert np.all(np.isfinite(lo)) and np.all(lo >= 0.0) and np.all(lo <= 1.2e-38), lo
    hi = K.vexp(VERY_POS)
    # saturates at a large finite value (documented: ~2.41e38) rather than inf or NaN
    assert np.all(np.isfinite(hi)) and np.all(hi >= 2.4e38), hi
    assert K.vexp(np.zeros(3, np.float32)).tolist() == [1.0, 1.0, 1.0]
    # just inside the clamp the result is still accurate
    edge = np.array([-87.3, 88.3], np.float32)
    np.testing.assert_allclose(K.vexp(edge), np.exp(edge.astype(np.float64)), rtol=EXP_MAX_REL)


def test_sigmoid_extremes(isa):
    lo = K.vsigmoid(VERY_NEG)
    assert np.all(np.isfinite(lo)) and np.all(lo >= 0.0) and np.all(lo < 1e-37), lo
    hi = K.vsigmoid(VERY_POS)
    assert np.all(hi == 1.0), hi
    assert K.vsigmoid(np.zeros(1, np.float32))[0] == 0.5


def test_tanh_extremes(isa):
    assert np.all(K.vtanh(VERY_POS) == 1.0)
    assert np.all(K.vtanh(VERY_NEG) == -1.0)
    z = K.vtanh(np.array([0.0, -0.0], np.float32))
    assert z[0] == 0.0 and z[1] == 0.0 and not np.signbit(z[0]) and np.signbit(z[1])


@pytest.mark.parametrize("fn", ["vexp", "vsigmoid", "vtanh", "gelu_forward"])
def test_nan_propagates(isa, fn):
    """NaN in -> NaN out, in the vector body and in the tail (a NaN must never be clamped
    into a finite number: that would hide NaN logits from the loss's finiteness check)."""
    x = np.linspace(-3, 3, 37).astype(np.float32)
    where = [0, 5, 16, 17, 36]   # first element, body, a vector boundary, the tail
    x[where] = np.nan
    y = getattr(K, fn)(x)
    assert np.all(np.isnan(y[where])), y[where]
    assert np.all(np.isfinite(np.delete(y, where)))
