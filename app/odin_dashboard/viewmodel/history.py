"""Bounded, down-sampled step history for the plots.

A run of 100k steps would give ImPlot 100k points per series (24 of them per-sphere) every
redraw. `DecimatingHistory` keeps at most `capacity` points per column: once full, each
adjacent pair of points merges into its mean and every later point covers twice as many
steps. Memory and drawing cost stay flat however long the run; the most recent, not yet
complete bucket is shown too, so the newest step appears immediately.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class DecimatingHistory:
    """Rows of float columns indexed by step, averaged into buckets of `stride` steps."""

    def __init__(self, columns: Sequence[str], capacity: int = 1024) -> None:
        if capacity < 4 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 4, got {capacity}")
        self.columns = tuple(columns)
        self._column_index = {name: i for i, name in enumerate(self.columns)}
        self.capacity = capacity
        self.stride = 1  # records averaged into one stored point
        self._steps = np.zeros(capacity, dtype=np.float64)
        self._values = np.zeros((capacity, len(self.columns)), dtype=np.float64)
        self._count = 0
        # the bucket being filled: sums and how many records are in it
        self._pending_step = 0.0
        self._pending_values = np.zeros(len(self.columns), dtype=np.float64)
        self._pending_count = 0
        self.last_step: float | None = None

    def __len__(self) -> int:
        """Points a plot would draw (stored points plus a partly filled bucket)."""
        return self._count + (1 if self._pending_count else 0)

    def clear(self) -> None:
        self.stride = 1
        self._count = 0
        self._pending_count = 0
        self._pending_step = 0.0
        self._pending_values[:] = 0.0
        self.last_step = None

    def append(self, step: float, values: Sequence[float]) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} values, got {len(values)}")
        self._pending_step += float(step)
        self._pending_values += np.asarray(values, dtype=np.float64)
        self._pending_count += 1
        self.last_step = float(step)
        if self._pending_count < self.stride:
            return
        if self._count == self.capacity:
            # merge pairs; the full bucket becomes the first half of a bucket twice as long,
            # so every stored point always averages the same number of records
            self._halve()
            return
        self._steps[self._count] = self._pending_step / self.stride
        self._values[self._count] = self._pending_values / self.stride
        self._count += 1
        self._pending_step = 0.0
        self._pending_values[:] = 0.0
        self._pending_count = 0

    def _halve(self) -> None:
        half = self.capacity // 2
        self._steps[:half] = 0.5 * (self._steps[0::2] + self._steps[1::2])
        self._values[:half] = 0.5 * (self._values[0::2] + self._values[1::2])
        self._count = half
        self.stride *= 2

    def series(self, column: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one column, ready for a line series."""
        index = self._column_index[column]
        steps = self._steps[: self._count].tolist()
        values = self._values[: self._count, index].tolist()
        if self._pending_count:
            steps.append(self._pending_step / self._pending_count)
            values.append(float(self._pending_values[index]) / self._pending_count)
        return steps, values
