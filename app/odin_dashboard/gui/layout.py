"""Builds the window: controls on the left, the ring and live figures in the middle, the
plots on the right. Widgets get fixed string tags (class T) so the painter and the
GUI test can find them; callbacks go to the `actions` object (DashboardApp)."""
from __future__ import annotations

from typing import Any

import dearpygui.dearpygui as dpg

from odin_dashboard.gui.theme import HEADING, MUTED, TRAIN_LOSS_COLOUR, VAL_LOSS_COLOUR, line_theme, sphere_line_themes
from odin_dashboard.viewmodel.forms import MAX_THREADS, TrainForm, preset_names

LEFT_WIDTH = 330
MIDDLE_WIDTH = 430
RING_SIZE = (414, 354)
METRIC_LABELS = ("loss", "val loss", "val exact", "test exact", "grad norm",
                 "tokens/s", "step time", "ETA", "elapsed", "learning rate")


class T:
    """Widget tags."""

    PRIMARY = "primary"
    PRESET, MODEL_SUMMARY = "preset", "model_summary"
    DATA_DIR, DATA_STATUS, BUILD_DATA = "data_dir", "data_status", "build_data"
    RUN_DIR, THREADS, LR, BATCH, STEPS, EVAL_EVERY = "run_dir", "threads", "lr", "batch", "steps", "eval_every"
    START, PAUSE, RESUME, STOP, STATUS = "start", "pause", "resume", "stop", "status"
    CKPT_PATH, SAVE, LOAD, CONTINUE, SCREENSHOT = "ckpt_path", "save", "load", "continue", "screenshot"
    PROMPT, ASK, TRANSCRIPT = "prompt", "ask", "transcript"
    RING, PROGRESS, CPU, MEMORY, CHECKPOINT = "ring", "progress", "cpu", "memory", "checkpoint"
    PIPELINE_MSG, PIPELINE_TABLE, PIPELINE_ITEMS = "pipeline_msg", "pipeline_table", "pipeline_items"
    SPHERE_FILTER, LOG_LOSS = "sphere_filter", "log_loss"
    LOSS_Y, GRAD_Y, GLOBAL_Y = "loss_y", "grad_y", "global_y"
    LOSS_X, GRAD_X, GLOBAL_X = "loss_x", "grad_x", "global_x"
    TRAIN_SERIES, VAL_SERIES = "train_series", "val_series"

    @staticmethod
    def metric(index: int) -> str:
        return f"metric_{index}"

    @staticmethod
    def sphere_loss(index: int) -> str:
        return f"sphere_loss_{index}"

    @staticmethod
    def sphere_grad(index: int) -> str:
        return f"sphere_grad_{index}"


def _heading(text: str) -> None:
    dpg.add_spacer(height=2)
    dpg.add_text(text, color=HEADING)


def _labelled(label: str) -> None:
    dpg.add_text(label, color=MUTED)


