"""Plot helpers with no GUI import: EMA smoothing, log-axis limits and ticks, and the
series values under the mouse.

ImPlot left to itself fits an empty log axis to 1 ... 1e-306 and labels only powers of
ten, so a loss between 0.3 and 0.9 got one labelled tick (or none). `log_axis` returns
limits that hold the data (sane ones when there is none) and at least three labelled
ticks: decades, else 1-2-5, else 1..9 per decade, else evenly spaced nice values.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

EMPTY_LOG_LIMITS = (0.1, 10.0)
MIN_TICKS = 3


@dataclass(frozen=True)
class AxisView:
    low: float
    high: float
    ticks: tuple[tuple[str, float], ...]  # (label, value), inside [low, high]


def ema(values: Sequence[float], smoothing: float) -> list[float]:
    """Exponential moving average with weight `smoothing` (0 = raw, 0.99 = very smooth) on
    the previous value, bias-corrected so the start is not pulled towards 0 (as
    TensorBoard's slider). Non-finite points stay non-finite and do not enter the average."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if smoothing == 0.0:
        return list(values)
    out: list[float] = []
    average, weight = 0.0, 0.0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        average = smoothing * average + (1.0 - smoothing) * value
        weight = smoothing * weight + (1.0 - smoothing)
        out.append(average / weight)
    return out


def _finite_positive(series: Iterable[Sequence[float]]) -> list[float]:
    return [v for values in series for v in values if math.isfinite(v) and v > 0]


def _label(value: float, digits: int) -> str:
    """`digits` significant digits; plain decimals between 0.001 and 99999, else 1e-05 style."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
        return f"{value:.{decimals}f}"
    return f"{value:.{max(0, digits - 1)}e}".replace("e-0", "e-").replace("e+0", "e")


def _labels(values: list[float]) -> tuple[tuple[str, float], ...]:
    """Labels with as many significant digits as it takes for neighbours to differ."""
    for digits in range(1, 8):
        labels = [_label(v, digits) for v in values]
        if len(set(labels)) == len(labels):
            return tuple(zip(labels, values))
    return tuple((repr(v), v) for v in values)


def _nice_step(span: float, count: int) -> float:
    raw = span / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    for mantissa in (1.0, 2.0, 5.0, 10.0):
        if mantissa * power >= raw:
            return mantissa * power
    return 10.0 * power


def log_axis(series: Iterable[Sequence[float]]) -> AxisView:
    """Limits and ticks for a log10 axis showing `series` (only finite positive values count)."""
    values = _finite_positive(series)
    if not values:
        low, high = EMPTY_LOG_LIMITS
    else:
        low, high = min(values), max(values)
        if high / low < 1.2:  # flat: give it room
            middle = math.sqrt(low * high)
            low, high = middle / 1.1, middle * 1.1
        pad = 0.04 * math.log10(high / low)
        low, high = low / 10 ** pad, high * 10 ** pad
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), tuple(float(m) for m in range(1, 10))):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in mantissas]
        inside = [t for t in ticks if low <= t <= high]
        if len(inside) >= MIN_TICKS:
            return AxisView(low, high, _labels(inside))
    for count in (4, 6, 10):  # a narrow range: evenly spaced nice values inside it
        step = _nice_step(high - low, count)
        first = math.ceil(low / step)
        inside = [float(f"{k * step:.12g}") for k in range(first, math.floor(high / step) + 1)]
        if len(inside) >= MIN_TICKS:
            break
    return AxisView(low, high, _labels(inside))


@dataclass(frozen=True)
class HoverRow:
    label: str
    value: float  # as drawn (smoothed)
    raw: float  # before smoothing


def nearest_index(xs: Sequence[float], x: float) -> int:
    """Index of the point of sorted `xs` nearest to `x` (xs must not be empty)."""
    i = bisect.bisect_left(xs, x)
    if i == 0:
        return 0
    if i == len(xs):
        return len(xs) - 1
    return i if xs[i] - x < x - xs[i - 1] else i - 1


def hover_text(series: Sequence[object], x: float, value_format: str = "{:.4g}") -> str:
    """What the tooltip over a plot says: the step nearest the mouse and each visible
    series' value there (and its raw value when smoothed), highest first."""
    rows: list[HoverRow] = []
    step = None
    for s in series:
        xs, ys = getattr(s, "x"), getattr(s, "y")
        raw = getattr(s, "raw", None) or ys
        if not getattr(s, "visible", True) or not xs:
            continue
        i = nearest_index(xs, x)
        if step is None:
            step = xs[i]
        rows.append(HoverRow(getattr(s, "label"), ys[i], raw[i]))
    if step is None:
        return ""
    rows.sort(key=lambda r: -r.value if math.isfinite(r.value) else math.inf)
    lines = [f"step {step:,.0f}"]
    for row in rows:
        text = f"{row.label:>4}  {value_format.format(row.value)}"
        if row.raw != row.value and math.isfinite(row.raw):
            text += f"  (raw {value_format.format(row.raw)})"
        lines.append(text)
    return "\n".join(lines)
