"""The 12-sphere ring around the root, as shapes and labels (no GUI import).

Each worker sphere is a circle on a ring around the root: its fill colour is its state
(idle / forward / backward / waiting / reducing), made brighter the busier it has been
(its *load*), and an arc around it sweeps 0..360 degrees with that load. Inside: its
micro-batch count. The root in the middle carries the step and the global loss. Spokes
light up while the root reduces the 12 gradient buffers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from odin_dashboard.viewmodel.formatting import distinct_counts, fmt_loss

RGBA = tuple[int, int, int, int]
Point = tuple[float, float]

STATE_ORDER: tuple[str, ...] = ("idle", "forward", "backward", "waiting", "reducing")
STATE_COLOURS: dict[str, RGBA] = {
    "idle": (112, 118, 134, 255),
    "forward": (66, 140, 245, 255),
    "backward": (245, 145, 50, 255),
    "waiting": (170, 110, 230, 255),
    "reducing": (70, 200, 120, 255),
}
BACKGROUND: RGBA = (30, 32, 38, 255)
# One colour per sphere, shared by the ring labels and the per-sphere plot series.
SPHERE_PALETTE: tuple[RGBA, ...] = (
    (230, 80, 80, 255), (245, 150, 60, 255), (235, 205, 70, 255), (160, 215, 80, 255),
    (70, 190, 110, 255), (60, 200, 190, 255), (80, 170, 240, 255), (90, 110, 235, 255),
    (150, 100, 235, 255), (210, 95, 220, 255), (240, 110, 160, 255), (190, 190, 190, 255),
)


def blend(base: RGBA, top: RGBA, amount: float) -> RGBA:
    """`amount` of `top` over `base` (0 = base, 1 = top)."""
    a = min(1.0, max(0.0, amount))
    return tuple(int(round(b + (t - b) * a)) for b, t in zip(base[:3], top[:3])) + (255,)  # type: ignore[return-value]


@dataclass(frozen=True)
class SphereNode:
    index: int
    name: str  # "s1".."s12"
    center: Point
    radius: float
    state: str
    fill: RGBA
    outline: RGBA  # the sphere's plot colour
    load: float  # 0..1: share of wall time it was busy, relative to its fair share
    load_arc: list[Point]  # polyline around the sphere, empty when load ~ 0
    label: str  # micro-batch count
    label_pos: Point  # top-left of the micro-batch label
    name_pos: Point  # where the sphere's name goes (outside the ring)
    rows: int


@dataclass(frozen=True)
class RootNode:
    center: Point
    radius: float
    state: str
    fill: RGBA
    lines: list[str]  # "root", "step 1234", "loss 0.123"


@dataclass(frozen=True)
class Spoke:
    start: Point
    end: Point
    colour: RGBA
    thickness: float


@dataclass(frozen=True)
class RingView:
    width: int
    height: int
    root: RootNode
    spheres: list[SphereNode]
    spokes: list[Spoke]
    legend: list[tuple[str, RGBA]]
    caption: str


class LoadMeter:
    """Per-sphere load from the growth of busy seconds between two snapshots.

    With N threads on 12 spheres a sphere can be busy at most N/12 of the wall time, so
    load = delta busy / (delta wall * N / 12), clipped to [0, 1] and smoothed, so a fully
    fed thread pool reads 1 and starved threads read low."""

    def __init__(self, n_spheres: int = 12, smoothing: float = 0.25, min_interval: float = 0.2) -> None:
        self.n = n_spheres
        self.smoothing = smoothing
        self.min_interval = min_interval  # shorter intervals are too noisy to use
        self.loads = [0.0] * n_spheres
        self._busy: Optional[list[float]] = None
        self._time = 0.0

    def reset(self) -> None:
        self.loads = [0.0] * self.n
        self._busy = None

    def update(self, busy_seconds: Sequence[float], threads: int, now: float) -> list[float]:
        busy = list(busy_seconds)
        if self._busy is None or any(b < p for b, p in zip(busy, self._busy)):  # first call or a new trainer
            self._busy, self._time = busy, now
            return self.loads
        elapsed = now - self._time
        if elapsed < self.min_interval:
            return self.loads
        fair = elapsed * max(1, min(threads, self.n)) / self.n
        for i, (b, p) in enumerate(zip(busy, self._busy)):
            sample = min(1.0, max(0.0, (b - p) / fair))
            self.loads[i] += self.smoothing * (sample - self.loads[i])
        self._busy, self._time = busy, now
        return self.loads


def arc_points(center: Point, radius: float, fraction: float, segments: int = 48) -> list[Point]:
    """A clockwise arc from 12 o'clock covering `fraction` of the circle."""
    fraction = min(1.0, max(0.0, fraction))
    if fraction <= 0.01:
        return []
    n = max(2, int(math.ceil(segments * fraction)) + 1)
    cx, cy = center
    return [(cx + radius * math.sin(2 * math.pi * fraction * k / (n - 1)),
             cy - radius * math.cos(2 * math.pi * fraction * k / (n - 1))) for k in range(n)]


