"""Bad input raises a clear exception naming the argument; it never crashes, and an
argument rejected by the C side leaves the output/gradient buffers untouched.

Two layers are exercised: the numpy wrappers (odin.kernels: dtype, layout, shapes) and
the C API itself through odin.native.lib (NULL pointers, sizes, values), whose status codes
odin.native.check turns into OdinError subclasses.
"""
from __future__ import annotations

import numpy as np
import pytest

import odin.kernels as K
from odin.native import (ArgumentError, DTypeError, NanError, OdinError, ShapeError, check, ffi, lib)

f32 = np.float32


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


def r(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(f32)


def raises(fn, exc, *words):
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for w in words:
        assert w in msg, f"message {msg!r} should mention {w!r}"
    assert isinstance(ei.value, OdinError)
    return msg


# ================================================================= dtype and layout
DTYPE_CASES = {
    "matmul inp float64": (lambda: K.matmul_forward(z(3, 4, dtype=np.float64), z(5, 4)), "inp", "float32"),
    "matmul weight float64": (lambda: K.matmul_forward(z(3, 4), z(5, 4, dtype=np.float64)), "weight", "float32"),
    "matmul bias int64": (lambda: K.matmul_forward(z(3, 4), z(5, 4), z(5, dtype=np.int64)), "bias", "float32"),
    "matmul list": (lambda: K.matmul_forward([[1.0, 2.0]], z(5, 2)), "inp", "numpy array"),
    "layernorm weight float64": (lambda: K.layernorm_forward(z(3, 4), z(4, dtype=np.float64), z(4)), "weight", "float32"),
    "gelu float64": (lambda: K.gelu_forward(z(7, dtype=np.float64)), "inp", "float32"),
    "vexp int64": (lambda: K.vexp(z(7, dtype=np.int64)), "inp", "float32"),
    "softmax out float64": (lambda: K.softmax_forward(z(2, 3), out=z(2, 3, dtype=np.float64)), "out", "float32"),
    "attention qkv float64": (lambda: K.attention_forward(z(1, 2, 12, dtype=np.float64), 2), "qkv", "float32"),
    "embedding tokens int64": (lambda: K.embedding_forward(z(1, 2, dtype=np.int64), z(5, 4), z(8, 4)), "tokens", "int32"),
    "embedding tokens float32": (lambda: K.embedding_forward(z(1, 2), z(5, 4), z(8, 4)), "tokens", "int32"),
    "ce targets int64": (lambda: K.crossentropy_forward(z(2, 5), z(2, dtype=np.int64)), "targets", "int32"),
    "ce mask float32": (lambda: K.crossentropy_forward(z(2, 5), z(2, dtype=np.int32), z(2)), "mask", "uint8"),
    "adamw grads float64": (lambda: K.adamw(z(4), z(4, dtype=np.float64), z(4), z(4), lr=1e-3, step=1), "grads", "float32"),
    "global_norm float64": (lambda: K.global_norm(z(4, dtype=np.float64)), "x", "float32"),
    "matmul_backward dweight float64": (lambda: K.matmul_backward(z(3, 5), z(3, 4), z(5, 4),
                                                                  dweight=z(5, 4, dtype=np.float64)), "dweight", "float32"),
}


@pytest.mark.parametrize("case", list(DTYPE_CASES))
def test_wrong_dtype(case):
    fn, name, what = DTYPE_CASES[case]
    msg = raises(fn, DTypeError, name, what)
    assert isinstance(DTypeError(msg), TypeError)


NONCONTIG_CASES = {
    "matmul inp transposed": (lambda: K.matmul_forward(z(4, 3).T, z(5, 4)), "inp"),
    "matmul weight transposed": (lambda: K.matmul_forward(z(3, 4), z(4, 5).T), "weight"),
    "layernorm inp strided": (lambda: K.layernorm_forward(z(3, 8)[:, ::2], z(4), z(4)), "inp"),
    "softmax out transposed": (lambda: K.softmax_forward(z(2, 3), out=z(3, 2).T), "out"),
    "attention qkv transposed": (lambda: K.attention_forward(z(12, 2, 1).T, 2), "qkv"),
    "embedding tokens transposed": (lambda: K.embedding_forward(z(3, 2, dtype=np.int32).T, z(5, 4), z(8, 4)), "tokens"),
    "gelu_backward dinp strided": (lambda: K.gelu_backward(z(4), z(4), dinp=z(8)[::2]), "dinp"),
    "sgemm c transposed": (lambda: K.sgemm(z(2, 3), z(3, 4), z(4, 2).T), "c"),
}


@pytest.mark.parametrize("case", list(NONCONTIG_CASES))
def test_non_contiguous(case):
    fn, name = NONCONTIG_CASES[case]
    raises(fn, DTypeError, name, "contiguous")


def test_read_only_gradient_buffer():
    dw = z(5, 4)
    dw.flags.writeable = False
    raises(lambda: K.matmul_backward(z(3, 5), z(3, 4), z(5, 4), dweight=dw), DTypeError, "dweight", "writable")


# ================================================================= shapes
SHAPE_CASES = {
    "matmul K mismatch": (lambda: K.matmul_forward(z(3, 4), z(5, 6)), "weight"),
    "matmul bias length": (lambda: K.matmul_forward(z(3, 4), z(5, 4), z(4)), "bias"),
    "matmul inp 1-D": (lambda: K.matmul_forward(z(4), z(5, 4)), "inp"),
    "matmul out shape": (lambda: K.matmul_forward(z(3, 4), z(5, 4), out=z(5, 3)), "out"),
    "matmul_backward dout shape": (lambda: K.matmul_backward(z(3, 4), z(3, 4), z(5, 4)), "dout"),
    "matmul_backward dweight shape": (lambda: K.matmul_backward(z(3, 5), z(3, 4), z(5, 4), dweight=z(4, 5)), "dweight"),
    "matmul_backward dinp shape": (lambda: K.matmul_backward(z(3, 5), z(3, 4), z(5, 4), dinp=z(3, 5)), "dinp"),
    "matmul_backward dbias shape": (lambda: K.matmul_backward(z(3, 5), z(3, 4), z(5, 4), dbias=z(4)), "dbias"),
    "layernorm weight shape": (lambda: K.layernorm_forward(z(3, 4), z(5), z(4)), "weight"),
    "layernorm bias shape": (lambda: K.layernorm_forward(z(3, 4), z(4), z(3)), "bias"),
    "layernorm_backward rstd shape": (lambda: K.layernorm_backward(z(3, 4), z(3, 4), z(4), z(3), z(4)), "rstd"),
    "layernorm_backward dweight shape": (lambda: K.layernorm_backward(z(3, 4), z(3, 4), z(4), z(3), z(3),
                                                                      dweight=z(3)), "dweight"),
    "rmsnorm_backward dout shape": (lambda: K.rmsnorm_backward(z(3, 5), z(3, 4), z(4), z(3)), "dout"),
    "gelu_backward dout shape": (lambda: K.gelu_backward(z(5), z(4)), "dout"),
    "softmax_backward dout shape": (lambda: K.softmax_backward(z(2, 4), z(2, 3)), "dout"),
    "attention qkv not 3C": (lambda: K.attention_forward(z(1, 2, 13), 1), "qkv"),
    "attention qkv 2-D": (lambda: K.attention_forward(z(2, 12), 2), "qkv"),
    "attention slopes not one per head": (lambda: K.attention_forward(z(1, 2, 12), 2, z(3)), "slopes"),
    "attention_backward att shape": (lambda: K.attention_backward(z(1, 2, 4), z(1, 2, 12), z(1, 2, 2, 2), 1), "att"),
    "embedding wpe columns": (lambda: K.embedding_forward(z(1, 2, dtype=np.int32), z(5, 4), z(8, 3)), "wpe"),
    "embedding tokens 1-D": (lambda: K.embedding_forward(z(2, dtype=np.int32), z(5, 4), z(8, 4)), "tokens"),
    "embedding T > maxT": (lambda: K.embedding_forward(z(1, 9, dtype=np.int32), z(5, 4), z(8, 4)), "maxT"),
    "embedding_backward dout shape": (lambda: K.embedding_backward(z(1, 2, 3), z(1, 2, dtype=np.int32),
                                                                   z(5, 4), z(8, 4)), "dout"),
    "ce targets length": (lambda: K.crossentropy_forward(z(3, 5), z(2, dtype=np.int32)), "targets"),
    "ce mask length": (lambda: K.crossentropy_forward(z(3, 5), z(3, dtype=np.int32), z(2, dtype=np.uint8)), "mask"),
    "ce_backward lse shape": (lambda: K.crossentropy_backward(z(3, 5), z(2), z(3, dtype=np.int32)), "lse"),
    "adamw m shape": (lambda: K.adamw(z(4), z(4), z(3), z(4), lr=1e-3, step=1), "m"),
    "sgemm inner dims": (lambda: K.sgemm(z(2, 3), z(4, 5)), "inner"),
    "sgemm c shape": (lambda: K.sgemm(z(2, 3), z(3, 5), z(5, 2)), "c"),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_mismatched_shapes(case):
    fn, name = SHAPE_CASES[case]
    raises(fn, ShapeError, name)


ZERO_CASES = {
    "matmul M=0": (lambda: K.matmul_forward(z(0, 4), z(5, 4)), "inp"),
    "matmul K=0": (lambda: K.matmul_forward(z(3, 0), z(5, 0)), "inp"),
    "matmul N=0": (lambda: K.matmul_forward(z(3, 4), z(0, 4)), "weight"),
    "layernorm C=0": (lambda: K.layernorm_forward(z(3, 0), z(0), z(0)), "inp"),
    "vexp empty": (lambda: K.vexp(z(0)), "inp"),
    "softmax N=0": (lambda: K.softmax_forward(z(0, 3)), "inp"),
    "attention T=0": (lambda: K.attention_forward(z(1, 0, 12), 2), "qkv"),
    "embedding B=0": (lambda: K.embedding_forward(z(0, 3, dtype=np.int32), z(5, 4), z(8, 4)), "tokens"),
    "ce N=0": (lambda: K.crossentropy_forward(z(0, 5), z(0, dtype=np.int32)), "logits"),
    "adamw n=0": (lambda: K.adamw(z(0), z(0), z(0), z(0), lr=1e-3, step=1), "params"),
    "global_norm n=0": (lambda: K.global_norm(z(0)), "x"),
}


@pytest.mark.parametrize("case", list(ZERO_CASES))
def test_zero_sizes(case):
    fn, name = ZERO_CASES[case]
    raises(fn, ShapeError, name, "empty")


# ================================================================= values checked in C
@pytest.mark.parametrize("bad", [-1, 5, 1 << 30])
def test_embedding_token_out_of_range(isa, bad):
    tokens = np.array([[0, 1, 2], [3, bad, 4]], np.int32)
    raises(lambda: K.embedding_forward(tokens, r(5, 4), r(8, 4)), ArgumentError, "tokens", str(bad), "[0, 5)")
    # backward: checked before anything is written, so the gradients are untouched
    dwte, dwpe = r(5, 4), r(8, 4)
    dwte0, dwpe0 = dwte.copy(), dwpe.copy()
    raises(lambda: K.embedding_backward(r(2, 3, 4), tokens, dwte, dwpe), ArgumentError, "tokens")
    np.testing.assert_array_equal(dwte, dwte0)
    np.testing.assert_array_equal(dwpe, dwpe0)


@pytest.mark.parametrize("bad", [-1, 7, 1 << 30])
def test_crossentropy_target_out_of_range(isa, bad):
    logits = r(3, 7)
    targets = np.array([0, bad, 2], np.int32)
    raises(lambda: K.crossentropy_forward(logits, targets), ArgumentError, "targets[1]", str(bad))
    dl = r(3, 7)
    dl0 = dl.copy()
    raises(lambda: K.crossentropy_backward(logits, z(3), targets, dlogits=dl), ArgumentError, "targets")
    np.testing.assert_array_equal(dl, dl0)
    # a masked-out row's target is never used, so it may be anything
    K.crossentropy_forward(logits, targets, np.array([1, 0, 1], np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("col", [0, 3, 16])   # first element, inside the vector body, the tail
def test_crossentropy_nan_logits(isa, bad, col):
    logits = r(4, 17)
    logits[2, col] = bad
    targets = np.array([1, 2, 5, 4], np.int32)   # the target is NOT the bad column
    msg = raises(lambda: K.crossentropy_forward(logits, targets), NanError, "row 2")
    assert "not finite" in msg
    assert isinstance(NanError(msg), FloatingPointError)
    # the same row masked out: no error, the loss is over the finite rows only
    mean, losses, _ = K.crossentropy_forward(logits, targets, np.array([1, 1, 0, 1], np.uint8))
    assert np.isfinite(mean) and losses[2] == 0.0


def test_crossentropy_minus_inf_logit(isa):
    """-inf is a legitimate logit (probability 0): finite loss unless it is the target's."""
    logits = r(2, 17)
    logits[0, 5] = -np.inf
    mean, losses, _ = K.crossentropy_forward(logits, np.array([1, 2], np.int32))
    assert np.isfinite(mean) and np.all(np.isfinite(losses))
    raises(lambda: K.crossentropy_forward(logits, np.array([5, 2], np.int32)), NanError, "row 0")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_by_norm_nan_gradients(isa, bad):
    x = r(300)
    x[123] = bad
    x0 = x.copy()
    raises(lambda: K.clip_by_norm(x, 1.0), NanError, "not finite")
    np.testing.assert_array_equal(x, x0)   # nothing was scaled


def test_clip_by_norm_bad_max_norm():
    for bad in [0.0, -1.0, np.nan]:
        raises(lambda: K.clip_by_norm(r(10), bad), ArgumentError, "max_norm")


ADAMW_BAD = [
    (dict(step=0), "step"),
    (dict(step=-3), "step"),
    (dict(beta1=1.0), "beta1"),
    (dict(beta1=1.5), "beta1"),
    (dict(beta1=-0.1), "beta1"),
    (dict(beta2=1.0), "beta2"),
    (dict(beta2=np.nan), "beta2"),
    (dict(eps=0.0), "eps"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr=np.inf), "lr"),
    (dict(lr=np.nan), "lr"),
    (dict(weight_decay=-0.1), "weight_decay"),
]


@pytest.mark.parametrize("bad,name", ADAMW_BAD, ids=[f"{k}={v}" for (d, _) in ADAMW_BAD for k, v in d.items()])
def test_adamw_invalid_hyperparameters(bad, name):
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    hp.update(bad)
    p, g, m, v = r(10), r(10), z(10), z(10)
    p0 = p.copy()
    raises(lambda: K.adamw(p, g, m, v, **hp), ArgumentError, name)
    np.testing.assert_array_equal(p, p0)
    assert np.all(m == 0) and np.all(v == 0)


@pytest.mark.parametrize("n_head", [0, -2, 5, 7])
def test_n_head_must_divide_C(n_head):
    qkv = r(1, 3, 3 * 12)
    raises(lambda: K.attention_forward(qkv, n_head), ShapeError, "n_head")
    raises(lambda: K.attention_backward(r(1, 3, 12), qkv, r(1, 2, 3, 3), n_head), ShapeError)


def test_layernorm_bad_eps():
    raises(lambda: K.layernorm_forward(r(2, 3), r(3), r(3), eps=-1.0), ArgumentError, "eps")
    raises(lambda: K.rmsnorm_forward(r(2, 3), r(3), eps=np.nan), ArgumentError, "eps")


def test_sgemm_accumulate_needs_c():
    raises(lambda: K.sgemm(r(2, 3), r(3, 4), accumulate=True), ArgumentError, "accumulate")


def test_messages_name_the_function():
    msg = raises(lambda: K.crossentropy_forward(r(2, 3), np.array([0, 9], np.int32)), ArgumentError)
    assert msg.startswith("crossentropy_forward:")


# ================================================================= the C API directly
def _p(a):
    return ffi.cast("float *", ffi.from_buffer(a))


def test_c_api_null_pointers():
    a = r(4, 4)
    with pytest.raises(ArgumentError, match="out must not be NULL"):
        check(lib.odin_matmul_forward(ffi.NULL, _p(a), _p(a), ffi.NULL, 4, 4, 4), "matmul_forward")
    with pytest.raises(ArgumentError, match="weight must not be NULL"):
        check(lib.odin_matmul_forward(_p(a), _p(a), ffi.NULL, ffi.NULL, 4, 4, 4), "matmul_forward")
    with pytest.raises(ArgumentError, match="tokens must not be NULL"):
        check(lib.odin_embedding_forward(_p(a), ffi.NULL, _p(a), _p(a), 1, 1, 4, 4, 4), "embedding_forward")
    with pytest.raises(ArgumentError, match="dweight must not be NULL"):
        check(lib.odin_layernorm_backward(_p(a), ffi.NULL, _p(a), _p(a), _p(a), _p(a), _p(a), _p(a), 1, 4),
              "layernorm_backward")


def test_c_api_sizes_and_values():
    a = r(4, 4)
    with pytest.raises(ShapeError, match="M must be > 0"):
        check(lib.odin_matmul_forward(_p(a), _p(a), _p(a), ffi.NULL, 0, 4, 4), "matmul_forward")
    with pytest.raises(ShapeError, match="K must be > 0"):
        check(lib.odin_matmul_forward(_p(a), _p(a), _p(a), ffi.NULL, 4, -1, 4), "matmul_forward")
    with pytest.raises(ArgumentError, match="beta"):
        check(lib.odin_sgemm(4, 4, 4, _p(a), 4, 1, _p(a), 4, 1, 0.5, _p(a), 4), "sgemm")
    with pytest.raises(ShapeError, match="ldc"):
        check(lib.odin_sgemm(4, 4, 4, _p(a), 4, 1, _p(a), 4, 1, 0.0, _p(a), 3), "sgemm")
    with pytest.raises(ShapeError, match="NH"):
        check(lib.odin_attention_forward(_p(a), _p(a), _p(a), _p(a), ffi.NULL, 1, 1, 4, 3), "attention_forward")
    with pytest.raises(ShapeError, match="n must be > 0"):
        check(lib.odin_vexp(_p(a), _p(a), 0), "vexp")


def test_c_api_sgemm_k_zero():
    """K = 0 is a valid empty sum: C = 0 (beta = 0) or C unchanged (beta = 1)."""
    a, c = r(3, 1), r(3, 5)
    c0 = c.copy()
    check(lib.odin_sgemm(3, 5, 0, _p(a), 1, 1, _p(a), 1, 1, 1.0, _p(c), 5), "sgemm")
    np.testing.assert_array_equal(c, c0)
    check(lib.odin_sgemm(3, 5, 0, _p(a), 1, 1, _p(a), 1, 1, 0.0, _p(c), 5), "sgemm")
    assert np.all(c == 0.0)


def test_error_message_is_per_call():
    """A later successful call does not leave a stale message in the exception of the next failure."""
    with pytest.raises(ArgumentError) as e1:
        K.embedding_forward(np.array([[7]], np.int32), r(5, 4), r(8, 4))
    K.vexp(r(3))
    with pytest.raises(ArgumentError) as e2:
        K.crossentropy_forward(r(1, 3), np.array([4], np.int32))
    assert "tokens" in str(e1.value) and "targets" in str(e2.value) and "tokens" not in str(e2.value)
