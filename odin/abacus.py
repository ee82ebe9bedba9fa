"""Abacus-style digit-position ids (McLeish et al., 2024) for length generalisation.

A learned position embedding indexed by a digit's place *within its number* lets the
model line up digits of equal significance however long the numbers are, which absolute
positions cannot. ODIN's arithmetic prompts write operands most-significant digit first
(`123+45=`) and, in the recipes that use Abacus, answers least-significant first (`861`).
So a digit's id is its significance, counted from 1:

  * before the first separator (`=`), each digit run is counted from its right end
    (`123` -> 3 2 1), so the operands' units digits share id 1;
  * after it, each run is counted from its left end (the reversed answer `861` -> 1 2 3),
    which is also what the C decoder does for generated digits;
  * every other token has id 0.

With ``next_place=True`` (``[model].abacus_answer = "next"``) every answer token carries the
place of the digit it *predicts* instead of its own: the separator gets id 1 and the answer
digit run right after it counts from 2 (``123+45=861`` -> separator 1, answer 2 3 4). The
token that predicts a place then carries the same id as the operand digits it must add, so
finding them is matching equal ids rather than learning "id + 1" for every place: the
position coupling of Cho et al. (2024). Digit runs after any other answer token still count
from 1, as the C decoder continues them.

During training every non-zero id of a sequence is shifted by one random offset in
[0, max_offset], so the embeddings of high places get trained on short numbers too; at
inference the offset is 0. Without that, an 8-digit answer would use ids never seen.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def abacus_ids(tokens: np.ndarray, digit_first: int, sep_id: int, n_abacus: int,
               offsets: Optional[np.ndarray] = None, next_place: bool = False) -> np.ndarray:
    """ids[B, T] (int32) for token ids[B, T]; offsets[B] shift the digit ids (default 0)."""
    tokens = np.asarray(tokens)
    squeeze = tokens.ndim == 1
    rows = np.atleast_2d(tokens)
    B, T = rows.shape
    is_digit = (rows >= digit_first) & (rows < digit_first + 10)
    ids = np.zeros((B, T), np.int32)
    for b in range(B):
        seps = np.flatnonzero(rows[b] == sep_id)
        split = seps[0] if len(seps) else T
        d = is_digit[b]
        # run boundaries: starts where a digit follows a non-digit, ends where it stops
        padded = np.concatenate(([False], d, [False]))
        starts = np.flatnonzero(~padded[:-1] & padded[1:])
        ends = np.flatnonzero(padded[:-1] & ~padded[1:])
        coupled = next_place and split < T
        if coupled:
            ids[b, split] = 1
        for s, e in zip(starts, ends):
            idx = np.arange(s, e)
            first = 2 if coupled and s == split + 1 else 1
            ids[b, s:e] = (e - idx) if s < split else (idx - s + first)
    if offsets is not None:
        ids = np.where(ids > 0, ids + np.asarray(offsets, np.int32)[:, None], 0)
    if ids.max(initial=0) >= n_abacus:
        raise ValueError(f"a number has more places ({int(ids.max())}) than the model's Abacus table "
                         f"(n_abacus = {n_abacus}); raise [model].abacus or shorten the numbers")
    return ids[0] if squeeze else ids


def training_offsets(rng: np.random.Generator, batch: int, max_offset: int) -> np.ndarray:
    return rng.integers(0, max_offset + 1, size=batch).astype(np.int32)


def longest_digit_run(tokens: np.ndarray, digit_first: int) -> int:
    """Length of the longest run of digit tokens in a flat token array (= the largest id
    abacus_ids gives without offset)."""
    d = ((tokens >= digit_first) & (tokens < digit_first + 10)).astype(np.int64)
    if not d.any():
        return 0
    # run length at i = i - (index of the last non-digit before i)
    idx = np.arange(len(d))
    last_break = np.maximum.accumulate(np.where(d == 0, idx, -1))
    return int((idx - last_break)[d == 1].max())
