"""float64 numpy reference implementations of every ODIN kernel, plus finite differences.

Everything here works in float64 on the float32 inputs the C kernels receive, so the
difference between a kernel and its reference is the kernel's own float32 rounding
error (the inputs are identical, exactly representable in both).

Shapes follow csrc/odin.h: activations [rows, C], weights [OC, C] row-major,
attention qkv [B, T, 3C] with q | k | v, att [B, NH, T, T].
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)  # 2^-23 ~ 1.19e-7
GELU_S = np.sqrt(2.0 / np.pi)
GELU_C = 0.044715


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------ matmul
def matmul(inp, weight, bias=None):
    out = f64(inp) @ f64(weight).T
    if bias is not None:
        out = out + f64(bias)
    return out


def matmul_magnitude(inp, weight, bias=None):
    """|inp| @ |weight|^T (+|bias|): the scale of the rounding error of each output."""
    out = np.abs(f64(inp)) @ np.abs(f64(weight)).T
    if bias is not None:
        out = out + np.abs(f64(bias))
    return out


def matmul_backward(dout, inp, weight):
    dout, inp, weight = f64(dout), f64(inp), f64(weight)
    return dout @ weight, dout.T @ inp, dout.sum(axis=0)


# ------------------------------------------------------------------ normalisation
def layernorm(x, w, b, eps=1e-5):
    x = f64(x)
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    norm = (x - mean[:, None]) * rstd[:, None]
    return norm * f64(w) + f64(b), mean, rstd


def layernorm_backward(dout, x, w, eps=1e-5):
    """Analytic gradients of sum(layernorm(x) * dout) w.r.t. x, w, b."""
    dout, x, w = f64(dout), f64(x), f64(w)
    _, mean, rstd = layernorm(x, w, np.zeros_like(w), eps)
    norm = (x - mean[:, None]) * rstd[:, None]
    dnorm = dout * w
    dx = (dnorm - dnorm.mean(axis=1, keepdims=True)
          - norm * (dnorm * norm).mean(axis=1, keepdims=True)) * rstd[:, None]
    return dx, (dout * norm).sum(axis=0), dout.sum(axis=0)


def rmsnorm(x, w, eps=1e-5):
    x = f64(x)
    rstd = 1.0 / np.sqrt((x * x).mean(axis=1) + eps)
    return x * rstd[:, None] * f64(w), rstd


def rmsnorm_backward(dout, x, w, eps=1e-5):
    dout, x, w = f64(dout), f64(x), f64(w)
    _, rstd = rmsnorm(x, w, eps)
    norm = x * rstd[:, None]
    dnorm = dout * w
    dx = (dnorm - norm * (dnorm * norm).mean(axis=1, keepdims=True)) * rstd[:, None]
    return dx, (dout * norm).sum(axis=0)


# ------------------------------------------------------------------ elementwise
def gelu(x):
    x = f64(x)
    return 0.5 * x * (1.0 + np.tanh(GELU_S * (x + GELU_C * x ** 3)))


def gelu_grad(x):
    x = f64(x)
    u = GELU_S * (x + GELU_C * x ** 3)
    t = np.tanh(u)
    du = GELU_S * (1.0 + 3.0 * GELU_C * x * x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du


def sigmoid(x):
    x = f64(x)
    # split by sign so neither branch overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ------------------------------------------------------------------ softmax / attention
def softmax(x):
    x = f64(x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dout, x):
    y = softmax(x)
    dout = f64(dout)
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


def alibi_slopes(n_head):
    """ALiBi's geometric head slopes 2^(-8 (h+1) / NH)."""
    return 2.0 ** (-8.0 * np.arange(1, n_head + 1) / n_head)


def alibi_bias(T, slopes):
    """[NH, T, T]: slope_h * (j - t) for query t, key j."""
    dist = np.arange(T)[None, :] - np.arange(T)[:, None]
    return f64(slopes)[:, None, None] * dist[None]


def attention(qkv, n_head, slopes=None):
    """Causal multi-head attention: returns out[B,T,C], att[B,NH,T,T] (0 above the diagonal);
    slopes[NH]: ALiBi biases."""
    qkv = f64(qkv)
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    if slopes is not None:
        s = s + alibi_bias(T, slopes)[None]
    causal = np.tril(np.ones((T, T), dtype=bool))
    s = np.where(causal, s, -np.inf)
    att = softmax(s)
    att = np.where(causal, att, 0.0)
    out = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return out, att


