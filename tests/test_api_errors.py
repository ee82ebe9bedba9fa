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
    (dict(weight_decay=np.inf), "weight_decay"),
    (dict(eps=np.inf), "eps"),
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


# ================================================================= issue 18: silently wrong results
ALIAS_CASES = {
    # out= is an input, or a view into one: the kernels would read what they already wrote
    "matmul out overlaps inp": lambda x: K.matmul_forward(x[:4], r(4, 8), out=x.reshape(-1)[:16].reshape(4, 4)),
    "matmul out overlaps weight": lambda x: K.matmul_forward(r(4, 8), x[:4], out=x.reshape(-1)[16:32].reshape(4, 4)),
    "layernorm out is inp": lambda x: K.layernorm_forward(x, z(8) + 1, z(8), out=x),
    "softmax out is inp": lambda x: K.softmax_forward(x, out=x),
    "gelu out is inp": lambda x: K.gelu_forward(x, out=x),
    "tokenshift out is x": lambda x: K.tokenshift_forward(x.reshape(1, 8, 8), z(8), out=x.reshape(1, 8, 8)),
    "wkv out is k": lambda x: K.wkv_forward(z(8), z(8), x.reshape(1, 8, 8), r(1, 8, 8), out=x.reshape(1, 8, 8)),
    "sgemm c is a": lambda x: K.sgemm(x, x.copy(), c=x),
    "matmul_backward dinp is dweight": lambda x: K.matmul_backward(r(8, 8), r(8, 8), r(8, 8), dinp=x, dweight=x),
    "gelu_backward dinp is dout": lambda x: K.gelu_backward(x, r(8, 8), dinp=x),
    "adamw m is v": lambda x: K.adamw(r(8, 8), r(8, 8), x, x, lr=1e-3, step=1),
    "adamw params is grads": lambda x: K.adamw(x, x, z(8, 8), z(8, 8), lr=1e-3, step=1),
}


@pytest.mark.parametrize("case", list(ALIAS_CASES))
def test_out_aliasing_an_input_is_refused(case):
    x = r(8, 8)
    before = x.copy()
    raises(lambda: ALIAS_CASES[case](x), ArgumentError, "shares memory")
    assert np.array_equal(x, before)  # refused before anything was written


def test_separate_out_still_works():
    x, w = r(4, 8), r(6, 8)
    out = np.empty((4, 6), f32)
    K.matmul_forward(x, w, out=out)
    np.testing.assert_allclose(out, x @ w.T, rtol=1e-5, atol=1e-5)


def _gpt():
    from odin.model import GPT, GPTShape

    m = GPT(GPTShape(vocab_size=16, context=8, n_layer=1, n_head=2, d_model=8))
    m.init_weights(1)
    return m


def _rwkv():
    from odin.rwkv import RWKV, RWKVShape

    m = RWKV(RWKVShape(vocab_size=16, context=8, n_layer=1, d_model=8))
    m.init_weights(1)
    return m


@pytest.mark.parametrize("make", [_gpt, _rwkv], ids=["gpt", "rwkv"])
def test_token_ids_never_wrap_or_truncate(make):
    m = make()
    wrapped = np.array([[1, 2, 2**32 + 1]], np.int64)  # as int32 this would be token 1
    raises(lambda: m.forward(wrapped), ArgumentError, "tokens")
    raises(lambda: m.forward(np.array([[1, 2, 3]], np.int32), wrapped), ArgumentError, "targets")
    with pytest.raises(DTypeError, match="tokens"):
        m.forward(np.array([[1.0, 2.7, 3.0]]))
    raises(lambda: m.forward(np.array([[1, 2, -1]], np.int64)), ArgumentError, "tokens[2] = -1")
    cache = m.new_cache(1)
    raises(lambda: cache.step([2**32 + 1], [0]), ArgumentError, "tokens")
    with pytest.raises(DTypeError, match="tokens"):
        cache.step([1.7], [0])
    # the same ids as int64 inside int32 range are fine
    assert m.forward(np.array([[1, 2, 3]], np.int64), np.array([[2, 3, 4]], np.int64)) > 0


@pytest.mark.parametrize("bad", [np.array([[1, 256, 1]]), np.array([[1, 2, 0]], np.uint8),
                                 np.array([[1.0, 0.5, 1.0]]), np.array([[1, -1, 1]], np.int8)],
                         ids=["256", "2", "0.5", "-1"])
