"""Draws view-model output into the widgets built by layout.py. No decisions here: every
value comes from the view-model; this module only knows Dear PyGui calls."""
from __future__ import annotations

import math
from typing import Any, Optional

import dearpygui.dearpygui as dpg

from odin_dashboard.gui.layout import METRIC_LABELS, T
from odin_dashboard.gui.theme import FONT_SIZE, MUTED, STATUS_COLOURS
from odin_dashboard.viewmodel.dashboard import ControlsView, MetricsView, PlotsView
from odin_dashboard.viewmodel.pipeline import STATUSES, PipelineView
from odin_dashboard.viewmodel.plotaxes import AxisView
from odin_dashboard.viewmodel.ring import BACKGROUND, RingView, blend, label_font_size
from odin_dashboard.viewmodel.system import SystemView


class Painter:
    def __init__(self) -> None:
        self._plots_version = -1
        self._pipeline: Optional[PipelineView] = None
        self._values: dict[Any, Any] = {}
        self.log_loss = False  # loss axes in log scale: non-positive values cannot be drawn

    def invalidate_plots(self) -> None:
        self._plots_version = -1

    def _set(self, tag: str, value: Any) -> None:
        """set_value only when it changed (keeps an input the user is editing untouched)."""
        if self._values.get(tag) != value:
            dpg.set_value(tag, value)
            self._values[tag] = value

    # ------------------------------------------------------------------ ring
    def ring(self, view: RingView) -> None:
        dpg.delete_item(T.RING, children_only=True)
        draw = dict(parent=T.RING)
        dpg.draw_rectangle((0, 0), (view.width, view.height), fill=BACKGROUND, color=BACKGROUND, **draw)
        for spoke in view.spokes:
            dpg.draw_line(spoke.start, spoke.end, color=spoke.colour, thickness=spoke.thickness, **draw)
        root = view.root
        dpg.draw_circle(root.center, root.radius, fill=root.fill, color=(220, 225, 235, 255), thickness=2, **draw)
        sizes = (FONT_SIZE + 3, FONT_SIZE, FONT_SIZE)
        top = root.center[1] - 0.5 * sum(sizes) - 4
        for line, size in zip(root.lines, sizes):
            dpg.draw_text((root.center[0] - 0.29 * size * len(line), top), line, size=size,
                          color=(255, 255, 255, 255), **draw)
            top += size + 3
        for node in view.spheres:
            dpg.draw_circle(node.center, node.radius, fill=node.fill, color=node.outline, thickness=2, **draw)
            if node.load_arc:
                dpg.draw_polyline(node.load_arc, color=(255, 255, 255, 230), thickness=3, **draw)
            dpg.draw_text(node.label_pos, node.label, size=label_font_size(node.label, FONT_SIZE),
                          color=(255, 255, 255, 255), **draw)
            dpg.draw_text(node.name_pos, node.name, size=FONT_SIZE - 1, color=node.outline, **draw)
        # legend: state colours, then what the arc means
        x, y = 6.0, view.height - 2.1 * FONT_SIZE
        for name, colour in view.legend:
            dpg.draw_circle((x + 6, y + 8), 6, fill=blend(BACKGROUND, colour, 1.0), color=colour, **draw)
            dpg.draw_text((x + 15, y), name, size=FONT_SIZE - 1, color=(210, 214, 224, 255), **draw)
            x += 24 + 0.56 * (FONT_SIZE - 1) * len(name)
        dpg.draw_text((6, view.height - 0.95 * FONT_SIZE), "fill: state, brighter = busier; white arc: load; "
                      "number: micro-batches", size=FONT_SIZE - 3, color=MUTED, **draw)
        if view.caption:
            dpg.draw_text((6, 4), view.caption, size=FONT_SIZE - 2, color=MUTED, **draw)

    # ------------------------------------------------------------------ figures
    def metrics(self, view: MetricsView) -> None:
        values = dict(view.rows)
        for index, label in enumerate(METRIC_LABELS):
            self._set(T.metric(index), values.get(label, "-"))
        self._set(T.CHECKPOINT, f"saved: {values.get('checkpoint', '-')}")
        self._set(T.PROGRESS, view.progress)
        dpg.configure_item(T.PROGRESS, overlay=view.progress_text)

    def system(self, view: SystemView) -> None:
        dpg.delete_item(T.CPU, children_only=True)
        width, height = dpg.get_item_width(T.CPU), dpg.get_item_height(T.CPU)
        n = max(1, len(view.cores))
        gap = 4 if n <= 32 else 1
        bar = (width - gap * (n - 1)) / n
        for i, load in enumerate(view.cores):
            x0 = i * (bar + gap)
            colour = blend((70, 160, 110, 255), (235, 90, 70, 255), load)
            empty = (40, 43, 50, 255)
            dpg.draw_rectangle((x0, 0), (x0 + bar, height), fill=empty, color=empty, parent=T.CPU)
            dpg.draw_rectangle((x0, height * (1 - load)), (x0 + bar, height), fill=colour, color=colour, parent=T.CPU)
            if bar >= 40:
                dpg.draw_text((x0 + 4, (height - FONT_SIZE + 2) / 2), f"cpu{i} {100 * load:.0f}%",
                              size=FONT_SIZE - 2, color=(235, 235, 240, 255), parent=T.CPU)
        self._set(T.MEMORY, min(1.0, view.memory_fraction))
        dpg.configure_item(T.MEMORY, overlay=f"process memory {view.memory_text}")

    def pipeline(self, view: PipelineView) -> None:
        if view == self._pipeline:
            return
        self._pipeline = view
        self._set(T.PIPELINE_MSG, view.message)
        dpg.configure_item(T.PIPELINE_TABLE, show=view.running and bool(view.stages))
        for row in dpg.get_item_children(T.PIPELINE_TABLE, 1) or []:
            dpg.delete_item(row)
        for stage in view.stages:
            with dpg.table_row(parent=T.PIPELINE_TABLE):
                dpg.add_text(stage.stage)
                for status in STATUSES:
                    dpg.add_text(str(stage.counts.get(status, 0)))
        lines = [view.training.line()] if view.training is not None else []
        if view.in_progress:
            lines.append("in progress: " + ", ".join(view.in_progress[:3])
                         + (f" (+{len(view.in_progress) - 3})" if len(view.in_progress) > 3 else ""))
        if view.quarantine_total:
            lines.append(f"quarantine ({view.quarantine_total}): "
                         + "; ".join(f"{q.name} [{q.stage}]: {q.error}" for q in view.quarantine[:2]))
        self._set(T.PIPELINE_ITEMS, "\n".join(lines))

    def plots(self, view: PlotsView) -> None:
        if view.version == self._plots_version:
            return
        self._plots_version = view.version
        for i, (loss, grad) in enumerate(zip(view.sphere_loss, view.sphere_grad)):
            dpg.set_value(T.sphere_loss(i), [loss.x, self._loss_values(loss.y)])
            dpg.set_value(T.sphere_grad(i), [grad.x, _positive(grad.y)])
            dpg.configure_item(T.sphere_loss(i), show=loss.visible)
            dpg.configure_item(T.sphere_grad(i), show=grad.visible)
        dpg.set_value(T.TRAIN_SERIES, [view.train_loss.x, self._loss_values(view.train_loss.y)])
        dpg.set_value(T.VAL_SERIES, [view.val_loss.x, self._loss_values(view.val_loss.y)])
        # log axes get their limits and ticks from the view-model (ImPlot's own: 1 ... 1e-306
        # when empty, one labelled tick inside a decade); linear axes fit themselves
        _log_axis(T.GRAD_Y, view.grad_axis)
        for axis, log_view in ((T.LOSS_Y, view.loss_log_axis), (T.GLOBAL_Y, view.global_log_axis)):
            if self.log_loss:
                _log_axis(axis, log_view)
            else:
                dpg.set_axis_limits_auto(axis)
                dpg.reset_axis_ticks(axis)

    def _loss_values(self, values: list[float]) -> list[float]:
        return _positive(values) if self.log_loss else values

    # ------------------------------------------------------------------ controls
    def controls(self, view: ControlsView) -> None:
        for tag, enabled in ((T.START, view.start_enabled), (T.PAUSE, view.pause_enabled),
                             (T.RESUME, view.resume_enabled), (T.STOP, view.stop_enabled),
                             (T.SAVE, view.save_enabled), (T.LOAD, view.load_enabled),
                             (T.ASK, view.chat_enabled), (T.CONTINUE, view.continue_enabled)):
            self._configure(tag, enabled=enabled)
        for tag in (T.DATA_DIR, T.RUN_DIR, T.CKPT_PATH):
            self._configure(tag, enabled=view.settings_enabled)
        for tag in (T.PRESET, T.LR, T.BATCH, T.STEPS, T.EVAL_EVERY):
            self._configure(tag, enabled=view.schedule_enabled)
        self._configure(T.START, label=view.start_label)
        self._configure(T.BUILD_DATA, show=view.build_dataset_visible)
        self._set(T.STATUS, view.status)
        self._configure(T.STATUS, color=STATUS_COLOURS.get(view.status_level, STATUS_COLOURS["info"]))

    def _configure(self, tag: str, **options: Any) -> None:
        """configure_item with only the options whose value changed."""
        changed = {name: value for name, value in options.items() if self._values.get((tag, name)) != value}
        if changed:
            dpg.configure_item(tag, **changed)
            for name, value in changed.items():
                self._values[(tag, name)] = value

    def form_texts(self, model_summary: str, dataset_message: str, dataset_ready: bool) -> None:
        self._set(T.MODEL_SUMMARY, model_summary)
        self._set(T.DATA_STATUS, dataset_message)
        self._configure(T.DATA_STATUS, color=(140, 200, 150, 255) if dataset_ready else STATUS_COLOURS["warn"])

    def transcript(self, text: str) -> None:
        """New text, then scroll to the newest answer: -1 is "the end" for Dear PyGui, and
        the delayed flag applies it after the new text's height is known."""
        self._set(T.TRANSCRIPT, text)
        dpg.set_y_scroll(T.TRANSCRIPT_BOX, -1.0, when=dpg.mvSetScrollFlags_Delayed)

    def hover(self, text: str, mouse: tuple[float, float], window: tuple[int, int]) -> None:
        """Show `text` next to the mouse (left of it near the right edge), or hide it."""
        self._configure(T.HOVER, show=bool(text))
        if not text:
            return
        self._set(T.HOVER_TEXT, text)
        width = 260 if "raw" in text else 130
        x = mouse[0] + 16 if mouse[0] + 16 + width < window[0] else mouse[0] - 16 - width
        y = min(mouse[1] + 12, window[1] - 18 * (text.count("\n") + 2))
        self._configure(T.HOVER, pos=(int(x), int(max(0, y))))


def _log_axis(axis: str, view: AxisView) -> None:
    dpg.set_axis_limits(axis, view.low, view.high)
    dpg.set_axis_ticks(axis, view.ticks)


def _positive(values: list[float]) -> list[float]:
    """A log axis cannot show 0 or NaN; those points become NaN, which ImPlot skips."""
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]