def attention_backward(dout, qkv, n_head, slopes=None):
    qkv, dout = f64(qkv), f64(dout)
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    split = lambda a: a.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(qkv[:, :, i * C:(i + 1) * C]) for i in range(3))
    _, att = attention(qkv, n_head, slopes)
    dy = split(dout)
    dv = att.transpose(0, 1, 3, 2) @ dy
    datt = dy @ v.transpose(0, 1, 3, 2)
    dpre = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) / np.sqrt(hs)
    dq = dpre @ k
    dk = dpre.transpose(0, 1, 3, 2) @ q
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, C)  # noqa: E731
    return np.concatenate([merge(dq), merge(dk), merge(dv)], axis=2)


# ------------------------------------------------------------------ embedding
def embedding(tokens, wte, wpe):
    T = tokens.shape[1]
    return f64(wte)[tokens] + f64(wpe)[None, :T]


def embedding_backward(dout, tokens, V, maxT):
    dout = f64(dout)
    B, T, C = dout.shape
    dwte = np.zeros((V, C))
    np.add.at(dwte, tokens.reshape(-1), dout.reshape(-1, C))
    dwpe = np.zeros((maxT, C))
    dwpe[:T] = dout.sum(axis=0)
    return dwte, dwpe


# ------------------------------------------------------------------ loss
def logsumexp(x):
    x = f64(x)
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[..., None]).sum(axis=-1))


def crossentropy(logits, targets, mask=None):
    """Returns (mean over counted rows, losses[N] with 0 where masked, lse[N])."""
    logits = f64(logits)
    N = logits.shape[0]
    lse = logsumexp(logits)
    losses = lse - logits[np.arange(N), targets]
    m = np.ones(N, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    losses = np.where(m, losses, 0.0)
    count = m.sum()
    return (losses.sum() / count if count else 0.0), losses, lse


def crossentropy_backward(logits, targets, mask=None, dloss=1.0):
    logits = f64(logits)
    N, V = logits.shape
    m = np.ones(N, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    count = m.sum()
    p = softmax(logits)
    p[np.arange(N), targets] -= 1.0
    return p * (m[:, None] * (dloss / max(count, 1)))


# ------------------------------------------------------------------ optimiser
def adamw(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (decoupled weight decay, bias correction); returns new (p, m, v)."""
    p, g, m, v = f64(p), f64(g), f64(m), f64(v)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** step)
    vhat = v / (1 - beta2 ** step)
    p = p - lr * (mhat / (np.sqrt(vhat) + eps) + weight_decay * p)
    return p, m, v


def global_norm(x):
    return float(np.sqrt((f64(x) ** 2).sum()))


# ------------------------------------------------------------------ finite differences
def numerical_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6,
                   idx: Optional[np.ndarray] = None) -> np.ndarray:
    """Central differences of a float64 scalar function, at every element (or at flat idx)."""
    x = f64(x).copy()
    flat = x.reshape(-1)
    g = np.zeros_like(flat)
    for i in (range(flat.size) if idx is None else idx):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g.reshape(x.shape)


def perturb_pair(x: np.ndarray, d: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 points x +- eps*d and their exact float64 difference (rounding included)."""
    xp = (f64(x) + eps * d).astype(np.float32)
    xm = (f64(x) - eps * d).astype(np.float32)
    return xp, xm, f64(xp) - f64(xm)


# ------------------------------------------------------------------ comparison
def assert_close(actual, expected, *, atol: float = 0.0, rtol: float = 0.0, scale=None,
                 tol: float = 0.0, what: str = "") -> float:
    """Assert |actual - expected| <= atol + rtol*|expected| + tol*scale, elementwise.

    `scale` is the magnitude the rounding error is proportional to (e.g. |A|@|B| for a
    matrix product); NaN anywhere in `actual` fails. Returns the worst ratio
    error/bound (<= 1 passes) so callers can print it.
    """
    a, e = f64(actual), f64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != reference {e.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values at {np.argwhere(~np.isfinite(a))[:5].tolist()}"
    bound = atol + rtol * np.abs(e)
    if scale is not None:
        bound = bound + tol * f64(scale)
    err = np.abs(a - e)
    bound = np.broadcast_to(bound, err.shape)
    ratio = np.divide(err, bound, out=np.where(err > 0, np.inf, 0.0), where=bound > 0)
    worst = float(ratio.max()) if ratio.size else 0.0
    if worst > 1.0:
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        raise AssertionError(
            f"{what}: max error/bound = {worst:.3g} at {tuple(int(j) for j in i)}: "
            f"got {a[i]!r}, want {e[i]!r} (|err| {err[i]:.3g}, bound {bound[i]:.3g}); "
            f"max |err| overall {err.max():.3g}")
    return worst