def _text_offset(text: str, size: float) -> Point:
    """Approximate half-extent of a label, to centre it (proportional font ~0.55 em per char)."""
    return (0.3 * size * len(text), 0.5 * size)


def label_font_size(label: str, font_size: float) -> float:
    """Counts of 5+ characters are drawn smaller so they stay inside the sphere."""
    return font_size if len(label) <= 4 else font_size - 2


def build_ring(width: int, height: int, spheres: Sequence[object] | None, loads: Sequence[float],
               *, root_state: str = "idle", step: int = 0, total_steps: int = 0, loss: float = float("nan"),
               font_size: float = 15.0, caption: str = "") -> RingView:
    """Lay out the ring in a width x height canvas from a snapshot's spheres (or none yet)."""
    legend_height = 2.2 * font_size
    cx, cy = width / 2.0, (height - legend_height) / 2.0
    extent = min(width, height - legend_height) / 2.0
    sphere_r = extent * 0.15
    ring_r = extent - sphere_r - 1.3 * font_size  # room for the names outside
    root_r = ring_r - sphere_r - 0.35 * sphere_r
    root_fill = blend(BACKGROUND, STATE_COLOURS.get(root_state, STATE_COLOURS["idle"]), 0.75)
    step_text = f"step {step:,}" + (f" / {total_steps:,}" if total_steps else "")
    root = RootNode((cx, cy), root_r, root_state, root_fill, ["root", step_text, f"loss {fmt_loss(loss)}"])

    nodes: list[SphereNode] = []
    spokes: list[Spoke] = []
    counts = [getattr(spheres[i], "microbatches", 0) if spheres is not None and i < len(spheres) else None
              for i in range(12)]
    # one formatting for all 12, so that different counts read differently
    labels = distinct_counts([c for c in counts if c is not None]) if any(c is not None for c in counts) else []
    label_of = iter(labels)
    for i in range(12):
        angle = 2 * math.pi * i / 12  # sphere 1 at 12 o'clock, clockwise
        sx, sy = cx + ring_r * math.sin(angle), cy - ring_r * math.cos(angle)
        stats = spheres[i] if spheres is not None and i < len(spheres) else None
        state = getattr(stats, "state", "idle") if stats is not None else "idle"
        load = float(loads[i]) if i < len(loads) else 0.0
        fill = blend(BACKGROUND, STATE_COLOURS.get(state, STATE_COLOURS["idle"]), 0.45 + 0.55 * load)
        label = next(label_of) if counts[i] is not None else "-"
        dx, dy = _text_offset(label, label_font_size(label, font_size))
        name = f"s{i + 1}"
        name_r = ring_r + sphere_r + 0.9 * font_size
        ndx, ndy = _text_offset(name, font_size * 0.9)
        nodes.append(SphereNode(
            index=i, name=name, center=(sx, sy), radius=sphere_r, state=state, fill=fill,
            outline=SPHERE_PALETTE[i], load=load, load_arc=arc_points((sx, sy), sphere_r + 4, load),
            label=label, label_pos=(sx - dx, sy - dy),
            name_pos=(cx + name_r * math.sin(angle) - ndx, cy - name_r * math.cos(angle) - ndy),
            rows=getattr(stats, "rows", 0) if stats is not None else 0,
        ))
        reducing = state == "reducing" or root_state == "reducing"
        inner = (cx + root_r * math.sin(angle), cy - root_r * math.cos(angle))
        outer = (cx + (ring_r - sphere_r) * math.sin(angle), cy - (ring_r - sphere_r) * math.cos(angle))
        spokes.append(Spoke(inner, outer, STATE_COLOURS["reducing"] if reducing else (70, 74, 84, 255),
                            3.0 if reducing else 1.5))
    legend = [(name, STATE_COLOURS[name]) for name in STATE_ORDER]
    return RingView(width, height, root, nodes, spokes, legend, caption)
