"""Quantized weights in the C core (csrc/quant.c, csrc/kernels/quant_body.h): the block
formats against gguf-py (the reference port of ggml's quantizer), the products on every
native ISA against float64, and quantized GPT / RWKV models against float models holding
the dequantized weights.

Two product paths (odin.h, odin_qmatmul):
* up to 8 rows the activations are quantized to 8 bits per 32 and the products are integer
  block dot products: checked against float64 of dequant(W) . dequant(q8(x)) to float32
  precision (the integer sums are exact; the error is the per-block scaling and the float
  sum order), and against the float input x within the activations' rounding;
* more rows, W is dequantized into the float GEMM: checked against float64 of dequant(W) . x.
"""
from __future__ import annotations

import numpy as np
import pytest

from odin import native
from odin.model import GPT, GPTShape, WeightTypes
from odin.quant import QUANT_TYPES, QuantError, dequantize, qmatmul, quantize, row_bytes
from odin.quant.convert import quantized_copy
from odin.rwkv import RWKV, RWKVShape

gguf_quants = pytest.importorskip("gguf.quants", reason="gguf (gguf-py, the `interchange` extra) is not installed")
from gguf import GGMLQuantizationType  # noqa: E402

TYPES = list(QUANT_TYPES)
ISAS = native.available_isas()


@pytest.fixture(autouse=True)
def _restore_isa():
    before = native.current_isa()
    yield
    native.set_isa(before)


def awkward_matrix(rng, rows: int, cols: int) -> np.ndarray:
    """Rows of very different scales, an all-zero block, a constant block, one huge outlier,
    values that round to fp16 subnormal scales."""
    x = rng.standard_normal((rows, cols)).astype(np.float32) * rng.uniform(0.01, 4.0, (rows, 1)).astype(np.float32)
    x[0, :32] = 0.0
    if rows > 1:
        x[1, :32] = 0.75
    if rows > 2:
        x[2, 5] = 300.0
    if rows > 3:
        x[3, :] *= np.float32(1e-6)
    return x


def gguf_type(name: str):
    return getattr(GGMLQuantizationType, name.upper())


# ---------------------------------------------------------------------------- formats
@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("rows,cols", [(1, 32), (7, 96), (33, 224)])
def test_blocks_are_byte_identical_to_gguf_py(rng, name, rows, cols):
    x = awkward_matrix(rng, rows, cols)
    ours = quantize(x, name)
    ref = np.asarray(gguf_quants.quantize(x, gguf_type(name))).view(np.uint8).reshape(rows, -1)
    assert ours.shape == (rows, row_bytes(name, cols))
    assert np.array_equal(ours, ref), f"{name}: {int((ours != ref).sum())} bytes differ from gguf-py"
    ours_back = dequantize(ours, name, cols)
    ref_back = np.asarray(gguf_quants.dequantize(ref, gguf_type(name)), dtype=np.float32).reshape(rows, cols)
    assert np.array_equal(ours_back, ref_back)
    # and close to the originals: half a step of the block's range (a whole step for the value
    # the "_0" 4/5-bit codes clip: -max on the side of the range with one code less), plus the
    # scale's fp16 rounding (2^-11 of a weight), for blocks whose scale is a normal fp16 number
    # (row 3's scale ~1e-8 is below fp16's range: its weights become 0)
    step = {"q8_0": 1 / 127, "q5_0": 1 / 16, "q5_1": 1 / 31, "q4_0": 1 / 8, "q4_1": 1 / 15}[name]
    amax = np.abs(x.reshape(rows, -1, 32)).max(axis=2, keepdims=True).astype(np.float64)
    span = amax * (2 if name.endswith("_1") else 1)
    err = np.abs(ours_back.astype(np.float64) - x).reshape(rows, -1, 32)
    steps = 1.0 if name in ("q4_0", "q5_0") else 0.5
    normal = (span * step >= 2.0**-14)
    assert (err <= span * step * steps + amax * 2.0**-10)[normal.repeat(32, axis=2)].all()


