"""Checks of the arrays a caller hands to the models and trainers, before they become the
int32 / uint8 buffers the C core reads: a conversion that wraps (int64 2**32 + 1 -> 1),
truncates (1.7 -> 1) or squashes (a mask of 256 -> 0) would give silently wrong results,
so each is an exception naming the argument instead.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional

import numpy as np

from odin.native import ArgumentError, DTypeError, ShapeError

_INT32 = np.iinfo(np.int32)


def _as_array(x: object, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise DTypeError(f"{name} must be an integer array, got {type(x).__name__} ({exc})") from None


def token_ids(x: object, name: str, vocab_size: Optional[int], *, ndim: Optional[int] = None,
              shape: Optional[tuple[int, ...]] = None, counted: Optional[np.ndarray] = None) -> np.ndarray:
    """`x` as a C-contiguous int32 array: an integer dtype (bool and floats refused), every id in
    [0, vocab_size) where `counted` (a mask of the same shape) is set or everywhere without one,
    and every id representable in int32 in any case. vocab_size None: the int32 check only."""
    if counted is None and _short_int_list(x):
        return _short_ids(x, name, vocab_size, ndim, shape)
    arr = _as_array(x, name)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"{name} must be an integer array (token ids), got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ShapeError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < _INT32.min or high > _INT32.max:
            bad = arr.flat[int(np.argmin(arr)) if low < _INT32.min else int(np.argmax(arr))]
            raise ArgumentError(f"{name} holds {int(bad)}, which is not a token id (int32 range)")
        if vocab_size is not None:
            inside = (arr >= 0) & (arr < vocab_size)
            if counted is not None:
                inside |= counted == 0
            if not inside.all():
                flat = int(np.argmin(inside.ravel()))  # a flat index, as the C side reports it
                raise ArgumentError(f"{name}[{flat}] = {int(arr.flat[flat])} is outside "
                                    f"the vocabulary [0, {vocab_size})")
    return np.ascontiguousarray(arr, dtype=np.int32)


# Generation feeds one token per sequence and step: checking a few Python ints in Python costs
# a microsecond, the numpy round trip above ~15 (more than a small model's whole decode step).
_SHORT = 64


def _short_int_list(x: object) -> bool:
    return type(x) in (list, tuple) and len(x) <= _SHORT and all(type(v) is int for v in x)


def ids_into(dst: np.ndarray, values: object, name: str, vocab_size: Optional[int],
             length: Optional[int] = None) -> None:
    """dst[:n] = the 1-D ids `values` (of length `length` when given), checked as token_ids
    checks them; a short list of Python ints goes straight in (the per-token path of
    generation, where a numpy round trip costs more than a small model's step)."""
    shape = None if length is None else (length,)
    if _short_int_list(values):
        _check_short_ids(values, name, vocab_size, 1, shape)
        dst[:len(values)] = values
        return
    arr = token_ids(values, name, vocab_size, ndim=None if shape else 1, shape=shape)
    dst[:len(arr)] = arr


def _short_ids(values: list[int] | tuple[int, ...], name: str, vocab_size: Optional[int], ndim: Optional[int],
               shape: Optional[tuple[int, ...]]) -> np.ndarray:
    """token_ids for a short list of Python ints: the same checks and messages."""
    _check_short_ids(values, name, vocab_size, ndim, shape)
    return np.array(values, dtype=np.int32)


def _check_short_ids(values: list[int] | tuple[int, ...], name: str, vocab_size: Optional[int],
                     ndim: Optional[int], shape: Optional[tuple[int, ...]]) -> None:
    if ndim is not None and ndim != 1:
        raise ShapeError(f"{name} must be {ndim}-D, got shape {(len(values),)}")
    if shape is not None and (len(values),) != tuple(shape):
        raise ShapeError(f"{name} must have shape {tuple(shape)}, got {(len(values),)}")
    for value in values:
        if not _INT32.min <= value <= _INT32.max:
            raise ArgumentError(f"{name} holds {value}, which is not a token id (int32 range)")
    if vocab_size is not None:
        for flat, value in enumerate(values):
            if not 0 <= value < vocab_size:
                raise ArgumentError(f"{name}[{flat}] = {value} is outside the vocabulary [0, {vocab_size})")


def loss_mask(x: object, name: str, shape: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """`x` as a C-contiguous uint8 array of 0s and 1s: bool, or an integer dtype holding only 0
    and 1 (a float mask, or a 2 or 256 that uint8 would keep or wrap to 0, is refused)."""
    arr = _as_array(x, name)
    if arr.dtype.kind not in "biu":
        raise DTypeError(f"{name} must be a bool or integer array of 0/1, got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ShapeError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype.kind != "b" and arr.size:
        valid = (arr == 0) | (arr == 1)
        if not valid.all():
            flat = int(np.argmin(valid.ravel()))
            raise ArgumentError(f"{name}[{flat}] = {int(arr.flat[flat])}: a loss mask holds only 0 or 1")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def int_field(value: object, name: str, low: int, high: int = int(_INT32.max)) -> int:
    """An integer size or id of a model shape (bool refused) in [low, high] (a ShapeError, as
    the C side's for a size <= 0; high defaults to what a C int holds)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ShapeError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ShapeError(f"{name} must be in [{low}, {high}], got {int(value)}")
    return int(value)


def positive_float(value: object, name: str) -> float:
    """A float hyper-parameter that must be finite and > 0 (ln_eps, ...)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)) \
            or float(value) <= 0.0:
        raise ArgumentError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