def _controls(actions: Any, form: TrainForm) -> None:
    dpg.add_text("ODIN  kissing-spheres trainer", color=(230, 232, 240, 255))
    _heading("Model")
    dpg.add_combo(preset_names(), default_value=form.preset, tag=T.PRESET, width=-1, callback=actions.on_preset)
    dpg.add_text("", tag=T.MODEL_SUMMARY, wrap=LEFT_WIDTH - 24, color=MUTED)
    _heading("Data")
    dpg.add_input_text(default_value=form.data_dir, tag=T.DATA_DIR, width=-1, callback=actions.on_form_changed,
                       hint="dataset folder")
    dpg.add_text("", tag=T.DATA_STATUS, wrap=LEFT_WIDTH - 24, color=MUTED)
    dpg.add_button(label="Build the preset's reasoning set here", tag=T.BUILD_DATA, width=-1,
                   callback=actions.on_build_dataset, show=False)
    _heading("Run")
    with dpg.table(header_row=False, policy=dpg.mvTable_SizingStretchProp):
        dpg.add_table_column(init_width_or_weight=0.32)
        dpg.add_table_column(init_width_or_weight=0.68)
        rows = (
            ("folder", lambda: dpg.add_input_text(default_value=form.run_dir, tag=T.RUN_DIR, width=-1,
                                                  callback=actions.on_form_changed)),
            ("threads", lambda: dpg.add_slider_int(default_value=form.threads, min_value=1, max_value=MAX_THREADS,
                                                   tag=T.THREADS, width=-1, clamped=True, callback=actions.on_threads)),
            ("learning rate", lambda: dpg.add_input_float(default_value=form.lr, tag=T.LR, width=-1, format="%.2e",
                                                          step=0, callback=actions.on_form_changed)),
            ("batch size", lambda: dpg.add_input_int(default_value=form.batch_size, tag=T.BATCH, width=-1,
                                                     step=0, callback=actions.on_form_changed)),
            ("steps", lambda: dpg.add_input_int(default_value=form.steps, tag=T.STEPS, width=-1, step=0,
                                                callback=actions.on_form_changed)),
            ("eval every", lambda: dpg.add_input_int(default_value=form.eval_every, tag=T.EVAL_EVERY, width=-1,
                                                     step=0, callback=actions.on_form_changed)),
        )
        for label, make in rows:
            with dpg.table_row():
                _labelled(label)
                make()
    dpg.add_spacer(height=2)
    button_width = (LEFT_WIDTH - 40) // 4
    with dpg.group(horizontal=True):
        dpg.add_button(label="Start", tag=T.START, width=button_width, callback=actions.on_start)
        dpg.add_button(label="Pause", tag=T.PAUSE, width=button_width, callback=actions.on_pause)
        dpg.add_button(label="Resume", tag=T.RESUME, width=button_width, callback=actions.on_resume)
        dpg.add_button(label="Stop", tag=T.STOP, width=button_width, callback=actions.on_stop)
    dpg.add_text("", tag=T.STATUS, wrap=LEFT_WIDTH - 24)
    _heading("Checkpoint")
    dpg.add_input_text(default_value=f"{form.run_dir}/checkpoint", tag=T.CKPT_PATH, width=-1, hint="checkpoint folder")
    with dpg.group(horizontal=True):
        dpg.add_button(label="Save", tag=T.SAVE, width=70, callback=actions.on_save)
        dpg.add_button(label="Load", tag=T.LOAD, width=70, callback=actions.on_load)
        dpg.add_checkbox(label="continue it", tag=T.CONTINUE, callback=actions.on_form_changed)
    dpg.add_text("saved: -", tag=T.CHECKPOINT, color=MUTED, wrap=LEFT_WIDTH - 24)
    dpg.add_button(label="Save screenshot (PNG)", tag=T.SCREENSHOT, width=-1, callback=actions.on_screenshot)
    _heading("Ask the model")
    with dpg.group(horizontal=True):
        dpg.add_input_text(tag=T.PROMPT, width=LEFT_WIDTH - 84, hint="e.g. 123+456=   (\\n: a new line)", on_enter=True,
                           callback=actions.on_ask)
        dpg.add_button(label="Ask", tag=T.ASK, width=52, callback=actions.on_ask)
    dpg.add_input_text(tag=T.TRANSCRIPT, multiline=True, readonly=True, width=-1, height=-1)


def _compact_table_theme() -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvTable):
            dpg.add_theme_style(dpg.mvStyleVar_CellPadding, 4, 1)
            dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 6, 1)
    return theme


