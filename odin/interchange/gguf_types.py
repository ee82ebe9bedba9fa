"""Which storage type each tensor of a GGUF file has, in both directions.

ODIN's quantized models (:class:`odin.model.WeightTypes`) hold their weight matrices in one
of llama.cpp's 32-weight block formats (q8_0, q4_0, q4_1, q5_0, q5_1: ggml's own type ids and
byte layout) and their token embedding, which is also the tied head, in its own type; vectors
(norms, biases) and the position table stay float32. A GGUF file stores each tensor with its
own ggml type, so:

* **export** writes ODIN's blocks as they are (the raw bytes, with the
  ``GGMLQuantizationType`` of the same id) and every float32 tensor as F32;
* **import** keeps blocks ODIN holds natively (:func:`import_plan`): the matrices when all of
  them share one such type, the embedding when it has one; F16 and types ODIN does not hold
  become float32 where ODIN's layout has a float32 tensor (vectors, the position table, an
  embedding), and are refused, naming the tensor and its type, where it does not (a matrix of
  a K-quant, matrices of several types).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from odin.blueprint import GPT_MATRICES
from odin.quant import DEFAULT_EMBED_TYPE, QUANT_TYPES, type_id, type_name

FLOAT_TYPES = ("f32", "f16")
EXPORT_TYPES = (*FLOAT_TYPES, *QUANT_TYPES)
BLOCK_IDS = frozenset(QUANT_TYPES.values())  # ggml type ids of the block formats ODIN computes with
F32_ID, F16_ID, BF16_ID = 0, 1, 30
FLOAT_IDS = frozenset((F32_ID, F16_ID, BF16_ID))  # float types: read as float32, exactly


def is_matrix(odin_name: str) -> bool:
    """A weight matrix of a GPT layer (``h.<i>.qkv_w`` ...): what WeightTypes.matrix stores."""
    return odin_name.startswith("h.") and odin_name.rsplit(".", 1)[-1] in GPT_MATRICES


def ggml_type(gguf: Any, name: str) -> Any:
    """The gguf package's GGMLQuantizationType for an ODIN type name ("f32", "q4_0"...)."""
    return gguf.GGMLQuantizationType(F16_ID if name == "f16" else type_id(name))


def file_type(gguf: Any, matrix: str, embed: str) -> Any:
    """general.file_type: llama.cpp's "mostly <type>" of the matrices (the embedding's type when
    the matrices are float32 and only it is quantized); ALL_F32 when nothing is converted."""
    kind = matrix if matrix != "f32" else embed
    names = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0",
             "q4_1": "MOSTLY_Q4_1", "q5_0": "MOSTLY_Q5_0", "q5_1": "MOSTLY_Q5_1"}
    return gguf.LlamaFileType[names[kind]]


# ------------------------------------------------------------------ import
@dataclass(frozen=True)
class TensorPlan:
    """How one GGUF tensor becomes an ODIN tensor: kept as blocks of ``keep`` (an ODIN type
    name), or read as float32 (``keep`` None; F32/F16 read, other types dequantized)."""

    keep: str | None


@dataclass(frozen=True)
class ImportPlan:
    matrix: str  # WeightTypes.matrix of the imported model
    embed: str   # WeightTypes.embed
    tensors: dict[str, TensorPlan]  # by ODIN name


class PlanError(ValueError):
    """A file whose tensor types ODIN cannot hold (the message names the tensor and type)."""


def type_label(gguf: Any, tensor_type: int) -> str:
    try:
        return gguf.GGMLQuantizationType(tensor_type).name
    except ValueError:
        return f"type {tensor_type}"


def can_dequantize(gguf: Any, tensor_type: int) -> bool:
    """Whether the gguf package can turn this type into float32 values."""
    if tensor_type in (F32_ID, F16_ID):
        return True
    try:
        kind = gguf.GGMLQuantizationType(tensor_type)
    except ValueError:
        return False
    from gguf.quants import _type_traits  # the types gguf-py has a dequantizer for

    return kind in _type_traits


def import_plan(gguf: Any, types: dict[str, tuple[str, int]]) -> ImportPlan:
    """``types``: ODIN name -> (GGUF tensor name, ggml type id) for every tensor of the model
    (the tied head is checked apart). Raises PlanError naming the first tensor ODIN cannot hold."""
    matrix = _matrix_type(gguf, types)
    embed_id = types["wte"][1]
    embed = type_name(embed_id) if embed_id in BLOCK_IDS else "f32"
    plans: dict[str, TensorPlan] = {}
    for name, (gguf_name, tensor_type) in types.items():
        if (is_matrix(name) and matrix != "f32") or (name == "wte" and embed != "f32"):
            plans[name] = TensorPlan(keep=type_name(tensor_type))
        elif can_dequantize(gguf, tensor_type):
            plans[name] = TensorPlan(keep=None)
        else:
            raise PlanError(f"tensor {gguf_name!r} is {type_label(gguf, tensor_type)}, which ODIN cannot read")
    return ImportPlan(matrix=matrix, embed=embed, tensors=plans)


def _matrix_type(gguf: Any, types: dict[str, tuple[str, int]]) -> str:
    """The one type every weight matrix has in ODIN: f32 when they are F32/F16/BF16, a block type
    when all share it; otherwise the first matrix that does not fit is refused."""
    first: tuple[str, int, int] | None = None  # GGUF name, ODIN kind, ggml type
    for name, (gguf_name, tensor_type) in types.items():
        if not is_matrix(name):
            continue
        if tensor_type not in BLOCK_IDS and tensor_type not in FLOAT_IDS:
            raise PlanError(f"tensor {gguf_name!r} is {type_label(gguf, tensor_type)}; ODIN holds weight matrices "
                            f"as F32, F16, BF16 (read as f32) or {', '.join(QUANT_TYPES).upper()}")
        kind = tensor_type if tensor_type in BLOCK_IDS else F32_ID
        if first is None:
            first = (gguf_name, kind, tensor_type)
        elif kind != first[1]:
            raise PlanError(f"tensor {gguf_name!r} is {type_label(gguf, tensor_type)} but {first[0]!r} is "
                            f"{type_label(gguf, first[2])}; ODIN holds every weight matrix in one type")
    return "f32" if first is None or first[1] == F32_ID else type_name(first[1])


def read_float(gguf: Any, tensor: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A reader tensor of any type gguf-py can read, as float32 in ``shape``."""
    if tensor.tensor_type == F32_ID:
        return np.array(tensor.data, dtype=np.float32).reshape(shape)
    if tensor.tensor_type == F16_ID:
        return np.asarray(tensor.data, dtype=np.float16).astype(np.float32).reshape(shape)
    return np.asarray(gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type),
                      dtype=np.float32).reshape(shape)


def read_blocks(tensor: Any, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """A reader tensor of a block type ODIN holds, as uint8 [rows, row_bytes] (a copy)."""
    from odin.quant import row_bytes

    rows, cols = shape
    data = np.asarray(tensor.data, dtype=np.uint8)
    expected = (rows, row_bytes(kind, cols))
    if data.size != expected[0] * expected[1]:
        raise PlanError(f"tensor {tensor.name!r} holds {data.size} bytes, a {kind} [{rows}, {cols}] needs "
                        f"{expected[0] * expected[1]}")
    return np.array(data.reshape(expected))


__all__ = ["BLOCK_IDS", "EXPORT_TYPES", "FLOAT_TYPES", "ImportPlan", "PlanError", "TensorPlan",
           "can_dequantize", "file_type", "ggml_type", "import_plan", "is_matrix",
           "read_blocks", "read_float", "type_label"]
