"""The dashboard's view-model: trainer snapshots, step history, evaluation records and
session state in; plain data out (ring shapes, plot series, metric texts, which controls
are enabled, the status line). The Dear PyGui layer only draws what this returns.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from odin_dashboard.viewmodel.formatting import (
    fmt_duration, fmt_loss, fmt_percent, fmt_rate, fmt_step_time,
)
from odin_dashboard.viewmodel.history import DecimatingHistory
from odin_dashboard.viewmodel.plotaxes import AxisView, ema, hover_text, log_axis
from odin_dashboard.viewmodel.ring import LoadMeter, RingView, build_ring

N_SPHERES = 12
SPHERE_LOSS = tuple(f"loss_s{i + 1}" for i in range(N_SPHERES))
SPHERE_GRAD = tuple(f"grad_s{i + 1}" for i in range(N_SPHERES))
HISTORY_COLUMNS = ("loss", "grad_norm", "lr", "tokens_per_s") + SPHERE_LOSS + SPHERE_GRAD


@dataclass(frozen=True)
class Series:
    label: str
    x: list[float]
    y: list[float]  # as drawn (smoothed for the per-sphere plots)
    visible: bool = True
    raw: list[float] = field(default_factory=list)  # before smoothing (empty: same as y)


@dataclass(frozen=True)
class PlotsView:
    sphere_loss: list[Series]
    sphere_grad: list[Series]
    train_loss: Series
    val_loss: Series
    steps_per_point: int
    version: int  # changes whenever any series changed
    grad_axis: AxisView  # the per-sphere gradient norm plot is always log-scale
    loss_log_axis: AxisView  # used when the loss plots are switched to log scale
    global_log_axis: AxisView


@dataclass(frozen=True)
class MetricsView:
    rows: list[tuple[str, str]]  # (label, value) in display order
    progress: float  # 0..1 of the run's steps
    progress_text: str


@dataclass(frozen=True)
class ControlsView:
    start_enabled: bool
    start_label: str
    pause_enabled: bool
    resume_enabled: bool
    stop_enabled: bool
    settings_enabled: bool  # dataset, run folder, checkpoint field: fixed while a run is active
    schedule_enabled: bool  # preset, lr, batch, steps, eval: also fixed when continuing a run (its own)
    save_enabled: bool
    load_enabled: bool
    continue_enabled: bool  # the "continue it" box: only with a loaded checkpoint
    build_dataset_visible: bool
    chat_enabled: bool
    status: str
    status_level: str  # "info" | "busy" | "warn" | "error"


@dataclass(frozen=True)
class SessionState:
    """What the controls depend on, gathered by the app from session, form and chat."""

    phase: str  # odin_dashboard.session.Phase value
    active: bool
    paused: bool  # the C trainer is waiting in pause
    pause_requested: bool
    stop_requested: bool
    step: int = 0
    error: Optional[str] = None
    form_problems: Sequence[str] = ()
    dataset_can_build: bool = False
    building_dataset: bool = False
    resume_from_step: Optional[int] = None  # the form continues a checkpoint at this step
    has_loaded_checkpoint: bool = False
    can_continue_loaded: bool = False  # the loaded checkpoint can be trained on here (not a BPE/finished one)
    has_model: bool = False
    can_save_idle: bool = False  # a loaded checkpoint could be written to the run folder
    chat_busy: bool = False
    final_exact: Optional[float] = None
    checkpoint_text: str = ""
    message: str = ""  # the latest action's outcome (e.g. "checkpoint saved at step 500")
    message_level: str = "info"


class RateEstimator:
    """Steps per second over a sliding window of wall time (for the ETA)."""

    def __init__(self, window: float = 20.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, now: float, step: int) -> None:
        if self._samples and step < self._samples[-1][1]:
            self._samples.clear()  # a new run
        self._samples.append((now, step))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    def steps_per_second(self) -> float:
        if len(self._samples) < 2:
            return float("nan")
        (t0, s0), (t1, s1) = self._samples[0], self._samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else float("nan")


class DashboardViewModel:
    def __init__(self, ring_size: tuple[int, int] = (420, 440), plot_capacity: int = 1024) -> None:
        self.ring_size = ring_size
        self.history = DecimatingHistory(HISTORY_COLUMNS, plot_capacity)
        self.val_points: list[tuple[int, float, float]] = []  # (step, val loss, val exact)
        self.loads = LoadMeter(N_SPHERES)
        self.rate = RateEstimator()
        self.shown_sphere: Optional[int] = None  # None: all 12; else 0..11
        self.smoothing = 0.0  # EMA weight for the per-sphere plots (0: raw)
        self.final_test: Optional[tuple[int, float]] = None  # (step, exact) from metrics.jsonl
        self._version = 0

    # ------------------------------------------------------------------ inputs
    def reset_run(self) -> None:
        self.history.clear()
        self.val_points.clear()
        self.loads.reset()
        self.rate.reset()
        self.final_test = None
        self._version += 1

    def ingest_records(self, records: Iterable[Any]) -> int:
        """Add odin.spheres.StepRecord-like records; returns how many were added."""
        added = 0
        for record in records:
            if self.history.last_step is not None and record.step <= self.history.last_step:
                continue  # already seen (a poll that overlapped)
            self.history.append(record.step, [record.loss, record.grad_norm, record.lr, record.tokens_per_s,
                                              *record.sphere_loss, *record.sphere_grad_norm])
            added += 1
        if added:
            self._version += 1
        return added

    def ingest_evals(self, evals: Iterable[dict[str, Any]]) -> int:
        """metrics.jsonl records: periodic evaluations ({"step", "val_loss", "val_exact"})
        and the final test score ({"step", "split": "test", "exact"})."""
        from odin_dashboard.viewmodel.runfolder import test_score_of

        added = 0
        for record in evals:
            score = test_score_of(record)
            if score is not None:
                self.final_test = score
                added += 1
                continue
            try:
                point = (int(record["step"]), float(record["val_loss"]), float(record.get("val_exact", math.nan)))
            except (KeyError, TypeError, ValueError):
                continue
            self.val_points.append(point)
            added += 1
        if added:
            self._version += 1
        return added

    def show_sphere(self, index: Optional[int]) -> None:
        """Plot one sphere (0..11) or all of them (None)."""
        if index is not None and not 0 <= index < N_SPHERES:
            raise ValueError(f"sphere index must be in 0..{N_SPHERES - 1}, got {index}")
        self.shown_sphere = index
        self._version += 1

    def set_smoothing(self, smoothing: float) -> None:
        """EMA weight for the per-sphere plots, 0 (raw) .. 0.99."""
        smoothing = float(smoothing)
        if not 0.0 <= smoothing <= 0.99:
            raise ValueError(f"smoothing must be in 0..0.99, got {smoothing}")
        self.smoothing = smoothing
        self._version += 1

    @property
    def version(self) -> int:
        return self._version

    # ------------------------------------------------------------------ outputs
    def ring(self, snapshot: Any, now: float, total_steps: int = 0, caption: str = "") -> RingView:
        if snapshot is None:
            return build_ring(*self.ring_size, None, [0.0] * N_SPHERES, total_steps=total_steps, caption=caption)
        loads = self.loads.update([s.busy_seconds for s in snapshot.spheres], snapshot.threads, now)
        if snapshot.paused or not snapshot.running:
            loads = [0.0] * N_SPHERES  # nothing is working; do not show stale load
        return build_ring(*self.ring_size, snapshot.spheres, loads, root_state=snapshot.root_state,
                          step=snapshot.step, total_steps=total_steps, loss=snapshot.loss, caption=caption)

    def plots(self) -> PlotsView:
        def sphere_series(columns: Sequence[str]) -> list[Series]:
            out = []
            for i, column in enumerate(columns):
                x, y = self.history.series(column)
                out.append(Series(f"s{i + 1}", x, ema(y, self.smoothing), self.shown_sphere in (None, i), y))
            return out

        x, y = self.history.series("loss")
        val = self.val_points
        sphere_loss, sphere_grad = sphere_series(SPHERE_LOSS), sphere_series(SPHERE_GRAD)
        val_loss = [p[1] for p in val]

        def shown(series: list[Series]) -> list[list[float]]:
            return [s.y for s in series if s.visible]

        return PlotsView(
            sphere_loss=sphere_loss, sphere_grad=sphere_grad,
            train_loss=Series("train", x, y),
            val_loss=Series("validation", [float(p[0]) for p in val], val_loss),
            steps_per_point=self.history.stride, version=self._version,
            grad_axis=log_axis(shown(sphere_grad)), loss_log_axis=log_axis(shown(sphere_loss)),
            global_log_axis=log_axis([y, val_loss]),
        )

    def hover(self, plot: str, x: float) -> str:
        """Tooltip text for the mouse at step `x` over `plot` ("loss" or "grad"): the nearest
        step and the shown spheres' values there."""
        view = self.plots()
        return hover_text(view.sphere_loss if plot == "loss" else view.sphere_grad, x)

    def metrics(self, snapshot: Any, now: float, total_steps: int, elapsed: float,
                threads: int, final_exact: Optional[float] = None, checkpoint_text: str = "") -> MetricsView:
        step = snapshot.step if snapshot is not None else 0
        if snapshot is not None and snapshot.running and not snapshot.paused:
            self.rate.add(now, step)
        rate = self.rate.steps_per_second()
        remaining = max(0, total_steps - step)
        if snapshot is not None and snapshot.paused:
            eta = "paused"
        elif remaining == 0 and step:
            eta = "done"
        else:
            eta = fmt_duration(remaining / rate) if rate > 0 else "-"
        if self.final_test is not None:  # the run's final score, as metrics.jsonl records it
            test_exact = f"{fmt_percent(self.final_test[1])} @ {self.final_test[0]:,}"
        else:
            test_exact = fmt_percent(final_exact) if final_exact is not None else "-"
        exact = "-"
        if self.val_points and math.isfinite(self.val_points[-1][2]):
            exact = f"{fmt_percent(self.val_points[-1][2])} @ {self.val_points[-1][0]:,}"
        rows = [
            ("loss", fmt_loss(snapshot.loss) if snapshot is not None else "-"),
            ("val loss", fmt_loss(self.val_points[-1][1]) if self.val_points else "-"),
            ("val exact", exact),
            ("test exact", test_exact),
            ("tokens/s", fmt_rate(snapshot.tokens_per_s) if snapshot is not None else "-"),
            ("step time", fmt_step_time(snapshot.step_seconds) if snapshot is not None else "-"),
            ("ETA", eta),
            ("elapsed", fmt_duration(elapsed) if elapsed > 0 else "-"),
            ("learning rate", f"{snapshot.lr:.2e}" if snapshot is not None else "-"),
            ("grad norm", f"{snapshot.grad_norm:.3f}" if snapshot is not None else "-"),
            ("threads", str(snapshot.threads if snapshot is not None else threads)),
            ("checkpoint", checkpoint_text or "-"),
        ]
        progress = min(1.0, step / total_steps) if total_steps else 0.0
        return MetricsView(rows, progress, f"step {step:,} / {total_steps:,}" if total_steps else "no run")