def _middle() -> None:
    compact = _compact_table_theme()
    dpg.add_drawlist(*RING_SIZE, tag=T.RING)
    dpg.add_progress_bar(tag=T.PROGRESS, width=-1, overlay="no run")
    with dpg.table(header_row=False, policy=dpg.mvTable_SizingFixedFit, borders_innerV=True) as metrics:
        for _ in range(2):  # label, value; label, value
            dpg.add_table_column(width_fixed=True, init_width_or_weight=84)
            dpg.add_table_column(width_stretch=True, init_width_or_weight=1.0)
        half = (len(METRIC_LABELS) + 1) // 2
        for row in range(half):
            with dpg.table_row():
                for index in (row, row + half):
                    if index < len(METRIC_LABELS):
                        _labelled(METRIC_LABELS[index])
                        dpg.add_text("-", tag=T.metric(index))
    dpg.bind_item_theme(metrics, compact)
    with dpg.group(horizontal=True):
        dpg.add_text("System", color=HEADING)
        dpg.add_progress_bar(tag=T.MEMORY, width=-1, overlay="process memory -")
    dpg.add_drawlist(MIDDLE_WIDTH - 16, 26, tag=T.CPU)
    with dpg.group(horizontal=True):
        dpg.add_text("Pipeline", color=HEADING)
        dpg.add_text("no pipeline running", tag=T.PIPELINE_MSG, color=MUTED)
    with dpg.table(tag=T.PIPELINE_TABLE, header_row=True, policy=dpg.mvTable_SizingStretchProp, show=False):
        for name in ("stage", "pending", "running", "done", "failed", "quarant."):
            dpg.add_table_column(label=name)
    dpg.bind_item_theme(T.PIPELINE_TABLE, compact)
    dpg.add_text("", tag=T.PIPELINE_ITEMS, wrap=MIDDLE_WIDTH - 20, color=MUTED)


def _sphere_plot(title: str, x_tag: str, y_tag: str, series_tag: Any, height: int, themes: list[int],
                 scale: int) -> None:
    with dpg.plot(label=title, height=height, width=-1, no_menus=True, no_box_select=True):
        dpg.add_plot_legend(location=dpg.mvPlot_Location_East, outside=True, no_buttons=False)
        dpg.add_plot_axis(dpg.mvXAxis, label="step", tag=x_tag, auto_fit=True)
        with dpg.plot_axis(dpg.mvYAxis, tag=y_tag, auto_fit=True, scale=scale):
            for i in range(12):
                dpg.add_line_series([], [], label=f"s{i + 1}", tag=series_tag(i))
                dpg.bind_item_theme(series_tag(i), themes[i])


def _plots(actions: Any, height: int) -> None:
    with dpg.group(horizontal=True):
        _labelled("per-sphere plots show")
        dpg.add_combo(["all spheres"] + [f"sphere s{i + 1}" for i in range(12)], default_value="all spheres",
                      tag=T.SPHERE_FILTER, width=140, callback=actions.on_sphere_filter)
        dpg.add_checkbox(label="log-scale loss", tag=T.LOG_LOSS, callback=actions.on_log_loss)
    plot_height = (height - 40) // 3
    themes = sphere_line_themes()
    _sphere_plot("per-sphere loss", T.LOSS_X, T.LOSS_Y, T.sphere_loss, plot_height, themes, dpg.mvPlotScale_Linear)
    _sphere_plot("per-sphere gradient norm (log)", T.GRAD_X, T.GRAD_Y, T.sphere_grad, plot_height, themes,
                 dpg.mvPlotScale_Log10)
    with dpg.plot(label="global loss: train and validation", height=-1, width=-1, no_menus=True,
                  no_box_select=True):
        dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast)
        dpg.add_plot_axis(dpg.mvXAxis, label="step", tag=T.GLOBAL_X, auto_fit=True)
        with dpg.plot_axis(dpg.mvYAxis, tag=T.GLOBAL_Y, auto_fit=True, scale=dpg.mvPlotScale_Linear):
            dpg.add_line_series([], [], label="train", tag=T.TRAIN_SERIES)
            dpg.add_line_series([], [], label="validation", tag=T.VAL_SERIES)
    dpg.bind_item_theme(T.TRAIN_SERIES, line_theme(TRAIN_LOSS_COLOUR, 1.6))
    dpg.bind_item_theme(T.VAL_SERIES, line_theme(VAL_LOSS_COLOUR, 2.0, markers=True))


def build_window(actions: Any, form: TrainForm, width: int, height: int) -> None:
    with dpg.window(tag=T.PRIMARY, no_scrollbar=True):
        with dpg.group(horizontal=True):
            with dpg.child_window(width=LEFT_WIDTH, height=-1):
                _controls(actions, form)
            with dpg.child_window(width=MIDDLE_WIDTH, height=-1, no_scrollbar=True):
                _middle()
            with dpg.child_window(width=-1, height=-1, no_scrollbar=True):
                _plots(actions, height - 30)
    dpg.set_primary_window(T.PRIMARY, True)
