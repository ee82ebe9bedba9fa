"""A float64 numpy RWKV-4 with the architecture and parameter layout of csrc/rwkv.c, written
independently (plain numpy, its own backward) to check the C kernels and the C model.

The WKV operator three ways:
  * wkv_naive     straight from the formula, plain exponentials: overflows once u + k
                  passes ~709 (float64) or ~88 (float32) — only for short, tame inputs;
  * wkv_softmax   the same sums written as a softmax over the past tokens (each output is a
                  convex combination of v with weights softmax_j(e_tj)), so it is stable for
                  any k; O(T^2); wkv_softmax_backward is its exact gradient, derived from the
                  softmax form, not from the recurrence the C code uses;
  * wkv_recurrent the stable recurrence with a running maximum exponent and a state that
                  can be carried from one call to the next (the generation form).
"""
from __future__ import annotations

import numpy as np


def decay(time_decay):
    """The per-channel decay w = -exp(time_decay)."""
    return -np.exp(np.asarray(time_decay, np.float64))


def wkv_naive(time_decay, time_first, k, v):
    """y[B,T,C] = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (the same without v)."""
    w, u = decay(time_decay), np.asarray(time_first, np.float64)
    k, v = np.asarray(k, np.float64), np.asarray(v, np.float64)
    B, T, C = k.shape
    y = np.empty((B, T, C))
    for t in range(T):
        num = np.exp(u + k[:, t]) * v[:, t]
        den = np.exp(u + k[:, t])
        for i in range(t):
            e = np.exp((t - 1 - i) * w + k[:, i])
            num = num + e * v[:, i]
            den = den + e
        y[:, t] = num / den
    return y


def _exponents(time_decay, time_first, k):
    """e[b,c,t,j] = (t-1-j) w + k_j for j < t, u + k_t for j = t, -inf for j > t."""
    w, u = decay(time_decay), np.asarray(time_first, np.float64)
    kk = np.asarray(k, np.float64).transpose(0, 2, 1)  # [B,C,T]
    T = kk.shape[-1]
    t, j = np.arange(T)[:, None], np.arange(T)[None, :]
    dist = (t - 1 - j).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.where(j < t - 1, dist[None, None] * w[None, :, None, None], 0.0) + kk[:, :, None, :]
    e = np.where(j < t, e, -np.inf)
    diag = np.arange(T)
    e[..., diag, diag] = u[None, :, None] + kk
    return e, w, dist


def _weights(time_decay, time_first, k):
    e, w, dist = _exponents(time_decay, time_first, k)
    a = np.exp(e - e.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True), w, dist


def wkv_softmax(time_decay, time_first, k, v):
    a, _, _ = _weights(time_decay, time_first, k)
    return np.einsum("bctj,bcj->btc", a, np.asarray(v, np.float64).transpose(0, 2, 1))


def wkv_softmax_backward(time_decay, time_first, k, v, dy):
    """(dtime_decay[C], dtime_first[C], dk[B,T,C], dv[B,T,C]) of sum(y * dy).
    With y_t = sum_j a_tj v_j, a = softmax_j(e_tj): dy_t/de_tj = a_tj (v_j - y_t)."""
    a, w, dist = _weights(time_decay, time_first, k)
    vv = np.asarray(v, np.float64).transpose(0, 2, 1)
    g = np.asarray(dy, np.float64).transpose(0, 2, 1)
    y = np.einsum("bctj,bcj->bct", a, vv)
    de = g[..., :, None] * a * (vv[:, :, None, :] - y[..., :, None])  # [B,C,T,T]
    T = a.shape[-1]
    diag = np.arange(T)
    dv = np.einsum("bct,bctj->bcj", g, a)
    dk = de.sum(2)
    du = de[..., diag, diag].sum((0, 2))
    lower = np.tril(np.ones((T, T)), -1)
    dw = (de * (dist * lower)).sum((0, 2, 3))
    return dw * w, du, dk.transpose(0, 2, 1), dv.transpose(0, 2, 1)


