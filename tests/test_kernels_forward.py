"""Forward kernels x every available ISA against float64 numpy references (tests/reference.py).

Shapes are deliberately awkward (1, 3, 7, 17, 33, 255: never a multiple of 8 or 16, so the
vector tails are exercised) plus a few realistic model shapes.

Tolerances. The references run in float64 on the very float32 values the kernels get, so a
difference is the kernel's own float32 rounding. A sum of K float32 terms carries an error
of about sqrt(K) * eps * sum|terms| when the rounding errors are independent (worst case
K * eps); we bound every error by  tol * scale  where `scale` is the sum of the magnitudes
that were rounded (e.g. |A| @ |B| for a product) and tol = c * sqrt(K) * eps with a small
constant c (measured errors sit at 0.02..0.5 of c = 1; c = 2..4 leaves room for other
summation orders without letting a wrong formula or a wrong tail element through: such a
bug gives errors of order `scale`, millions of eps).
eps = 2^-23 ~ 1.19e-7 (float32 machine epsilon).
"""
from __future__ import annotations

import numpy as np
import pytest

import odin.kernels as K
import reference as R
from reference import F32_EPS as EPS, assert_close

# awkward sizes: all tails, never a multiple of a vector length
AWKWARD = [1, 3, 7, 17, 33, 255]
# (rows, cols) pairs: every awkward size appears as a row count and as a row length
ROWS_COLS = [(1, 1), (3, 7), (7, 17), (17, 33), (33, 255), (255, 3), (1, 255), (64, 768)]


def randn(rng, *shape, scale=1.0, loc=0.0):
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32)


# ====================================================================== matmul
MATMUL_SHAPES = [  # (M, K, N)
    (1, 1, 1), (3, 7, 17), (7, 17, 3), (17, 33, 255), (33, 255, 7), (255, 3, 33), (1, 255, 33),
    (4, 64, 129),          # skinny (generation-like) rows
    (64, 768, 64),         # a realistic projection
    (255, 300, 33),        # K crosses a 256-deep cache block
    (2048, 128, 384),      # realistic (a projection of 2048 tokens), through every blocking loop
]


def _matmul_tol(K_):
    # one product per term plus the running sum (+ bias): ~sqrt(K+1) roundings of |A||B| size
    return 2.0 * np.sqrt(K_ + 1) * EPS