def controls_view(state: SessionState) -> ControlsView:
    """Which controls are enabled and what the status line says, for one session state."""
    phase, active = state.phase, state.active
    training = active and phase == "training"
    if state.error and phase == "failed":
        status, level = state.error, "error"
    elif state.message and state.message_level in ("error", "warn"):
        status, level = state.message, state.message_level
    elif phase == "preparing":
        status, level = "loading the data and building the model ...", "busy"
    elif training and state.stop_requested:
        status, level = "stopping at the next step boundary, then saving the checkpoint ...", "busy"
    elif training and state.paused:
        status, level = f"paused at step {state.step:,}", "warn"
    elif training and state.pause_requested:
        status, level = "pausing at the next step boundary ...", "busy"
    elif training:
        status, level = state.message or f"training: step {state.step:,}", "busy"
    elif phase == "finishing":
        status, level = "saving the final checkpoint and evaluating ...", "busy"
    elif phase in ("finished", "stopped"):
        exact = f"; test exact match {fmt_percent(state.final_exact)}" if state.final_exact is not None else ""
        status = f"{phase} at step {state.step:,}{exact}; {state.checkpoint_text or 'checkpoint saved'}"
        level = "info"
        if state.message:
            status = state.message
    elif state.building_dataset:
        status, level = "building the dataset ...", "busy"
    elif state.form_problems:
        status, level = state.form_problems[0], "warn"
    else:
        status, level = state.message or "ready: press Start", "info"
    start_label = (f"Continue from step {state.resume_from_step:,}" if state.resume_from_step is not None
                   else "Start")
    return ControlsView(
        start_enabled=not active and not state.form_problems and not state.building_dataset,
        start_label=start_label,
        pause_enabled=training and not state.pause_requested and not state.stop_requested,
        resume_enabled=training and state.pause_requested and not state.stop_requested,
        stop_enabled=active and not state.stop_requested,
        settings_enabled=not active,
        schedule_enabled=not active and state.resume_from_step is None,
        save_enabled=training or (not active and state.can_save_idle),
        load_enabled=not active,
        continue_enabled=not active and state.can_continue_loaded,
        build_dataset_visible=not active and state.dataset_can_build and not state.building_dataset,
        chat_enabled=state.has_model and not state.chat_busy,
        status=status, status_level=level,
    )
