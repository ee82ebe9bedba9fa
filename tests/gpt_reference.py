"""A float64 numpy GPT with the same architecture and parameter layout as csrc/gpt.c,
written independently (plain numpy, its own backward) to check the C model's loss and
every parameter gradient."""
from __future__ import annotations

import numpy as np

GELU_S = np.sqrt(2.0 / np.pi)


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
    return dx, (dy * n).reshape(-1, n.shape[-1]).sum(0), dy.reshape(-1, n.shape[-1]).sum(0)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(GELU_S * (x + 0.044715 * x ** 3)))


def _gelu_grad(x):
    t = np.tanh(GELU_S * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_S * (1 + 3 * 0.044715 * x * x)


def forward_backward(p: dict[str, np.ndarray], tokens, targets, mask, n_layer: int, n_head: int,
                     eps: float = 1e-5, ids=None, alibi: bool = False):
    """Returns (mean loss, grads dict) for float64 parameters p (names as in odin.model);
    alibi: each head's scores get slope_h * (j - t), slope_h = 2^(-8 (h+1) / n_head)."""
    B, T = tokens.shape
    wte, wpe = p["wte"], p["wpe"]
    V, C = wte.shape
    hs = C // n_head
    x = wte[tokens] + wpe[:T][None]
    if ids is not None:  # Abacus digit-position embeddings
        x = x + p["wab"][ids]
    caches = []
    causal = np.tril(np.ones((T, T), bool))
    slopes = 2.0 ** (-8.0 * np.arange(1, n_head + 1) / n_head)
    bias = slopes[:, None, None] * (np.arange(T)[None, :] - np.arange(T)[:, None])[None] if alibi else 0.0
    for l in range(n_layer):
        g = lambda k: p[f"h.{l}.{k}"]
        ln1, c_ln1 = _ln_fwd(x, g("ln1_w"), g("ln1_b"), eps)
        qkv = ln1 @ g("qkv_w").T + g("qkv_b")
        q, k, v = np.split(qkv, 3, axis=-1)
        q = q.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
        k = k.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs) + bias
        s = np.where(causal, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x2 = x + y @ g("attproj_w").T + g("attproj_b")
        ln2, c_ln2 = _ln_fwd(x2, g("ln2_w"), g("ln2_b"), eps)
        h = ln2 @ g("fc_w").T + g("fc_b")
        hg = _gelu(h)
        x3 = x2 + hg @ g("fcproj_w").T + g("fcproj_b")
        caches.append((x, ln1, c_ln1, q, k, v, a, y, x2, ln2, c_ln2, h, hg))
        x = x3
    lnf, c_lnf = _ln_fwd(x, p["lnf_w"], p["lnf_b"], eps)
    logits = lnf @ wte.T
    m = logits.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(logits - m).sum(-1))
    losses = lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    w = mask.astype(np.float64) if mask is not None else np.ones((B, T))
    count = w.sum()
    loss = (losses * w).sum() / count

    # ---- backward
    G = {k: np.zeros_like(v) for k, v in p.items()}
    probs = np.exp(logits - lse[..., None])
    dlogits = probs
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1, -1)
    dlogits *= (w / count)[..., None]
    G["wte"] += dlogits.reshape(-1, V).T @ lnf.reshape(-1, C)
    dlnf = dlogits @ wte
    dx, dw_, db_ = _ln_bwd(dlnf, p["lnf_w"], c_lnf)
    G["lnf_w"] += dw_
    G["lnf_b"] += db_
    for l in reversed(range(n_layer)):
        g = lambda k: p[f"h.{l}.{k}"]
        x_in, ln1, c_ln1, q, k, v, a, y, x2, ln2, c_ln2, h, hg = caches[l]
        pre = f"h.{l}."
        # mlp
        G[pre + "fcproj_w"] += dx.reshape(-1, C).T @ hg.reshape(-1, 4 * C)
        G[pre + "fcproj_b"] += dx.reshape(-1, C).sum(0)
        dhg = dx @ g("fcproj_w")
        dh = dhg * _gelu_grad(h)
        G[pre + "fc_w"] += dh.reshape(-1, 4 * C).T @ ln2.reshape(-1, C)
        G[pre + "fc_b"] += dh.reshape(-1, 4 * C).sum(0)
        dln2 = dh @ g("fc_w")
        d2, dw_, db_ = _ln_bwd(dln2, g("ln2_w"), c_ln2)
        G[pre + "ln2_w"] += dw_
        G[pre + "ln2_b"] += db_
        dx = dx + d2
        # attention
        G[pre + "attproj_w"] += dx.reshape(-1, C).T @ y.reshape(-1, C)
        G[pre + "attproj_b"] += dx.reshape(-1, C).sum(0)
        dy = (dx @ g("attproj_w")).reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
        da = dy @ v.transpose(0, 1, 3, 2)
        dv = a.transpose(0, 1, 3, 2) @ dy
        ds = a * (da - (da * a).sum(-1, keepdims=True)) / np.sqrt(hs)
        dq = ds @ k
        dk = ds.transpose(0, 1, 3, 2) @ q
        merge = lambda t: t.transpose(0, 2, 1, 3).reshape(B, T, C)
        dqkv = np.concatenate([merge(dq), merge(dk), merge(dv)], -1)
        G[pre + "qkv_w"] += dqkv.reshape(-1, 3 * C).T @ ln1.reshape(-1, C)
        G[pre + "qkv_b"] += dqkv.reshape(-1, 3 * C).sum(0)
        dln1 = dqkv @ g("qkv_w")
        d1, dw_, db_ = _ln_bwd(dln1, g("ln1_w"), c_ln1)
        G[pre + "ln1_w"] += dw_
        G[pre + "ln1_b"] += db_
        dx = dx + d1
    np.add.at(G["wte"], tokens.reshape(-1), dx.reshape(-1, C))
    G["wpe"][:T] += dx.sum(0)
    if ids is not None:
        np.add.at(G["wab"], ids.reshape(-1), dx.reshape(-1, C))
    return loss, G, logits


def loss_only(p, tokens, targets, mask, n_layer, n_head, eps=1e-5, ids=None, alibi=False) -> float:
    return forward_backward(p, tokens, targets, mask, n_layer, n_head, eps, ids, alibi)[0]