@pytest.mark.parametrize("make", [_gpt, _rwkv], ids=["gpt", "rwkv"])
def test_loss_mask_must_be_zero_or_one(make, bad):
    m = make()
    tok = np.array([[1, 2, 3]], np.int32)
    with pytest.raises(OdinError, match="mask"):
        m.forward(tok, tok, bad)
    assert m.forward(tok, tok, np.array([[True, False, True]])) > 0  # bool is a mask


def test_crossentropy_kernel_mask_must_be_zero_or_one():
    raises(lambda: K.crossentropy_forward(r(3, 5), np.array([1, 2, 3], np.int32), np.array([1, 2, 1], np.uint8)),
           ArgumentError, "mask")


def test_spheres_tokens_and_mask_are_validated():
    from odin.spheres import SpheresTrainer

    m = _gpt()
    trainer = SpheresTrainer(m, batch=2, seq_len=4, threads=1)
    trainer.configure(lr=1e-3, min_lr=1e-4, warmup_steps=0, total_steps=2)
    good = np.ones((1, 2, 5), np.int64)
    wrapped = good.copy()
    wrapped[0, 1, 2] = 2**32 + 3
    raises(lambda: trainer.run(wrapped), ArgumentError, "tokens")
    with pytest.raises(DTypeError, match="tokens"):
        trainer.run(good.astype(np.float64) + 0.5)
    mask = np.ones((1, 2, 4), np.int64)
    mask[0, 0, 1] = 256
    raises(lambda: trainer.run(good, mask), ArgumentError, "loss_mask")
    assert trainer.run(good, np.ones((1, 2, 4), bool)) == 1


def test_sampler_refuses_nan_logits_and_temperature():
    from odin.model import Sampler

    logits = np.array([0.0, np.nan, 1.0, 2.0], f32)  # greedy would pick 3 around the NaN
    for temperature in (0.0, 1.0):
        with pytest.raises(NanError, match="NaN"):
            Sampler(temperature=temperature)(logits)
    with pytest.raises(ArgumentError, match="temperature"):
        Sampler(temperature=float("nan"))
    # the C side on its own (the Python check bypassed)
    state, out = ffi.new("uint64_t *", 1), ffi.new("int32_t *")
    ok = np.array([0.0, 0.5, 1.0], f32)
    status = lib.odin_sample(ffi.cast("float *", ok.ctypes.data), 3, float("nan"), 0, 1.0, state, out)
    assert status == lib.ODIN_BAD_ARG and "temperature" in ffi.string(lib.odin_last_error()).decode()
    masked = np.array([-np.inf, 0.5, 1.0], f32)  # -inf is a masked-out token, not an error
    assert Sampler()(masked) == 2


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, -1e-5])
def test_ln_eps_must_be_finite_and_positive(value):
    from odin.model import GPTShape
    from odin.rwkv import RWKVShape

    with pytest.raises(OdinError, match="ln_eps"):
        GPTShape(vocab_size=16, context=8, n_layer=1, n_head=2, d_model=8, ln_eps=value)
    with pytest.raises(OdinError, match="ln_eps"):
        RWKVShape(vocab_size=16, context=8, n_layer=1, d_model=8, ln_eps=value)
    handle = ffi.new("odin_gpt **")
    assert lib.odin_gpt_create_ex(handle, 16, 8, 1, 2, 8, value, 0) == lib.ODIN_BAD_ARG  # C alone too
    assert handle[0] == ffi.NULL


# ================================================================= issue 18: sizes that overflow
OVERFLOW_SHAPES = {
    # the two: the int tensor count wraps and the table was overrun (SIGSEGV)
    "gpt n_layer=357913942": ("gpt", dict(vocab_size=10, context=8, n_layer=357913942, n_head=1, d_model=8)),
    "rwkv n_layer=238609295": ("rwkv", dict(vocab_size=10, context=8, n_layer=238609295, d_model=8)),
    "gpt 4*d_model wraps": ("gpt", dict(vocab_size=10, context=8, n_layer=1, n_head=1, d_model=2**30)),
    "gpt params overflow size_t": ("gpt", dict(vocab_size=2**28, context=2**28, n_layer=40_000_000, n_head=1,
                                               d_model=2**28)),
    "rwkv params overflow size_t": ("rwkv", dict(vocab_size=2**28, context=8, n_layer=29_000_000, d_model=2**28,
                                                 d_ffn=2**28)),
    "gpt vocab 2^40": ("gpt", dict(vocab_size=2**40, context=8, n_layer=1, n_head=1, d_model=8)),
    "rwkv d_ffn 2^31": ("rwkv", dict(vocab_size=10, context=8, n_layer=1, d_model=8, d_ffn=2**31)),
    "gpt n_layer 0": ("gpt", dict(vocab_size=10, context=8, n_layer=0, n_head=1, d_model=8)),
    "gpt d_model -8": ("gpt", dict(vocab_size=10, context=8, n_layer=1, n_head=1, d_model=-8)),
    "rwkv vocab 0": ("rwkv", dict(vocab_size=0, context=8, n_layer=1, d_model=8)),
}