@pytest.mark.parametrize("M,K_,N", MATMUL_SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_forward(isa, rng, M, K_, N, with_bias):
    inp, w = randn(rng, M, K_), randn(rng, N, K_)
    bias = randn(rng, N) if with_bias else None
    out = K.matmul_forward(inp, w, bias)
    assert out.shape == (M, N) and out.dtype == np.float32
    assert_close(out, R.matmul(inp, w, bias), scale=R.matmul_magnitude(inp, w, bias), tol=_matmul_tol(K_),
                 what=f"matmul {isa} {(M, K_, N)} bias={with_bias}")


@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_forward_overwrites_out(isa, rng, with_bias):
    """out= holding NaN must be overwritten, never read (beta = 0 means C is not touched)."""
    M, K_, N = 33, 300, 17
    inp, w = randn(rng, M, K_), randn(rng, N, K_)
    bias = randn(rng, N) if with_bias else None
    out = np.full((M, N), np.nan, np.float32)
    res = K.matmul_forward(inp, w, bias, out=out)
    assert res is out
    assert_close(out, R.matmul(inp, w, bias), scale=R.matmul_magnitude(inp, w, bias), tol=_matmul_tol(K_),
                 what="matmul out=")


SGEMM_SHAPES = [(1, 1, 1), (3, 17, 7), (17, 255, 33), (33, 7, 300), (130, 257, 70), (7, 1, 255)]  # (M, N, K)


@pytest.mark.parametrize("M,N,K_", SGEMM_SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_sgemm(isa, rng, M, N, K_, trans_a, trans_b, accumulate):
    A, B = randn(rng, M, K_), randn(rng, K_, N)
    a = np.ascontiguousarray(A.T) if trans_a else A
    b = np.ascontiguousarray(B.T) if trans_b else B
    c0 = randn(rng, M, N)
    c = c0.copy() if accumulate else np.full((M, N), np.nan, np.float32)
    res = K.sgemm(a, b, c, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)
    assert res is c
    want = R.f64(A) @ R.f64(B) + (R.f64(c0) if accumulate else 0.0)
    scale = np.abs(R.f64(A)) @ np.abs(R.f64(B)) + (np.abs(c0) if accumulate else 0.0)
    assert_close(c, want, scale=scale, tol=_matmul_tol(K_),
                 what=f"sgemm {isa} M,N,K={(M, N, K_)} ta={trans_a} tb={trans_b} acc={accumulate}")


def test_sgemm_without_c_allocates(isa, rng):
    a, b = randn(rng, 17, 33), randn(rng, 33, 7)
    c = K.sgemm(a, b)
    assert c.shape == (17, 7)
    assert_close(c, R.f64(a) @ R.f64(b), scale=np.abs(R.f64(a)) @ np.abs(R.f64(b)), tol=_matmul_tol(33),
                 what="sgemm alloc")


# ====================================================================== normalisation
@pytest.mark.parametrize("N,C", ROWS_COLS)
def test_layernorm_forward(isa, rng, N, C):
    x = randn(rng, N, C, scale=2.0, loc=0.5)
    w, b = randn(rng, C, scale=0.5, loc=1.0), randn(rng, C, scale=0.5)
    out, mean, rstd = K.layernorm_forward(x, w, b, eps=1e-5)
    ref, rmean, rrstd = R.layernorm(x, w, b, 1e-5)
    # mean: a sum of C terms -> sqrt(C) eps relative to mean|x|
    tol = 4.0 * (np.sqrt(C) + 1) * EPS
    assert_close(mean, rmean, scale=np.abs(R.f64(x)).mean(axis=1), tol=tol, what="layernorm mean")
    # rstd: relative, from the variance sum and the sqrt/division
    assert_close(rstd, rrstd, rtol=tol, what="layernorm rstd")
    # out = (x - mean) * rstd * w + b: each operand's size times the relative errors above
    scale = (np.abs(R.f64(x)) + np.abs(rmean)[:, None]) * rrstd[:, None] * np.abs(w) + np.abs(b)
    assert_close(out, ref, scale=scale, tol=tol, what=f"layernorm out {isa} {(N, C)}")


def test_layernorm_forward_large_offset(isa, rng):
    """Mean far from 0 (cancellation): the two-pass variance must still be accurate."""
    N, C = 7, 255
    x = randn(rng, N, C, scale=1.0, loc=300.0)
    w, b = randn(rng, C, loc=1.0), randn(rng, C)
    out, mean, rstd = K.layernorm_forward(x, w, b)
    ref, rmean, rrstd = R.layernorm(x, w, b)
    # x itself only carries 300*eps of precision, so the normalised value is good to ~300*eps*rstd
    tol = 4.0 * (np.sqrt(C) + 1) * EPS
    scale = (np.abs(R.f64(x)) + np.abs(rmean)[:, None]) * rrstd[:, None] * np.abs(w) + np.abs(b)
    assert_close(out, ref, scale=scale, tol=tol, what="layernorm offset out")
    assert_close(rstd, rrstd, rtol=1e-4, what="layernorm offset rstd")


def test_layernorm_out_param(isa, rng):
    x, w, b = randn(rng, 3, 17), randn(rng, 17), randn(rng, 17)
    out = np.full((3, 17), np.nan, np.float32)
    res, _, _ = K.layernorm_forward(x, w, b, out=out)
    assert res is out and np.all(np.isfinite(out))


@pytest.mark.parametrize("N,C", ROWS_COLS)
def test_rmsnorm_forward(isa, rng, N, C):
    x = randn(rng, N, C, scale=2.0, loc=0.5)
    w = randn(rng, C, scale=0.5, loc=1.0)
    out, rstd = K.rmsnorm_forward(x, w, eps=1e-5)
    ref, rrstd = R.rmsnorm(x, w, 1e-5)
    tol = 4.0 * (np.sqrt(C) + 1) * EPS
    assert_close(rstd, rrstd, rtol=tol, what="rmsnorm rstd")
    assert_close(out, ref, scale=np.abs(ref), tol=tol, what=f"rmsnorm out {isa} {(N, C)}")


# ====================================================================== elementwise
ELEMENTWISE_SHAPES = [(1,), (3,), (7,), (17,), (33,), (255,), (3, 17), (64, 768)]


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_gelu_forward(isa, rng, shape):
    x = randn(rng, *shape, scale=3.0)
    out = K.gelu_forward(x)
    assert out.shape == x.shape
    # 0.5 x (1 + tanh(u)): tanh has ~1.5e-7 absolute error, so |x| * a few eps absolute
    assert_close(out, R.gelu(x), scale=np.abs(R.f64(x)), tol=4 * EPS, what=f"gelu {isa} {shape}")


def test_gelu_forward_wide_range(isa):
    """The whole GELU range used in practice, including where tanh saturates."""
    x = np.linspace(-12, 12, 100003).astype(np.float32)
    assert_close(K.gelu_forward(x), R.gelu(x), scale=np.abs(R.f64(x)), tol=4 * EPS, what="gelu range")
    # far out: gelu(x) -> x for large x, -> -0 for very negative x
    big = np.array([20.0, 50.0, 1e4, -20.0, -50.0, -1e4], np.float32)
    g = K.gelu_forward(big)
    np.testing.assert_allclose(g[:3], big[:3], rtol=2 * EPS)
    assert np.all(np.abs(g[3:]) < 1e-30)


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
@pytest.mark.parametrize("fn,ref,bound", [
    # relative bounds from tests/test_math.py (the accuracy study lives there)
    ("vexp", np.exp, dict(rtol=1.5e-7)),
    ("vsigmoid", R.sigmoid, dict(rtol=2.5e-7)),
    ("vtanh", np.tanh, dict(atol=2e-7)),
])
def test_vector_math_shapes(isa, rng, shape, fn, ref, bound):
    x = randn(rng, *shape, scale=4.0)
    out = getattr(K, fn)(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert_close(out, ref(R.f64(x)), what=f"{fn} {isa} {shape}", **bound)
    # the out= form writes into the given array
    buf = np.full(x.shape, np.nan, np.float32)
    assert getattr(K, fn)(x, out=buf) is buf
    np.testing.assert_array_equal(buf, out)


# ====================================================================== softmax
@pytest.mark.parametrize("N,C", ROWS_COLS + [(128, 512)])
def test_softmax_forward(isa, rng, N, C):
    x = randn(rng, N, C, scale=3.0)
    y = K.softmax_forward(x)
    # each p = exp(x - max) / sum: exp relative error + the row sum's sqrt(C) eps
    tol = 4.0 * (np.sqrt(C) + 2) * EPS
    assert_close(y, R.softmax(x), rtol=tol, what=f"softmax {isa} {(N, C)}")
    np.testing.assert_allclose(R.f64(y).sum(axis=1), 1.0, rtol=0, atol=tol)


def test_softmax_large_logits(isa, rng):
    """Max-shifted: huge logits must not overflow."""
    x = randn(rng, 5, 33, scale=3.0) + np.float32(5e3)
    y = K.softmax_forward(x)
    # x - max(x) is exact here (Sterbenz), so the accuracy is that of ordinary logits
    assert_close(y, R.softmax(x), rtol=4.0 * (np.sqrt(33) + 2) * EPS, what="softmax big")


# ====================================================================== attention
ATTN_SHAPES = [  # (B, T, C, NH)
    (1, 1, 3, 1), (1, 3, 7, 7), (2, 7, 17, 1), (1, 17, 33, 3), (2, 33, 12, 4),
    (2, 64, 128, 4),   # realistic
    (1, 131, 20, 2),   # several blocks of four key vectors and a tail in every ISA
]


def _attention_bounds(qkv, NH, att_ref, bias=0.0):
    """Error scales for att and out (see module docstring for the reasoning); bias: the
    largest |ALiBi bias| added to a score."""
    q64 = R.f64(qkv)
    B, T, C3 = q64.shape
    C = C3 // 3
    hs = C // NH
    split = lambda a: np.abs(a).reshape(B, T, NH, hs).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q64[:, :, :C]), split(q64[:, :, C:2 * C]), split(q64[:, :, 2 * C:])
    # |score| errors: a dot product of hs terms -> sqrt(hs) eps (|q|.|k|)/sqrt(hs)
    smag = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(hs)
    smag = np.where(np.tril(np.ones((T, T), bool)), smag, 0.0).max(axis=-1, keepdims=True) + bias
    # softmax: dp_i = p_i (ds_i - sum_j p_j ds_j) -> |dp_i| <= 2 p_i max|ds| (+ exp/sum rounding)
    att_scale = att_ref * (1.0 + 2.0 * smag)
    att_tol = 4.0 * (np.sqrt(hs) + np.sqrt(T) + 2) * EPS
    # out = att @ v: errors of att times |v| plus the sum of T terms
    out_scale = (att_scale @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return att_scale, att_tol, out_scale, att_tol


@pytest.mark.parametrize("B,T,C,NH", ATTN_SHAPES)
def test_attention_forward(isa, rng, B, T, C, NH):
    qkv = randn(rng, B, T, 3 * C)
    out, att = K.attention_forward(qkv, NH)
    assert out.shape == (B, T, C) and att.shape == (B, NH, T, T)
    ref_out, ref_att = R.attention(qkv, NH)
    # causal: strictly upper triangle is exactly 0, rows sum to 1
    upper = np.triu(np.ones((T, T), bool), k=1)
    assert np.all(att[..., upper] == 0.0), "attention probabilities above the diagonal must be 0"
    np.testing.assert_allclose(R.f64(att).sum(axis=-1), 1.0, rtol=0, atol=4 * (np.sqrt(T) + 2) * EPS)
    att_scale, att_tol, out_scale, out_tol = _attention_bounds(qkv, NH, ref_att)
    assert_close(att, ref_att, scale=att_scale, tol=att_tol, what=f"att {isa} {(B, T, C, NH)}")
    assert_close(out, ref_out, scale=out_scale, tol=out_tol, what=f"attention out {isa} {(B, T, C, NH)}")


@pytest.mark.parametrize("B,T,C,NH", [(1, 1, 3, 1), (1, 17, 33, 3), (2, 64, 128, 4), (1, 131, 20, 2)])
def test_attention_forward_alibi(isa, rng, B, T, C, NH):
    qkv = randn(rng, B, T, 3 * C)
    slopes = R.alibi_slopes(NH).astype(np.float32)
    out, att = K.attention_forward(qkv, NH, slopes)
    ref_out, ref_att = R.attention(qkv, NH, slopes)
    att_scale, att_tol, out_scale, out_tol = _attention_bounds(qkv, NH, ref_att, bias=float(slopes.max()) * T)
    assert_close(att, ref_att, scale=att_scale, tol=att_tol, what=f"alibi att {isa} {(B, T, C, NH)}")
    assert_close(out, ref_out, scale=out_scale, tol=out_tol, what=f"alibi out {isa} {(B, T, C, NH)}")
    if T > 1:  # the bias moves weight towards near keys: not the unbiased probabilities
        plain = K.attention_forward(qkv, NH)[1]
        assert np.abs(att - plain).max() > 1e-2
        near = np.arange(T)[:, None] - np.arange(T)[None, :] == 0
        assert att[..., near].mean() > plain[..., near].mean()


def test_attention_first_token_copies_v(isa, rng):
    """t = 0 attends only to itself: out[:, 0] == v[:, 0] and att[..., 0, 0] == 1."""
    B, T, C, NH = 2, 5, 12, 3
    qkv = randn(rng, B, T, 3 * C)
    out, att = K.attention_forward(qkv, NH)
    np.testing.assert_array_equal(att[:, :, 0, 0], 1.0)
    np.testing.assert_allclose(out[:, 0], qkv[:, 0, 2 * C:], rtol=2 * EPS, atol=0)


# ====================================================================== embedding
@pytest.mark.parametrize("B,T,C,V,maxT", [(1, 1, 1, 1, 1), (3, 7, 17, 5, 9), (2, 33, 255, 7, 33), (4, 64, 768, 50, 128)])
def test_embedding_forward(isa, rng, B, T, C, V, maxT):
    tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
    wte, wpe = randn(rng, V, C), randn(rng, maxT, C)
    out = K.embedding_forward(tokens, wte, wpe)
    assert out.shape == (B, T, C)
    # one float32 addition per element: correctly rounded, so bit-equal to numpy's float32 add
    np.testing.assert_array_equal(out, wte[tokens] + wpe[None, :T])
    np.testing.assert_array_equal(out, R.embedding(tokens, wte, wpe).astype(np.float32))


# ====================================================================== cross-entropy
@pytest.mark.parametrize("N,V", [(1, 1), (3, 7), (7, 17), (17, 33), (33, 255), (128, 512)])
@pytest.mark.parametrize("masked", [False, True])
def test_crossentropy_forward(isa, rng, N, V, masked):
    logits = randn(rng, N, V, scale=3.0)
    targets = rng.integers(0, V, size=N).astype(np.int32)
    mask = None
    if masked:
        mask = (rng.random(N) < 0.6).astype(np.uint8)
        mask[0] = 1  # at least one counted row
        if N > 1:
            mask[-1] = 0
            targets[-1] = -5  # a masked row's target is never looked at, even when invalid
    mean, losses, lse = K.crossentropy_forward(logits, targets, mask)
    rmean, rlosses, rlse = R.crossentropy(logits, targets if mask is None else np.where(mask, targets, 0), mask)
    counted = np.ones(N, bool) if mask is None else mask.astype(bool)
    # lse = max + log(sum exp): sum of V terms -> ~sqrt(V) eps absolute, plus eps*|lse|;
    # loss = lse - x[target] adds eps*|x[target]|
    tol = 4.0 * (np.sqrt(V) + 2) * EPS
    xt = np.abs(R.f64(logits)[np.arange(N), np.where(counted, targets, 0)])
    scale = 1.0 + np.abs(rlse) + xt
    assert_close(lse[counted], rlse[counted], scale=scale[counted], tol=tol, what="ce lse")
    assert_close(losses[counted], rlosses[counted], scale=scale[counted], tol=tol, what=f"ce losses {isa}")
    assert np.all(losses[~counted] == 0.0), "masked rows must have loss 0"
    assert_close(np.array(mean), np.array(rmean), scale=np.array(scale[counted].mean()), tol=tol,
                 what="ce mean over counted rows")
    if masked:
        # the mean is over the counted rows only, not over N
        assert abs(mean - rlosses[counted].sum() / counted.sum()) <= tol * scale[counted].mean()


def test_crossentropy_all_masked(isa, rng):
    logits = randn(rng, 3, 17)
    mean, losses, _ = K.crossentropy_forward(logits, np.array([1, 2, 3], np.int32), np.zeros(3, np.uint8))
    assert mean == 0.0 and np.all(losses == 0.0)


def test_crossentropy_bool_mask(isa, rng):
    logits = randn(rng, 4, 7)
    targets = np.array([0, 1, 2, 3], np.int32)
    m1, l1, _ = K.crossentropy_forward(logits, targets, np.array([True, False, True, False]))
    m2, l2, _ = K.crossentropy_forward(logits, targets, np.array([1, 0, 1, 0], np.uint8))
    assert m1 == m2
    np.testing.assert_array_equal(l1, l2)


# ====================================================================== optimiser
@pytest.mark.parametrize("n", [1, 3, 7, 17, 33, 255, 10007])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_steps(isa, rng, n, weight_decay):
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay)
    # the C API takes float32 hyper-parameters: 1 - float32(0.999) differs from 0.001 by
    # 1.3e-5 relative, so the reference uses the same float32-rounded values
    hp32 = {key: float(np.float32(val)) for key, val in hp.items()}
    b1, b2, lr = hp32["beta1"], hp32["beta2"], hp32["lr"]
    p = randn(rng, n)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    rp, rm, rv = R.f64(p), np.zeros(n), np.zeros(n)
    mabs = np.zeros(n)  # b1 |m| + (1-b1) |g| recursion: the size of what m's roundings act on
    for step in range(1, 6):
        g = randn(rng, n, scale=0.1)
        if n > 2:
            g[1] = 0.0   # zero gradient throughout: m = v = 0, the update is weight decay only
        K.adamw(p, g, m, v, step=step, **hp)
        rp, rm, rv = R.adamw(rp, g, rm, rv, step=step, **hp32)
        mabs = b1 * mabs + (1 - b1) * np.abs(R.f64(g))
        # m = b1 m + (1-b1) g can cancel, so its error is relative to mabs, not to |m|;
        # a few roundings per step, and earlier steps' errors are carried along
        assert_close(m, rm, scale=mabs, tol=4 * step * EPS, what=f"adamw m step {step}")
        # v is a sum of positive terms: plainly relative
        assert_close(v, rv, rtol=4 * step * EPS, atol=1e-30, what=f"adamw v step {step}")
        # p: its own rounding (eps |p|) plus lr * the update's error, which is the relative
        # error of m (w.r.t. mabs) and v carried through mhat / (sqrt(vhat) + eps)
        vhat = rv / (1 - b2 ** step)
        upd = (mabs / (1 - b1 ** step)) / (np.sqrt(vhat) + hp32["eps"])
        # (measured ~0.6 step eps; computing 1 - beta^t in float32 instead gave ~30 step eps)
        assert_close(p, rp, scale=np.abs(rp) + lr * (1 + upd), tol=4 * step * EPS,
                     what=f"adamw p step {step} {isa}")


def test_adamw_first_step_is_signed_lr(isa, rng):
    """With bias correction, step 1 moves every weight by lr * g/(|g| + eps') ~ lr * sign(g)."""
    n = 33
    p0 = randn(rng, n)
    g = randn(rng, n)
    g[np.abs(g) < 1e-2] = 1.0
    p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    K.adamw(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, step=1)
    np.testing.assert_allclose(R.f64(p0) - R.f64(p), 1e-3 * np.sign(g), rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("n", [1, 3, 7, 17, 33, 255, 4096, 4097, 100003])
def test_global_norm(isa, rng, n):
    x = randn(rng, n)
    got = K.global_norm(x)
    # sum of squares in float32 over 4096-element blocks, blocks in double: ~sqrt(4096) eps
    assert abs(got - R.global_norm(x)) <= 4 * np.sqrt(min(n, 4096)) * EPS * R.global_norm(x) + 1e-30


def test_global_norm_large_values(isa):
    x = np.full(1000, 1e18, np.float32)  # sum of squares 1e39 overflows float32 but not double
    assert K.global_norm(x) == pytest.approx(R.global_norm(x), rel=1e-5)


@pytest.mark.parametrize("n", [1, 7, 255, 10007])
def test_clip_by_norm_clips(isa, rng, n):
    x0 = randn(rng, n, scale=3.0)
    norm0 = R.global_norm(x0)
    max_norm = 0.5 * norm0
    x = x0.copy()
    got = K.clip_by_norm(x, max_norm)
    assert got == pytest.approx(norm0, rel=1e-5)
    # scaled by max_norm / norm: same direction, new norm max_norm
    np.testing.assert_allclose(x, R.f64(x0) * (max_norm / norm0), rtol=1e-5, atol=0)
    assert R.global_norm(x) == pytest.approx(max_norm, rel=1e-5)


def test_clip_by_norm_leaves_small_gradients(isa, rng):
    x0 = randn(rng, 255)
    x = x0.copy()
    got = K.clip_by_norm(x, 10 * R.global_norm(x0))
    assert got == pytest.approx(R.global_norm(x0), rel=1e-5)
    np.testing.assert_array_equal(x, x0)
