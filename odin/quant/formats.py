"""The block formats as numpy sees them: a quantized [rows, cols] matrix is a uint8 array
[rows, row_bytes(type, cols)], byte for byte what ggml (and a GGUF file) holds."""
from __future__ import annotations

from typing import Optional

import numpy as np

from odin.native import check, ffi, lib

# name -> ggml's type id (odin.h's odin_type)
QUANT_TYPES: dict[str, int] = {"q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7}
_NAMES = {v: k for k, v in QUANT_TYPES.items()} | {0: "f32"}
# The token embedding's type when a float32 model is quantized (odin quantize, the exports),
# whatever the matrices' type: it is also the tied output head, the most sensitive tensor.
DEFAULT_EMBED_TYPE = "q8_0"


class QuantError(ValueError):
    """A request the quantized formats cannot serve (unknown type, a row that is not whole blocks)."""


def type_id(name: str) -> int:
    key = str(name).strip().lower()
    if key not in QUANT_TYPES and key != "f32":
        raise QuantError(f"unknown quantization type {name!r}: expected one of {', '.join(QUANT_TYPES)}")
    return 0 if key == "f32" else QUANT_TYPES[key]


def type_name(type_: int) -> str:
    if type_ not in _NAMES:
        raise QuantError(f"unknown quantization type id {type_}")
    return _NAMES[type_]


def row_bytes(type_: int | str, cols: int) -> int:
    t = type_id(type_) if isinstance(type_, str) else int(type_)
    if t == 0:
        return 4 * int(cols)
    n = int(lib.odin_quant_row_bytes(t, int(cols)))
    if n == 0:
        raise QuantError(f"a row of {cols} weights cannot be cut into {type_name(t)} blocks of 32: "
                         f"its length must be a positive multiple of 32")
    return n


def quantize(x: np.ndarray, type_: int | str) -> np.ndarray:
    """float32 [rows, cols] -> uint8 [rows, row_bytes]."""
    t = type_id(type_) if isinstance(type_, str) else int(type_)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise QuantError(f"only matrices are quantized, got an array of shape {x.shape}")
    rows, cols = x.shape
    out = np.empty((rows, row_bytes(t, cols)), dtype=np.uint8)
    check(lib.odin_quantize(t, ffi.from_buffer("float[]", x), ffi.from_buffer("uint8_t[]", out), rows, cols),
          "quantize")
    return out


def dequantize(q: np.ndarray, type_: int | str, cols: int) -> np.ndarray:
    """uint8 [rows, row_bytes] -> float32 [rows, cols]."""
    t = type_id(type_) if isinstance(type_, str) else int(type_)
    q = np.ascontiguousarray(q, dtype=np.uint8)
    rb = row_bytes(t, cols)
    if q.ndim != 2 or q.shape[1] != rb:
        raise QuantError(f"a {type_name(t)} matrix of rows of {cols} weights is [rows, {rb}] bytes, got {q.shape}")
    out = np.empty((q.shape[0], cols), dtype=np.float32)
    check(lib.odin_dequantize(t, ffi.from_buffer("uint8_t[]", q), ffi.from_buffer("float[]", out), q.shape[0], cols),
          "dequantize")
    return out


def qmatmul(inp: np.ndarray, q: np.ndarray, type_: int | str, bias: Optional[np.ndarray] = None) -> np.ndarray:
    """inp [M, K] float32 times W^T, W [N, K] quantized as uint8 [N, row_bytes]: [M, N]."""
    t = type_id(type_) if isinstance(type_, str) else int(type_)
    inp = np.ascontiguousarray(inp, dtype=np.float32)
    M, K = inp.shape
    N = q.shape[0]
    q = np.ascontiguousarray(q)
    out = np.empty((M, N), dtype=np.float32)
    b = ffi.NULL if bias is None else ffi.from_buffer("float[]", np.ascontiguousarray(bias, dtype=np.float32))
    check(lib.odin_qmatmul(t, ffi.from_buffer("uint8_t[]", q), ffi.from_buffer("float[]", inp), b,
                           ffi.from_buffer("float[]", out), M, K, N), "qmatmul")
    return out