def _build(arch: str, fields: dict):
    from odin.model import GPT, GPTShape
    from odin.rwkv import RWKV, RWKVShape

    return GPT(GPTShape(**fields)) if arch == "gpt" else RWKV(RWKVShape(**fields))


@pytest.mark.parametrize("case", list(OVERFLOW_SHAPES))
def test_overflowing_shapes_are_clean_errors(case):
    arch, fields = OVERFLOW_SHAPES[case]
    with pytest.raises(OdinError) as info:
        _build(arch, fields)
    assert isinstance(info.value, (ArgumentError, ShapeError))
    named = [name for name in fields if name in str(info.value)]
    assert named, f"{info.value} names no argument"


def test_overflowing_buffers_are_clean_errors():
    gpt, rwkv = _gpt(), _rwkv()
    raises(lambda: gpt.new_cache(2**31 - 1), ArgumentError, "B")
    raises(lambda: rwkv.new_cache(2**31 - 1), ArgumentError, "B")
    raises(lambda: rwkv._workspace(65536, 65536), ArgumentError, "B * T")


# Sizes the fuzz draws from: small, non-positive, or far beyond what any check lets through
# (never a size that would really be allocated: the machine runs other work).
_SMALL, _BAD = [1, 2, 3, 4, 8], [0, -1, -2**31, 2**29, 2**31 - 1, 2**31, 2**40]


def test_fuzz_shapes_and_calls():
    """Random shapes (a third of the fields bad) and random calls on the models that do get
    built: every outcome is a model or an OdinError, never another exception or a crash."""
    from odin.model import Sampler

    rng = np.random.default_rng(18)
    built = refused = 0
    for _ in range(300):
        arch = "gpt" if rng.random() < 0.5 else "rwkv"
        names = ["vocab_size", "context", "n_layer", "d_model"] + (["n_head"] if arch == "gpt" else ["d_ffn"])
        fields = {name: int(rng.choice(_BAD if rng.random() < 0.3 else _SMALL)) for name in names}
        if arch == "gpt" and fields["d_model"] in _SMALL and fields["n_head"] in _SMALL:
            fields["d_model"] *= fields["n_head"]
        try:
            model = _build(arch, fields)
        except OdinError:
            refused += 1
            continue
        built += 1
        model.init_weights(0)
        V, T = fields["vocab_size"], min(fields["context"], 8)  # an RWKV context is only a training length
        for _ in range(3):
            B = int(rng.choice([1, 2, 3]))
            tokens = rng.integers(-2, V + 2, size=(B, T))
            if rng.random() < 0.2:
                tokens = tokens.astype(np.float64)
            try:
                model.forward(tokens, np.clip(tokens, 0, V - 1).astype(np.int64),
                              rng.integers(0, 3, size=(B, T)) if rng.random() < 0.5 else None)
            except OdinError:
                pass
            try:
                model.new_cache(int(rng.choice([1, 2, 2**29, 2**31 - 1]))).step([int(rng.integers(-1, V + 1))], [0])
            except OdinError:
                pass
            logits = rng.standard_normal(V).astype(f32)
            if rng.random() < 0.3:
                logits[rng.integers(0, V)] = np.nan
            try:
                Sampler(temperature=float(rng.choice([0.0, 0.7, np.nan])), seed=1)(logits)
            except OdinError:
                pass
    assert built > 20 and refused > 20


@pytest.mark.parametrize("field", ["eps", "weight_decay", "grad_clip"])
def test_optimizer_hyperparameters_must_be_finite(field):
    m = _gpt()
    hp = dict(lr=1e-3, step=1, eps=1e-8, weight_decay=0.0, grad_clip=1.0)
    hp[field] = float("inf")
    m.forward(np.array([[1, 2]], np.int32), np.array([[2, 3]], np.int32))
    m.backward()
    before = m.params.copy()
    raises(lambda: m.adamw_step(**hp), ArgumentError, field)
    assert np.array_equal(m.params, before)
    from odin.spheres import SpheresTrainer

    trainer = SpheresTrainer(m, batch=2, seq_len=4, threads=1)
    opt = dict(eps=1e-8, weight_decay=0.0, grad_clip=1.0)
    opt[field] = float("inf")
    raises(lambda: trainer.configure(lr=1e-3, min_lr=1e-4, warmup_steps=0, total_steps=2, **opt), ArgumentError, field)


