"""Random calls into ODIN's C core through its Python API (kernels, GPT/RWKV build, forward,
backward, AdamW, greedy generation, the KV cache, the sampler, the spheres trainer) with huge,
negative and zero sizes, wrong dtypes, NaN/Inf, non-contiguous and read-only arrays and
aliasing. Usage: python fuzz_core.py SEED N_CALLS LOG. Each call is logged to LOG before it
runs, so a crash names its call; the last line printed is the JSON of the outcome counts and
the first unexpected exceptions. tests/test_fuzz_core.py runs it in a subprocess."""
import collections
import inspect
import json
import random
import sys

import numpy as np
from odin import kernels
from odin.errors import OdinError
from odin.model import GPT, GPTShape, Sampler
from odin.rwkv import RWKV, RWKVShape
from odin.spheres import SpheresTrainer

seed, n_calls, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
nrng = np.random.default_rng(seed)
INTS = [0, 1, 2, 3, 4, 7, 8, 16, -1, -5, 2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**63 - 1, -2**31]
FLOATS = [0.0, 1e-5, 0.5, 1.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e30, 1e-45]
DTYPES = [np.float32, np.float32, np.float32, np.int32, np.int64, np.float64, np.uint8, np.float16, np.bool_]

def rand_dim():
    return rng.choice([0, 1, 1, 2, 3, 4, 5, 8, 16])

def rand_array(ndim=None):
    ndim = rng.choice([0, 1, 2, 2, 3, 3, 4]) if ndim is None else ndim
    shape = tuple(rand_dim() for _ in range(ndim))
    dt = rng.choice(DTYPES)
    if np.issubdtype(dt, np.floating):
        a = nrng.standard_normal(shape).astype(dt)
        if rng.random() < 0.1 and a.size:
            a.flat[0] = rng.choice([np.nan, np.inf])
    elif dt == np.bool_:
        a = nrng.integers(0, 2, shape).astype(dt)
    else:
        a = nrng.integers(-3, 300, shape).astype(dt)
    r = rng.random()
    if r < 0.05 and a.ndim >= 1 and a.shape[0] > 1:
        a = a[::2]                          # non-contiguous
    elif r < 0.08:
        a.flags.writeable = False
    return a

def rand_arg(pool):
    r = rng.random()
    if r < 0.5 and pool:
        return rng.choice(pool)             # reuse: same shapes and aliasing
    if r < 0.8:
        return rand_array()
    if r < 0.88:
        return rng.choice(INTS)
    if r < 0.95:
        return rng.choice(FLOATS)
    return rng.choice([None, "x", [1, 2], True])

def kernel_call():
    name, fn = rng.choice(KERNELS)
    sig = inspect.signature(fn)
    pool = [rand_array() for _ in range(3)]
    # a coherent float32 family sometimes, so calls get past the first check
    m, k = rng.choice([1, 2, 3, 4, 8]), rng.choice([1, 2, 4, 8, 12])
    pool += [nrng.standard_normal((m, k)).astype(np.float32), nrng.standard_normal((k, k)).astype(np.float32),
             nrng.standard_normal((k,)).astype(np.float32), nrng.standard_normal((1, m, k)).astype(np.float32),
             nrng.integers(0, k, (1, m)).astype(np.int32)]
    args, kw = [], {}
    for p in sig.parameters.values():
        if p.kind == p.KEYWORD_ONLY:
            if p.default is p.empty or rng.random() < 0.5:
                kw[p.name] = rng.choice(FLOATS + INTS) if rng.random() < 0.7 else rand_arg(pool)
        elif p.default is p.empty or rng.random() < 0.4:
            if p.default is not p.empty and p.name in ("out", "dinp", "dx"):
                args.append(rng.choice(pool))   # aliasing tries
            elif p.name in ("n_head", "eps", "max_norm"):
                args.append(rng.choice(INTS + FLOATS))
            else:
                args.append(rand_arg(pool))
        else:
            break
    return f"kernels.{name}", lambda: fn(*args, **kw)

def shape_ints():
    return [rng.choice([1, 2, 4, 8, 16, 0, -1, 357913942, 2**31, 64]) if rng.random() < 0.2
            else rng.choice([1, 2, 4, 8, 16]) for _ in range(4)]