def test_every_fp16_scale_is_read_exactly():
    # q8_0 blocks whose scale is each of the 63488 finite fp16 values and q = 1: the
    # dequantized weight is the scale itself, exactly
    bits = np.arange(1 << 16, dtype=np.uint32)
    finite = bits[(bits & 0x7C00) != 0x7C00].astype(np.uint16)
    blocks = np.zeros((finite.size, 34), np.uint8)
    blocks[:, :2] = finite.view(np.uint8).reshape(-1, 2)
    blocks[:, 2] = 1
    got = dequantize(blocks, "q8_0", 32)[:, 0]
    assert np.array_equal(got, finite.view(np.float16).astype(np.float32))


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 3e-5, 1.0, 60000.0 * 127])
def test_scales_round_to_fp16_as_numpy_does(rng, scale):
    # the block scale amax / 127 crosses fp16's subnormal range, its normal range and overflow
    x = (rng.uniform(-1, 1, (64, 32)) * scale).astype(np.float32)
    ours = quantize(x, "q8_0")
    ref = np.asarray(gguf_quants.quantize(x, GGMLQuantizationType.Q8_0)).view(np.uint8).reshape(64, -1)
    assert np.array_equal(ours, ref)


# ---------------------------------------------------------------------------- products
def act_dequantized(x: np.ndarray) -> np.ndarray:
    """What the integer path multiplies by: x quantized to 8 bits per 32 as the C code does
    (float32 arithmetic, round half away from zero), back in float64."""
    xb = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    d = np.abs(xb).max(axis=2, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    v = (xb * inv).astype(np.float32)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(x.shape)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("M,K,N", [(1, 32, 1), (1, 96, 33), (7, 224, 7), (8, 64, 33), (9, 96, 7), (33, 224, 33)])
def test_qmatmul_matches_float64(rng, isa, name, M, K, N):  # `isa`: once per ISA (conftest.py)
    W = awkward_matrix(rng, N, K) * np.float32(0.1)
    q = quantize(W, name)
    Wd = dequantize(q, name, K).astype(np.float64)
    x = rng.standard_normal((M, K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    out = qmatmul(x, q, name, bias)
    integer_path = M <= 8
    ref = (act_dequantized(x) if integer_path else x.astype(np.float64)) @ Wd.T + bias
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() <= 2e-6 * scale, f"{isa} {name}: off float64 by {np.abs(out - ref).max() / scale:.2e}"
    if integer_path:  # 8-bit activations: each x off by at most half its block's step max|x| / 127
        exact = x.astype(np.float64) @ Wd.T + bias
        half_step = (np.abs(x.reshape(M, -1, 32)).max(axis=2, keepdims=True) / 254.0).repeat(32, axis=2).reshape(M, K)
        assert (np.abs(out - exact) <= half_step @ np.abs(Wd).T * 1.001 + 2e-6 * scale).all()


@pytest.mark.parametrize("name", TYPES)
def test_every_isa_gives_the_same_products_up_to_sum_order(rng, name):
    W = awkward_matrix(rng, 40, 256) * np.float32(0.1)
    q = quantize(W, name)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    outs = {}
    for isa in ISAS:
        native.set_isa(isa)
        outs[isa] = qmatmul(x, q, name)
    base = outs["scalar"]
    # relative to the size of the summed terms: the "_0" codes are summed unsigned and the
    # offset (8 or 16 steps) taken off at the end, so large terms cancel there
    magnitude = (np.abs(x) @ np.abs(dequantize(q, name, 256)).T).max()
    for isa, out in outs.items():
        assert np.abs(out - base).max() <= 4e-6 * magnitude, isa


def test_bad_input_is_one_clear_error(rng):
    with pytest.raises(QuantError, match="multiple of 32"):
        quantize(np.zeros((2, 48), np.float32), "q8_0")
    with pytest.raises(QuantError, match="unknown quantization type 'q3_k'"):
        quantize(np.zeros((2, 32), np.float32), "q3_k")
    x = np.zeros((3, 64), np.float32)
    x[2, 40] = np.nan
    with pytest.raises(native.NanError, match=r"x\[2, 40\] is NaN"):
        quantize(x, "q4_0")
    with pytest.raises(native.ShapeError, match="multiple of 32"):
        native.check(native.lib.odin_quantize(8, native.ffi.NULL, native.ffi.NULL, 1, 33), "quantize")
    with pytest.raises(native.ArgumentError, match="unknown quantization type 5"):
        native.check(native.lib.odin_quantize(5, native.ffi.NULL, native.ffi.NULL, 1, 32), "quantize")


# ---------------------------------------------------------------------------- models
def dequantized_twin(model, q):
    """A float model holding exactly q's dequantized weights."""
    twin = type(model)(model.shape)
    params = twin.named_params()
    for name, arr in q.named_params().items():
        params[name][...] = arr
    for name, (blocks, tname) in q.named_qtensors().items():
        params[name][...] = dequantize(blocks, tname, params[name].shape[1])
    return twin


def small_gpt() -> GPT:
    g = GPT(GPTShape(vocab_size=70, context=40, n_layer=2, n_head=2, d_model=64))
    g.init_weights(3)
    return g


def small_rwkv() -> RWKV:
    r = RWKV(RWKVShape(vocab_size=70, context=40, n_layer=2, d_model=64, d_ffn=96))
    r.init_weights(4)
    return r


@pytest.mark.parametrize("make", [small_gpt, small_rwkv], ids=["gpt", "rwkv"])
@pytest.mark.parametrize("weights", [WeightTypes("q8_0", "q8_0"), WeightTypes("q4_0", "f32"), WeightTypes("q5_1", "q4_1")],
                         ids=lambda w: w.describe())
def test_quantized_models_compute_with_their_dequantized_weights(rng, make, weights):
    model = make()
    q = quantized_copy(model, weights)
    twin = dequantized_twin(model, q)
    tokens = rng.integers(0, 70, (2, 20)).astype(np.int32)  # 40 rows: the dequantizing path
    q.forward(tokens)
    twin.forward(tokens)
    a, b = q.logits().copy(), twin.logits().copy()
    assert np.abs(a - b).max() <= 2e-5 * np.abs(b).max()
    # decoding (integer path, 8-bit activations) follows the same model within that rounding
    cache = q.new_cache(1)
    for t in range(12):
        step = cache.step([int(tokens[0, t])], [t]) if isinstance(q, GPT) else cache.step([int(tokens[0, t])])
    ref = b.reshape(2, 20, -1)[0, 11]
    assert np.abs(step - ref).max() <= 5e-2 * np.abs(ref).max()


@pytest.mark.parametrize("make", [small_gpt, small_rwkv], ids=["gpt", "rwkv"])
def test_quantized_decoding_is_bit_identical_for_any_thread_count(make):
    q = quantized_copy(make(), WeightTypes("q4_1", "q8_0"))
    runs = []
    for threads in (1, 2, 3):
        cache = q.new_cache(1, threads=threads)
        logits = [cache.step([t + 1], [t]) if isinstance(q, GPT) else cache.step([t + 1]) for t in range(6)]
        runs.append(np.stack(logits))
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_a_quantized_model_refuses_to_train():
    q = quantized_copy(small_gpt(), WeightTypes("q8_0", "q8_0"))
    with pytest.raises(native.ArgumentError, match=r"quantized \(q8_0\): it answers but cannot train"):
        q.grads
    with pytest.raises(QuantError, match="already quantized"):
        quantized_copy(q, WeightTypes("q4_0", "q8_0"))


def test_a_dimension_that_is_not_whole_blocks_is_refused():
    with pytest.raises(native.ShapeError, match=r"d_model \(48\) must be a multiple of 32 for q8_0"):
        GPT(GPTShape(vocab_size=10, context=8, n_layer=1, n_head=2, d_model=48), WeightTypes("q8_0", "q8_0"))
    with pytest.raises(native.ShapeError, match=r"d_ffn \(80\) must be a multiple of 32 for q4_0"):
        RWKV(RWKVShape(vocab_size=10, context=8, n_layer=1, d_model=64, d_ffn=80), WeightTypes("q4_0", "f32"))