def wkv_recurrent(time_decay, time_first, k, v, state=None):
    """The stable recurrence; state = (aa, bb, pp) [B,C] each, None = empty. Returns (y, state)."""
    w, u = decay(time_decay), np.asarray(time_first, np.float64)
    k, v = np.asarray(k, np.float64), np.asarray(v, np.float64)
    B, T, C = k.shape
    if state is None:
        aa, bb, pp = np.zeros((B, C)), np.zeros((B, C)), np.full((B, C), -np.inf)
    else:
        aa, bb, pp = (np.array(s, np.float64) for s in state)
    y = np.empty((B, T, C))
    with np.errstate(invalid="ignore"):
        for t in range(T):
            kt, vt = k[:, t], v[:, t]
            p = np.maximum(pp, u + kt)
            e1, e2 = np.exp(pp - p), np.exp(u + kt - p)
            y[:, t] = (e1 * aa + e2 * vt) / (e1 * bb + e2)
            p = np.maximum(w + pp, kt)
            e1, e2 = np.exp(w + pp - p), np.exp(kt - p)
            aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, p
    return y, (aa, bb, pp)


# ---------------------------------------------------------------------------- the model
def _ln_fwd(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    n = (x - mu) * rstd
    return n * w + b, (n, rstd)


def _ln_bwd(dy, w, cache):
    n, rstd = cache
    dn = dy * w
    dx = (dn - dn.mean(-1, keepdims=True) - n * (dn * n).mean(-1, keepdims=True)) * rstd
    C = n.shape[-1]
    return dx, (dy * n).reshape(-1, C).sum(0), dy.reshape(-1, C).sum(0)


def _shifted(x):
    """The previous token's row, zeros at t = 0."""
    xx = np.zeros_like(x)
    xx[:, 1:] = x[:, :-1]
    return xx


def _mix_bwd(dout, x, xx, m):
    """out = xx + m (x - xx): returns (dx including the shifted path, dm)."""
    dx = dout * m
    dx[:, :-1] += (dout * (1 - m))[:, 1:]
    return dx, (dout * (x - xx)).reshape(-1, x.shape[-1]).sum(0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def forward_backward(p: dict[str, np.ndarray], tokens, targets, mask, n_layer: int, eps: float = 1e-5):
    """Returns (mean loss, grads dict, logits[B,T,V]) for float64 parameters p (names as in odin.rwkv)."""
    emb = p["emb"]
    V, C = emb.shape
    B, T = tokens.shape
    e = emb[tokens]
    x, c_ln0 = _ln_fwd(e, p["ln0_w"], p["ln0_b"], eps)
    caches = []
    for l in range(n_layer):
        g = lambda name: p[f"h.{l}.{name}"]
        a, c_ln1 = _ln_fwd(x, g("ln1_w"), g("ln1_b"), eps)
        aa = _shifted(a)
        xk = aa + g("att_time_mix_k") * (a - aa)
        xv = aa + g("att_time_mix_v") * (a - aa)
        xr = aa + g("att_time_mix_r") * (a - aa)
        k, v, r = xk @ g("att_key_w").T, xv @ g("att_value_w").T, xr @ g("att_receptance_w").T
        sr = _sigmoid(r)
        y = wkv_softmax(g("att_time_decay"), g("att_time_first"), k, v)
        x2 = x + (sr * y) @ g("att_output_w").T
        c, c_ln2 = _ln_fwd(x2, g("ln2_w"), g("ln2_b"), eps)
        cc = _shifted(c)
        fxk = cc + g("ffn_time_mix_k") * (c - cc)
        fxr = cc + g("ffn_time_mix_r") * (c - cc)
        fk = fxk @ g("ffn_key_w").T
        kk = np.maximum(fk, 0.0) ** 2
        kv = kk @ g("ffn_value_w").T
        sf = _sigmoid(fxr @ g("ffn_receptance_w").T)
        x3 = x2 + sf * kv
        caches.append((x, a, c_ln1, aa, xk, xv, xr, k, v, sr, y, x2, c, c_ln2, cc, fxk, fxr, fk, kk, kv, sf))
        x = x3
    lo, c_lno = _ln_fwd(x, p["ln_out_w"], p["ln_out_b"], eps)
    logits = lo @ emb.T
    m = logits.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(logits - m).sum(-1))
    losses = lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    wt = mask.astype(np.float64) if mask is not None else np.ones((B, T))
    count = wt.sum()
    loss = (losses * wt).sum() / count if count else 0.0

    # ---- backward
    G = {name: np.zeros_like(val) for name, val in p.items()}
    if not count:
        return loss, G, logits
    dlogits = np.exp(logits - lse[..., None])
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1, -1)
    dlogits *= (wt / count)[..., None]
    G["emb"] += dlogits.reshape(-1, V).T @ lo.reshape(-1, C)
    dx, dw_, db_ = _ln_bwd(dlogits @ emb, p["ln_out_w"], c_lno)
    G["ln_out_w"] += dw_
    G["ln_out_b"] += db_
    flat = lambda t: t.reshape(-1, t.shape[-1])
    for l in reversed(range(n_layer)):
        g = lambda name: p[f"h.{l}.{name}"]
        pre = f"h.{l}."
        x_in, a, c_ln1, aa, xk, xv, xr, k, v, sr, y, x2, c, c_ln2, cc, fxk, fxr, fk, kk, kv, sf = caches[l]
        # channel mixing: x3 = x2 + sf * kv
        dkv = dx * sf
        dfr = dx * kv * sf * (1 - sf)
        G[pre + "ffn_value_w"] += flat(dkv).T @ flat(kk)
        dfk = (dkv @ g("ffn_value_w")) * 2 * np.maximum(fk, 0.0)
        G[pre + "ffn_key_w"] += flat(dfk).T @ flat(fxk)
        G[pre + "ffn_receptance_w"] += flat(dfr).T @ flat(fxr)
        dc1, dmk = _mix_bwd(dfk @ g("ffn_key_w"), c, cc, g("ffn_time_mix_k"))
        dc2, dmr = _mix_bwd(dfr @ g("ffn_receptance_w"), c, cc, g("ffn_time_mix_r"))
        G[pre + "ffn_time_mix_k"] += dmk
        G[pre + "ffn_time_mix_r"] += dmr
        d2, dw_, db_ = _ln_bwd(dc1 + dc2, g("ln2_w"), c_ln2)
        G[pre + "ln2_w"] += dw_
        G[pre + "ln2_b"] += db_
        dx = dx + d2
        # time mixing: x2 = x + (sr * y) Wo^T
        gated = sr * y
        G[pre + "att_output_w"] += flat(dx).T @ flat(gated)
        dgated = dx @ g("att_output_w")
        dy = dgated * sr
        dr = dgated * y * sr * (1 - sr)
        dtd, dtf, dk, dv = wkv_softmax_backward(g("att_time_decay"), g("att_time_first"), k, v, dy)
        G[pre + "att_time_decay"] += dtd
        G[pre + "att_time_first"] += dtf
        G[pre + "att_key_w"] += flat(dk).T @ flat(xk)
        G[pre + "att_value_w"] += flat(dv).T @ flat(xv)
        G[pre + "att_receptance_w"] += flat(dr).T @ flat(xr)
        da = np.zeros_like(a)
        for dmix_in, mix in ((dk @ g("att_key_w"), "att_time_mix_k"), (dv @ g("att_value_w"), "att_time_mix_v"),
                             (dr @ g("att_receptance_w"), "att_time_mix_r")):
            d, dm = _mix_bwd(dmix_in, a, aa, g(mix))
            da += d
            G[pre + mix] += dm
        d1, dw_, db_ = _ln_bwd(da, g("ln1_w"), c_ln1)
        G[pre + "ln1_w"] += dw_
        G[pre + "ln1_b"] += db_
        dx = dx + d1
    de, dw_, db_ = _ln_bwd(dx, p["ln0_w"], c_ln0)
    G["ln0_w"] += dw_
    G["ln0_b"] += db_
    np.add.at(G["emb"], tokens.reshape(-1), de.reshape(-1, C))
    return loss, G, logits


def loss_only(p, tokens, targets, mask, n_layer, eps=1e-5) -> float:
    return forward_backward(p, tokens, targets, mask, n_layer, eps)[0]