def test_norm_eps_and_max_norm_must_be_finite():
    raises(lambda: K.layernorm_forward(r(2, 3), r(3), r(3), eps=np.inf), ArgumentError, "eps")
    raises(lambda: K.clip_by_norm(r(4), np.inf), ArgumentError, "max_norm")


def test_python_ints_beyond_a_c_int_are_clean_errors():
    # cffi raised OverflowError (not an OdinError) for these before
    from odin.model import Sampler
    from odin.spheres import SpheresTrainer

    gpt, rwkv = _gpt(), _rwkv()
    for call, word in [(lambda: gpt.new_cache(2**40), "batch"), (lambda: rwkv.new_cache(2**40), "batch"),
                       (lambda: SpheresTrainer(gpt, batch=2**40, seq_len=4), "batch"),
                       (lambda: SpheresTrainer(gpt, batch=2, seq_len=4, threads=2**40), "threads"),
                       (lambda: Sampler(top_k=2**40), "top_k")]:
        with pytest.raises(OdinError, match=word):
            call()
    trainer = SpheresTrainer(gpt, batch=2, seq_len=4, threads=1)
    with pytest.raises(OdinError, match="threads"):
        trainer.set_threads(2**40)
    with pytest.raises(ArgumentError, match="threads"):
        trainer.set_threads(0)  # in range of a C int: the C side's own check


@pytest.mark.parametrize("step", [2**31, 2**40, -2**40, 1.5, True])
def test_adamw_step_number_beyond_a_c_int_is_an_argument_error(step):
    # found by the issue-18 re-audit fuzz: step=2**40 reached cffi, which raised OverflowError
    m = _gpt()
    m.forward(np.array([[1, 2]], np.int32), np.array([[2, 3]], np.int32))
    m.backward()
    before = m.params.copy()
    raises(lambda: m.adamw_step(lr=1e-3, step=step), ArgumentError, "step")
    assert np.array_equal(m.params, before)


def test_rwkv_generate_greedy_max_new_beyond_a_c_int_is_one_error():
    # re-audit fuzz: max_new=2**40 reached numpy (a MemoryError for a 4 TiB output buffer)
    raises(lambda: _rwkv().generate_greedy([[1, 2]], 2**40, end_id=0), OdinError, "max_new")


@pytest.mark.parametrize("field", ["warmup_steps", "total_steps"])
def test_spheres_schedule_beyond_a_c_int_is_one_error(field):
    # re-audit fuzz: total_steps=2**40 reached cffi, which raised OverflowError
    from odin.spheres import SpheresTrainer

    trainer = SpheresTrainer(_gpt(), batch=2, seq_len=4, threads=1)
    sched = dict(lr=1e-3, min_lr=1e-4, warmup_steps=0, total_steps=2)
    sched[field] = 2**40
    raises(lambda: trainer.configure(**sched), OdinError, field)
    raises(lambda: trainer.set_step(2**64), OdinError, "step")


def test_a_model_larger_than_the_machine_is_an_error_not_a_killed_process():
    """A shape within every size limit whose blocks exceed RAM + swap: Linux's overcommit let the
    allocations succeed and the process was killed while zeroing them (found by the issue-18
    fuzz, exit 137). The C core now refuses it up front. In a subprocess, so a regression shows
    as a killed child instead of taking pytest down."""
    import subprocess
    import sys

    # ~85 GiB of parameters alone (a model that only answers allocates nothing else up front)
    code = ("from odin.model import GPT, GPTShape\n"
            "from odin.rwkv import RWKV, RWKVShape\n"
            "from odin.native import OdinError\n"
            "for make in (lambda: GPT(GPTShape(vocab_size=16, context=357913942, n_layer=1, n_head=1, d_model=64)),\n"
            "             lambda: RWKV(RWKVShape(vocab_size=357913942, context=16, n_layer=1, d_model=64))):\n"
            "    try:\n"
            "        make()\n"
            "    except OdinError as error:\n"
            "        print(type(error).__name__, error)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("more than this machine's memory" in line for line in lines), proc.stdout
