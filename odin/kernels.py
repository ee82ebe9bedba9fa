"""numpy front end of the native kernels.

Each wrapper checks dtype, memory layout and shapes before the C call (the C side checks
sizes and values again), so a mistake surfaces as an exception naming the argument,
never as a crash or a silently wrong number. Forward wrappers allocate their outputs
unless `out=` is given; backward wrappers ACCUMULATE into the gradient arrays passed in
(allocating zeros for the ones left as None) and return them.

cffi releases the GIL for the duration of every call, so two Python threads running
kernels run them concurrently.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from odin.native import ArgumentError, DTypeError, ShapeError, check, ffi, lib
from odin.validate import loss_mask

Array = np.ndarray


# ---------------------------------------------------------------- argument checking
def _array(x: object, name: str, dtype: type, shape: Optional[Sequence[int]] = None,
           writable: bool = False) -> Array:
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{name} must be a numpy array of {np.dtype(dtype).name}, got {type(x).__name__}")
    if x.dtype != dtype:
        raise DTypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise DTypeError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writable and not x.flags.writeable:
        raise DTypeError(f"{name} must be writable")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ShapeError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.size == 0:
        raise ShapeError(f"{name} must not be empty (shape {tuple(x.shape)})")
    return x


def _f32(x: object, name: str, shape: Optional[Sequence[int]] = None, writable: bool = False) -> Array:
    return _array(x, name, np.float32, shape, writable)


def _ndim(x: Array, name: str, ndim: int, what: str) -> None:
    if x.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D {what}, got shape {tuple(x.shape)}")


def _fp(x: Optional[Array]):
    return ffi.NULL if x is None else ffi.cast("float *", ffi.from_buffer(x))


def _ip(x: Array):
    return ffi.cast("int32_t *", ffi.from_buffer(x))


def _u8p(x: Optional[Array]):
    return ffi.NULL if x is None else ffi.cast("uint8_t *", ffi.from_buffer(x))


def _out(out: Optional[Array], name: str, shape: Sequence[int]) -> Array:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    return _f32(out, name, shape, writable=True)


def _grad(g: Optional[Array], name: str, shape: Sequence[int]) -> Array:
    if g is None:
        return np.zeros(shape, dtype=np.float32)
    return _f32(g, name, shape, writable=True)


def _no_overlap(written: dict[str, Optional[Array]], read: dict[str, Optional[Array]]) -> None:
    """Refuse an output (out=, or a gradient accumulated into) that shares memory with an input
    or with another output: the kernels read and write in blocks, so an alias gives silently
    wrong numbers, not an error. The arrays are C-contiguous, so bounds overlap is overlap."""
    outs = [(name, a) for name, a in written.items() if a is not None]
    ins = [(name, a) for name, a in read.items() if a is not None]
    for i, (name, a) in enumerate(outs):
        for other, b in outs[i + 1:] + ins:
            if np.may_share_memory(a, b):
                raise ArgumentError(f"{name} shares memory with {other}: pass a separate output array")


# ---------------------------------------------------------------- matmul
def matmul_forward(inp: Array, weight: Array, bias: Optional[Array] = None,
                   out: Optional[Array] = None) -> Array:
    """out[M,N] = inp[M,K] @ weight[N,K].T + bias[N]"""
    inp, weight = _f32(inp, "inp"), _f32(weight, "weight")
    _ndim(inp, "inp", 2, "[M, K]")
    _ndim(weight, "weight", 2, "[N, K]")
    M, K = inp.shape
    N = weight.shape[0]
    if weight.shape[1] != K:
        raise ShapeError(f"weight must have shape (N, {K}) to match inp's K={K}, got {weight.shape}")
    if bias is not None:
        bias = _f32(bias, "bias", (N,))
    out = _out(out, "out", (M, N))
    _no_overlap({"out": out}, {"inp": inp, "weight": weight, "bias": bias})
    check(lib.odin_matmul_forward(_fp(out), _fp(inp), _fp(weight), _fp(bias), M, K, N), "matmul_forward")
    return out


def matmul_backward(dout: Array, inp: Array, weight: Array, dinp: Optional[Array] = None,
                    dweight: Optional[Array] = None, dbias: Optional[Array] = None,
                    need_bias: bool = True) -> tuple[Array, Array, Optional[Array]]:
    """dinp += dout @ weight ; dweight += dout.T @ inp ; dbias += dout.sum(0)"""
    inp, weight = _f32(inp, "inp"), _f32(weight, "weight")
    _ndim(inp, "inp", 2, "[M, K]")
    _ndim(weight, "weight", 2, "[N, K]")
    M, K = inp.shape
    N = weight.shape[0]
    if weight.shape[1] != K:
        raise ShapeError(f"weight must have shape (N, {K}) to match inp's K={K}, got {weight.shape}")
    dout = _f32(dout, "dout", (M, N))
    dinp = _grad(dinp, "dinp", (M, K))
    dweight = _grad(dweight, "dweight", (N, K))
    dbias = _grad(dbias, "dbias", (N,)) if (need_bias or dbias is not None) else None
    _no_overlap({"dinp": dinp, "dweight": dweight, "dbias": dbias}, {"dout": dout, "inp": inp, "weight": weight})
    check(lib.odin_matmul_backward(_fp(dinp), _fp(dweight), _fp(dbias), _fp(dout), _fp(inp),
                                   _fp(weight), M, K, N), "matmul_backward")
    return dinp, dweight, dbias


# ---------------------------------------------------------------- normalisation
def _rows(inp: Array, name: str = "inp") -> tuple[int, int]:
    _ndim(inp, name, 2, "[N, C]")
    return inp.shape[0], inp.shape[1]


def layernorm_forward(inp: Array, weight: Array, bias: Array, eps: float = 1e-5,
                      out: Optional[Array] = None) -> tuple[Array, Array, Array]:
    """Returns (out[N,C], mean[N], rstd[N])."""
    inp = _f32(inp, "inp")
    N, C = _rows(inp)
    weight, bias = _f32(weight, "weight", (C,)), _f32(bias, "bias", (C,))
    out = _out(out, "out", (N, C))
    mean, rstd = np.empty(N, np.float32), np.empty(N, np.float32)
    _no_overlap({"out": out}, {"inp": inp, "weight": weight, "bias": bias})
    check(lib.odin_layernorm_forward(_fp(out), _fp(mean), _fp(rstd), _fp(inp), _fp(weight), _fp(bias),
                                     N, C, float(eps)), "layernorm_forward")
    return out, mean, rstd


def layernorm_backward(dout: Array, inp: Array, weight: Array, mean: Array, rstd: Array,
                       dinp: Optional[Array] = None, dweight: Optional[Array] = None,
                       dbias: Optional[Array] = None) -> tuple[Array, Array, Array]:
    inp = _f32(inp, "inp")
    N, C = _rows(inp)
    dout, weight = _f32(dout, "dout", (N, C)), _f32(weight, "weight", (C,))
    mean, rstd = _f32(mean, "mean", (N,)), _f32(rstd, "rstd", (N,))
    dinp, dweight, dbias = _grad(dinp, "dinp", (N, C)), _grad(dweight, "dweight", (C,)), _grad(dbias, "dbias", (C,))
    _no_overlap({"dinp": dinp, "dweight": dweight, "dbias": dbias}, {"dout": dout, "inp": inp, "weight": weight, "mean": mean, "rstd": rstd})
    check(lib.odin_layernorm_backward(_fp(dinp), _fp(dweight), _fp(dbias), _fp(dout), _fp(inp), _fp(weight),
                                      _fp(mean), _fp(rstd), N, C), "layernorm_backward")
    return dinp, dweight, dbias


def rmsnorm_forward(inp: Array, weight: Array, eps: float = 1e-5,
                    out: Optional[Array] = None) -> tuple[Array, Array]:
    """Returns (out[N,C], rstd[N])."""
    inp = _f32(inp, "inp")
    N, C = _rows(inp)
    weight = _f32(weight, "weight", (C,))
    out = _out(out, "out", (N, C))
    rstd = np.empty(N, np.float32)
    _no_overlap({"out": out}, {"inp": inp, "weight": weight})
    check(lib.odin_rmsnorm_forward(_fp(out), _fp(rstd), _fp(inp), _fp(weight), N, C, float(eps)),
          "rmsnorm_forward")
    return out, rstd


def rmsnorm_backward(dout: Array, inp: Array, weight: Array, rstd: Array, dinp: Optional[Array] = None,
                     dweight: Optional[Array] = None) -> tuple[Array, Array]:
    inp = _f32(inp, "inp")
    N, C = _rows(inp)
    dout, weight, rstd = _f32(dout, "dout", (N, C)), _f32(weight, "weight", (C,)), _f32(rstd, "rstd", (N,))
    dinp, dweight = _grad(dinp, "dinp", (N, C)), _grad(dweight, "dweight", (C,))
    _no_overlap({"dinp": dinp, "dweight": dweight}, {"dout": dout, "inp": inp, "weight": weight, "rstd": rstd})
    check(lib.odin_rmsnorm_backward(_fp(dinp), _fp(dweight), _fp(dout), _fp(inp), _fp(weight), _fp(rstd), N, C),
          "rmsnorm_backward")
    return dinp, dweight


# ---------------------------------------------------------------- elementwise
def _unary(fn, name: str, inp: Array, out: Optional[Array]) -> Array:
    inp = _f32(inp, "inp")
    out = _out(out, "out", inp.shape)
    _no_overlap({"out": out}, {"inp": inp})
    check(fn(_fp(out), _fp(inp), inp.size), name)
    return out


def gelu_forward(inp: Array, out: Optional[Array] = None) -> Array:
    return _unary(lib.odin_gelu_forward, "gelu_forward", inp, out)


def gelu_backward(dout: Array, inp: Array, dinp: Optional[Array] = None) -> Array:
    inp = _f32(inp, "inp")
    dout = _f32(dout, "dout", inp.shape)
    dinp = _grad(dinp, "dinp", inp.shape)
    _no_overlap({"dinp": dinp}, {"dout": dout, "inp": inp})
    check(lib.odin_gelu_backward(_fp(dinp), _fp(inp), _fp(dout), inp.size), "gelu_backward")
    return dinp


def vexp(inp: Array, out: Optional[Array] = None) -> Array:
    return _unary(lib.odin_vexp, "vexp", inp, out)


def vsigmoid(inp: Array, out: Optional[Array] = None) -> Array:
    return _unary(lib.odin_vsigmoid, "vsigmoid", inp, out)


def vtanh(inp: Array, out: Optional[Array] = None) -> Array:
    return _unary(lib.odin_vtanh, "vtanh", inp, out)


# ---------------------------------------------------------------- softmax and attention
def softmax_forward(inp: Array, out: Optional[Array] = None) -> Array:
    inp = _f32(inp, "inp")
    N, C = _rows(inp)
    out = _out(out, "out", (N, C))
    _no_overlap({"out": out}, {"inp": inp})
    check(lib.odin_softmax_forward(_fp(out), _fp(inp), N, C), "softmax_forward")
    return out


def softmax_backward(dout: Array, out: Array, dinp: Optional[Array] = None) -> Array:
    out = _f32(out, "out")
    N, C = _rows(out, "out")
    dout = _f32(dout, "dout", (N, C))
    dinp = _grad(dinp, "dinp", (N, C))
    _no_overlap({"dinp": dinp}, {"dout": dout, "out": out})
    check(lib.odin_softmax_backward(_fp(dinp), _fp(out), _fp(dout), N, C), "softmax_backward")
    return dinp


def _attn_dims(qkv: Array, n_head: int) -> tuple[int, int, int]:
    _ndim(qkv, "qkv", 3, "[B, T, 3C]")
    B, T, C3 = qkv.shape
    if C3 % 3:
        raise ShapeError(f"qkv's last dimension must be 3*C, got {C3}")
    C = C3 // 3
    if n_head <= 0 or C % n_head:
        raise ShapeError(f"n_head must be a positive divisor of C={C}, got {n_head}")
    return B, T, C


def attention_forward(qkv: Array, n_head: int, slopes: Optional[Array] = None) -> tuple[Array, Array]:
    """Causal multi-head attention, with ALiBi biases if `slopes[n_head]` is given.
    Returns (out[B,T,C], att[B,NH,T,T])."""
    qkv = _f32(qkv, "qkv")
    B, T, C = _attn_dims(qkv, n_head)
    slopes = None if slopes is None else _f32(slopes, "slopes", (n_head,))
    out = np.empty((B, T, C), np.float32)
    att = np.empty((B, n_head, T, T), np.float32)
    scratch = np.empty(lib.odin_attention_scratch_floats(T, C, n_head), np.float32)
    check(lib.odin_attention_forward(_fp(out), _fp(att), _fp(scratch), _fp(qkv), _fp(slopes), B, T, C, n_head),
          "attention_forward")
    return out, att


def attention_backward(dout: Array, qkv: Array, att: Array, n_head: int,
                       dqkv: Optional[Array] = None) -> Array:
    qkv = _f32(qkv, "qkv")
    B, T, C = _attn_dims(qkv, n_head)
    dout = _f32(dout, "dout", (B, T, C))
    att = _f32(att, "att", (B, n_head, T, T))
    dqkv = _grad(dqkv, "dqkv", (B, T, 3 * C))
    scratch = np.empty(lib.odin_attention_scratch_floats(T, C, n_head), np.float32)
    _no_overlap({"dqkv": dqkv}, {"dout": dout, "qkv": qkv, "att": att})
    check(lib.odin_attention_backward(_fp(dqkv), _fp(scratch), _fp(dout), _fp(qkv), _fp(att), B, T, C, n_head),
          "attention_backward")
    return dqkv


# ---------------------------------------------------------------- embedding
def _tokens(tokens: object) -> Array:
    t = _array(tokens, "tokens", np.int32)
    _ndim(t, "tokens", 2, "[B, T]")
    return t


def embedding_forward(tokens: Array, wte: Array, wpe: Array) -> Array:
    """out[B,T,C] = wte[tokens] + wpe[:T]"""
    tokens = _tokens(tokens)
    wte, wpe = _f32(wte, "wte"), _f32(wpe, "wpe")
    _ndim(wte, "wte", 2, "[V, C]")
    _ndim(wpe, "wpe", 2, "[maxT, C]")
    B, T = tokens.shape
    V, C = wte.shape
    if wpe.shape[1] != C:
        raise ShapeError(f"wpe must have {C} columns like wte, got shape {wpe.shape}")
    out = np.empty((B, T, C), np.float32)
    check(lib.odin_embedding_forward(_fp(out), _ip(tokens), _fp(wte), _fp(wpe), B, T, C, V, wpe.shape[0]),
          "embedding_forward")
    return out


def embedding_backward(dout: Array, tokens: Array, dwte: Array, dwpe: Array) -> tuple[Array, Array]:
    """dwte[tokens] += dout ; dwpe[:T] += dout (both accumulate in place)."""
    tokens = _tokens(tokens)
    B, T = tokens.shape
    dwte, dwpe = _f32(dwte, "dwte", writable=True), _f32(dwpe, "dwpe", writable=True)
    _ndim(dwte, "dwte", 2, "[V, C]")
    _ndim(dwpe, "dwpe", 2, "[maxT, C]")
    V, C = dwte.shape
    if dwpe.shape[1] != C:
        raise ShapeError(f"dwpe must have {C} columns like dwte, got shape {dwpe.shape}")
    dout = _f32(dout, "dout", (B, T, C))
    _no_overlap({"dwte": dwte, "dwpe": dwpe}, {"dout": dout, "tokens": tokens})
    check(lib.odin_embedding_backward(_fp(dwte), _fp(dwpe), _fp(dout), _ip(tokens), B, T, C, V, dwpe.shape[0]),
          "embedding_backward")
    return dwte, dwpe


# ---------------------------------------------------------------- loss
def _ce_args(logits: Array, targets: Array, mask: Optional[Array]) -> tuple[Array, Array, Optional[Array], int, int]:
    logits = _f32(logits, "logits")
    N, V = _rows(logits, "logits")
    targets = _array(targets, "targets", np.int32, (N,))
    if mask is not None:
        if isinstance(mask, np.ndarray) and mask.dtype == np.bool_:
            mask = mask.astype(np.uint8)
        mask = loss_mask(_array(mask, "mask", np.uint8, (N,)), "mask")
    return logits, targets, mask, N, V


def crossentropy_forward(logits: Array, targets: Array, mask: Optional[Array] = None) -> tuple[float, Array, Array]:
    """Fused softmax + cross-entropy. Returns (mean loss over counted rows, losses[N], lse[N])."""
    logits, targets, mask, N, V = _ce_args(logits, targets, mask)
    losses, lse = np.empty(N, np.float32), np.empty(N, np.float32)
    mean = ffi.new("float *")
    check(lib.odin_crossentropy_forward(mean, _fp(losses), _fp(lse), _fp(logits), _ip(targets), _u8p(mask), N, V),
          "crossentropy_forward")
    return float(mean[0]), losses, lse


def crossentropy_backward(logits: Array, lse: Array, targets: Array, mask: Optional[Array] = None,
                          dloss: float = 1.0, dlogits: Optional[Array] = None) -> Array:
    logits, targets, mask, N, V = _ce_args(logits, targets, mask)
    lse = _f32(lse, "lse", (N,))
    dlogits = _grad(dlogits, "dlogits", (N, V))
    _no_overlap({"dlogits": dlogits}, {"logits": logits, "lse": lse, "targets": targets, "mask": mask})
    check(lib.odin_crossentropy_backward(_fp(dlogits), _fp(logits), _fp(lse), _ip(targets), _u8p(mask), N, V,
                                         float(dloss)), "crossentropy_backward")
    return dlogits


# ---------------------------------------------------------------- optimiser
def adamw(params: Array, grads: Array, m: Array, v: Array, *, lr: float, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, step: int) -> None:
    """One AdamW update in place on params, m, v (all float32, same shape)."""
    params = _f32(params, "params", writable=True)
    grads = _f32(grads, "grads", params.shape)
    m, v = _f32(m, "m", params.shape, writable=True), _f32(v, "v", params.shape, writable=True)
    _no_overlap({"params": params, "m": m, "v": v}, {"grads": grads})
    check(lib.odin_adamw(_fp(params), _fp(grads), _fp(m), _fp(v), params.size, float(lr), float(beta1),
                         float(beta2), float(eps), float(weight_decay), int(step)), "adamw")


def global_norm(x: Array) -> float:
    x = _f32(x, "x")
    out = ffi.new("float *")
    check(lib.odin_global_norm(out, _fp(x), x.size), "global_norm")
    return float(out[0])


def clip_by_norm(x: Array, max_norm: float) -> float:
    """Scale x in place so its L2 norm is at most max_norm; returns the norm before clipping."""
    x = _f32(x, "x", writable=True)
    norm = ffi.new("float *")
    check(lib.odin_clip_by_norm(_fp(x), x.size, float(max_norm), norm), "clip_by_norm")
    return float(norm[0])


def sgemm(a: Array, b: Array, c: Optional[Array] = None, *, trans_a: bool = False, trans_b: bool = False,
          accumulate: bool = False) -> Array:
    """C (+)= op(A) @ op(B) through the packed GEMM engine (op = transpose when asked)."""
    a, b = _f32(a, "a"), _f32(b, "b")
    _ndim(a, "a", 2, "matrix")
    _ndim(b, "b", 2, "matrix")
    M, Ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if Ka != Kb:
        raise ShapeError(f"inner dimensions differ: op(a) is {M}x{Ka}, op(b) is {Kb}x{N}")
    if accumulate and c is None:
        raise ArgumentError("accumulate=True needs c")
    c = _out(c, "c", (M, N)) if c is not None else np.empty((M, N), np.float32)
    rsa, csa = (1, a.shape[1]) if trans_a else (a.shape[1], 1)
    rsb, csb = (1, b.shape[1]) if trans_b else (b.shape[1], 1)
    _no_overlap({"c": c}, {"a": a, "b": b})
    check(lib.odin_sgemm(M, N, Ka, _fp(a), rsa, csa, _fp(b), rsb, csb, 1.0 if accumulate else 0.0, _fp(c), N),
          "sgemm")
    return c


# ---------------------------------------------------------------- RWKV-4
def _btc(x: Array, name: str) -> tuple[int, int, int]:
    _ndim(x, name, 3, "[B, T, C]")
    return x.shape[0], x.shape[1], x.shape[2]


def tokenshift_forward(x: Array, mix: Array, prev: Optional[Array] = None, out: Optional[Array] = None) -> Array:
    """out[B,T,C] = xx + mix * (x - xx), xx = x one token later: x[:, t-1], prev[B,C] (or 0) at t = 0."""
    x = _f32(x, "x")
    B, T, C = _btc(x, "x")
    mix = _f32(mix, "mix", (C,))
    if prev is not None:
        prev = _f32(prev, "prev", (B, C))
    out = _out(out, "out", (B, T, C))
    _no_overlap({"out": out}, {"x": x, "mix": mix, "prev": prev})
    check(lib.odin_tokenshift_forward(_fp(out), _fp(x), _fp(mix), _fp(prev), B, T, C), "tokenshift_forward")
    return out


def tokenshift_backward(dout: Array, x: Array, mix: Array, dx: Optional[Array] = None,
                        dmix: Optional[Array] = None) -> tuple[Array, Array]:
    """dx[B,T,C] += dout[t] mix + dout[t+1] (1 - mix) ; dmix[C] += sum dout (x - xx) (zeros before t = 0)."""
    x = _f32(x, "x")
    B, T, C = _btc(x, "x")
    mix, dout = _f32(mix, "mix", (C,)), _f32(dout, "dout", (B, T, C))
    dx, dmix = _grad(dx, "dx", (B, T, C)), _grad(dmix, "dmix", (C,))
    _no_overlap({"dx": dx, "dmix": dmix}, {"dout": dout, "x": x, "mix": mix})
    check(lib.odin_tokenshift_backward(_fp(dx), _fp(dmix), _fp(dout), _fp(x), _fp(mix), B, T, C),
          "tokenshift_backward")
    return dx, dmix


def _wkv_args(time_decay: Array, time_first: Array, k: Array, v: Array) -> tuple[Array, Array, Array, Array, int, int, int]:
    k = _f32(k, "k")
    B, T, C = _btc(k, "k")
    v = _f32(v, "v", (B, T, C))
    time_decay, time_first = _f32(time_decay, "time_decay", (C,)), _f32(time_first, "time_first", (C,))
    return time_decay, time_first, k, v, B, T, C


def wkv_forward(time_decay: Array, time_first: Array, k: Array, v: Array, out: Optional[Array] = None) -> Array:
    """The RWKV-4 WKV operator over k, v [B,T,C], each sequence from the empty state.
    time_decay[C] is the parameter: the decay is w = -exp(time_decay); time_first[C] is the bonus u."""
    time_decay, time_first, k, v, B, T, C = _wkv_args(time_decay, time_first, k, v)
    out = _out(out, "out", (B, T, C))
    _no_overlap({"out": out}, {"time_decay": time_decay, "time_first": time_first, "k": k, "v": v})
    check(lib.odin_wkv_forward(_fp(out), _fp(time_decay), _fp(time_first), _fp(k), _fp(v), B, T, C), "wkv_forward")
    return out


def wkv_backward(dy: Array, time_decay: Array, time_first: Array, k: Array, v: Array,
                 dtime_decay: Optional[Array] = None, dtime_first: Optional[Array] = None,
                 dk: Optional[Array] = None, dv: Optional[Array] = None) -> tuple[Array, Array, Array, Array]:
    """Exact gradient of wkv_forward, accumulated: dtime_decay[C] (with respect to the parameter,
    i.e. dL/dw * w), dtime_first[C], dk, dv [B,T,C]."""
    time_decay, time_first, k, v, B, T, C = _wkv_args(time_decay, time_first, k, v)
    dy = _f32(dy, "dy", (B, T, C))
    dtime_decay, dtime_first = _grad(dtime_decay, "dtime_decay", (C,)), _grad(dtime_first, "dtime_first", (C,))
    dk, dv = _grad(dk, "dk", (B, T, C)), _grad(dv, "dv", (B, T, C))
    scratch = np.empty(3 * T * C, np.float32)
    _no_overlap({"dtime_decay": dtime_decay, "dtime_first": dtime_first, "dk": dk, "dv": dv}, {"dy": dy, "time_decay": time_decay, "time_first": time_first, "k": k, "v": v})
    check(lib.odin_wkv_backward(_fp(dtime_decay), _fp(dtime_first), _fp(dk), _fp(dv), _fp(scratch),
                                _fp(time_decay), _fp(time_first), _fp(k), _fp(v), _fp(dy), B, T, C), "wkv_backward")
    return dtime_decay, dtime_first, dk, dv


def sqrelu_forward(inp: Array, out: Optional[Array] = None) -> Array:
    """out = max(inp, 0)^2"""
    return _unary(lib.odin_sqrelu_forward, "sqrelu_forward", inp, out)


def sqrelu_backward(dout: Array, inp: Array, dinp: Optional[Array] = None) -> Array:
    inp = _f32(inp, "inp")
    dout = _f32(dout, "dout", inp.shape)
    dinp = _grad(dinp, "dinp", inp.shape)
    _no_overlap({"dinp": dinp}, {"dout": dout, "inp": inp})
    check(lib.odin_sqrelu_backward(_fp(dinp), _fp(inp), _fp(dout), inp.size), "sqrelu_backward")
    return dinp


def sigmoid_gate_forward(a: Array, b: Array, out: Optional[Array] = None) -> Array:
    """out += sigmoid(a) * b (out starts at zero when not given)."""
    a = _f32(a, "a")
    b = _f32(b, "b", a.shape)
    out = _grad(out, "out", a.shape)
    _no_overlap({"out": out}, {"a": a, "b": b})
    check(lib.odin_sigmoid_gate_forward(_fp(out), _fp(a), _fp(b), a.size), "sigmoid_gate_forward")
    return out


def sigmoid_gate_backward(dout: Array, a: Array, b: Array, da: Optional[Array] = None,
                          db: Optional[Array] = None) -> tuple[Array, Array]:
    """da += dout b s (1 - s) ; db += dout s, s = sigmoid(a)."""
    a = _f32(a, "a")
    b, dout = _f32(b, "b", a.shape), _f32(dout, "dout", a.shape)
    da, db = _grad(da, "da", a.shape), _grad(db, "db", a.shape)
    _no_overlap({"da": da, "db": db}, {"dout": dout, "a": a, "b": b})
    check(lib.odin_sigmoid_gate_backward(_fp(da), _fp(db), _fp(dout), _fp(a), _fp(b), a.size),
          "sigmoid_gate_backward")
    return da, db
