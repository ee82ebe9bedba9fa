"""Number formatting shared by the panels (plain functions, unit-tested)."""
from __future__ import annotations

import math

from odin.blueprint import format_bytes


def compact_count(n: float) -> str:
    """1234 -> '1.2k', 5_600_000 -> '5.6M'; short enough for a sphere's label."""
    n = float(n)
    if not math.isfinite(n):
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            value = n / limit
            return f"{value:.0f}{suffix}" if abs(value) >= 100 else f"{value:.1f}{suffix}"
    return f"{n:.0f}"


def fmt_loss(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "-"


def fmt_duration(seconds: float) -> str:
    """ETA / elapsed: '42 s', '03:05', '1h07'."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60:02d}:{s % 60:02d}"
    return f"{s // 3600}h{s % 3600 // 60:02d}"


def fmt_step_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds <= 0:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_rate(tokens_per_s: float) -> str:
    if not math.isfinite(tokens_per_s) or tokens_per_s <= 0:
        return "-"
    return f"{compact_count(tokens_per_s)} tok/s"


def fmt_bytes(n: float) -> str:
    return format_bytes(n, digits=1)


def fmt_percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %" if math.isfinite(fraction) else "-"


def distinct_counts(counts: list[float], max_chars: int = 6) -> list[str]:
    """Labels for counts shown side by side (the spheres' micro-batches): exact while they
    fit in `max_chars` ('2431', '2436'), else compact with as many digits as it takes for
    different counts to read differently ('12.431M', '12.436M'): rounding them all to '2.4k'
    hid exactly the differences the ring is there to show."""
    values = [float(c) for c in counts]
    exact = [f"{v:.0f}" if math.isfinite(v) else "-" for v in values]
    if all(len(text) <= max_chars for text in exact):
        return exact
    for decimals in range(1, 7):
        labels = [_compact(v, decimals) for v in values]
        if len(set(labels)) == len(set(exact)):
            return labels
    return exact


def _compact(n: float, decimals: int) -> str:
    if not math.isfinite(n):
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.{decimals}f}{suffix}"
    return f"{n:.0f}"