MODELS = []
def model_call():
    r = rng.random()
    if r < 0.25 or not MODELS:
        v, c, l, d = shape_ints()
        # a shape whose weights fit size_t but not this machine is an OOM kill, not a defect:
        # keep the big values only where the C side must refuse them (size_t overflow or <= 0)
        est = (v * 4 + c) * d * 2 + l * 16 * (d * 2) ** 2
        if 2e8 < est < 2**62 // 16 and min(v, c, l, d) > 0:
            c, l = min(c, 64), min(l, 4)
        if rng.random() < 0.5:
            h = rng.choice([1, 2, 4, 3, 0, -2, 2**31])
            eps = rng.choice(FLOATS) if rng.random() < 0.2 else 1e-5
            def make():
                m = GPT(GPTShape(vocab_size=v * 4, context=c, n_layer=l, n_head=h, d_model=d * 2, ln_eps=eps))
                m.init_weights(rng.randrange(1000)); MODELS.append(m); MODELS[:] = MODELS[-4:]
            return f"GPT({v*4},{c},{l},{h},{d*2},{eps})", make
        def make():
            m = RWKV(RWKVShape(vocab_size=v * 4, context=c, n_layer=l, d_model=d * 2, d_ffn=rng.choice([0, 0, 3, -1])))
            m.init_weights(rng.randrange(1000)); MODELS.append(m); MODELS[:] = MODELS[-4:]
        return f"RWKV({v*4},{c},{l},{d*2})", make
    m = rng.choice(MODELS)
    V, C = m.shape.vocab_size, m.shape.context
    B, T = rng.choice([1, 2, 3, 0]), rng.choice([1, 2, C, C + 1, 0])
    def toks(dt=np.int32):
        t = nrng.integers(0, V, (B, T))
        if rng.random() < 0.15 and t.size:
            t.flat[0] = rng.choice([V, -1, 2**32 + 1, 2**31])
        return t.astype(rng.choice([dt, dt, np.int64, np.float32, np.uint8]))
    which = rng.random()
    if which < 0.35:
        tg = toks() if rng.random() < 0.7 else None
        mask = None
        if rng.random() < 0.4:
            mask = nrng.integers(0, 2, (B, T)).astype(rng.choice([np.uint8, np.float32, np.int64, np.bool_]))
            if mask.size and rng.random() < 0.3:
                mask = mask.astype(np.float64); mask.flat[0] = rng.choice([256, 0.5, np.nan])
        tk = toks()
        def fw():
            m.forward(tk, tg, mask)
            if tg is not None and rng.random() < 0.5:
                m.zero_grad(); m.backward(rng.choice([1.0, 1.0, float("nan")]))
                m.adamw_step(lr=rng.choice([1e-3, float("nan"), -1.0, 1e30]), step=rng.choice([1, 0, -1, 2**40]))
        return f"{type(m).__name__}.forward B={B} T={T}", fw
    if which < 0.55:
        prompts = [[int(x) for x in nrng.integers(0, V, rng.choice([0, 1, 3]))] + ([rng.choice([V, -1])] if rng.random() < 0.1 else [])
                   for _ in range(rng.choice([0, 1, 2]))]
        mx = rng.choice([0, 1, 5, -1, 2**31 - 1, 2**40])
        # a legal but huge max_new (2**31 - 1) is a long generation, not a defect: only sizes
        # past a C int stay huge (they must be refused)
        new = mx if mx > 2**31 - 1 else min(mx, 50)
        return f"generate_greedy {prompts} {new}", lambda: m.generate_greedy(prompts, new, rng.choice([0, V, -1]))
    if which < 0.7:
        b = rng.choice([1, 2, 0, -1])
        pos = rng.choice([0, 1, C - 1, C, -1, 2**31])
        tk = rng.choice([0, 1, V - 1, V, -1, 2**40])
        def st():
            cache = m.new_cache(b)
            cache.step([tk] * max(b, 1), [pos] * max(b, 1))
        return f"cache.step b={b} tok={tk} pos={pos}", st
    if which < 0.85:
        t, k, p = rng.choice(FLOATS + [0.7]), rng.choice([0, 1, 5, -1, 2**31, 2**63]), rng.choice(FLOATS + [0.9])
        logits = nrng.standard_normal(rng.choice([V, 0, 1])).astype(rng.choice([np.float32, np.float32, np.float64, np.int32]))
        if logits.size and rng.random() < 0.3:
            logits[rng.randrange(logits.size)] = rng.choice([np.nan, np.inf, -np.inf]) if logits.dtype.kind == "f" else 0
        return f"Sampler({t},{k},{p})", lambda: Sampler(t, k, p, rng.randrange(10))(logits)
    batch, seq = rng.choice([1, 2, 0, -1, 2**31]), rng.choice([1, 2, C, C + 1, 0])
    th = rng.choice([1, 2, 0, -1, 1000, 2**31])
    def sp():
        tr = SpheresTrainer(m, batch, seq, threads=th)
        tr.configure(lr=rng.choice([1e-3, float("nan")]), min_lr=1e-4, warmup_steps=rng.choice([0, 1, -1]),
                     total_steps=rng.choice([2, 0, -1, 2**40]))
        n = rng.choice([1, 50, seq * batch + 1 if seq > 0 and batch > 0 and batch < 100 else 5])
        t = nrng.integers(0, V, n)
        if rng.random() < 0.2: t[0] = rng.choice([V, -1, 2**32 + 1])
        t = t.astype(rng.choice([np.int32, np.int64, np.float32]))
        mask = None if rng.random() < 0.6 else nrng.integers(0, 2, n).astype(rng.choice([np.uint8, np.float64]))
        tr.run(t, mask, steps=rng.choice([1, 2, 0, -1]))
    return f"Spheres b={batch} s={seq} th={th}", sp

KERNELS = [(n, f) for n, f in inspect.getmembers(kernels, inspect.isfunction)
           if not n.startswith("_") and f.__module__ == kernels.__name__]
out = collections.Counter()
bad = []
with open(log, "w") as lf:
    for i in range(n_calls):
        try:
            desc, thunk = kernel_call() if rng.random() < 0.6 else model_call()
        except OdinError:
            out["error at build"] += 1; continue
        lf.write(f"{i} {desc}\n"); lf.flush()
        try:
            thunk(); out["ok"] += 1
        except OdinError as e:
            out["OdinError"] += 1
        except TypeError as e:
            if "argument" in str(e) and ("positional" in str(e) or "keyword" in str(e) or "missing" in str(e)):
                out["python arity"] += 1
            else:
                out["other:TypeError"] += 1; bad.append((desc, repr(e)))
        except Exception as e:
            out["other:" + type(e).__name__] += 1; bad.append((desc, repr(e)[:300]))
print(json.dumps({"outcomes": dict(out), "unexpected": bad[:15]}))
