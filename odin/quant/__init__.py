"""Quantized weights: llama.cpp's 32-weight block formats (q8_0, q4_0, q4_1, q5_0, q5_1)
in the C core, and what is built on them (quantized checkpoints, `odin quantize`)."""
from odin.quant.formats import (  # noqa: F401
    DEFAULT_EMBED_TYPE, QUANT_TYPES, QuantError, dequantize, qmatmul, quantize, row_bytes, type_id, type_name,
)
