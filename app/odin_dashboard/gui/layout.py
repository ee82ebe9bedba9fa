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
    SPHERE_FILTER, LOG_LOSS, SMOOTHING = "sphere_filter", "log_loss", "smoothing"
    LOSS_PLOT, GRAD_PLOT, HOVER, HOVER_TEXT = "loss_plot", "grad_plot", "hover", "hover_text"
    TRANSCRIPT_BOX, INPUT_HANDLERS = "transcript_box", "input_handlers"
    RUN_DIALOG, RUN_DIALOG_TEXT = "run_dialog", "run_dialog_text"
    DIALOG_CONTINUE, DIALOG_OVERWRITE, DIALOG_NEW, DIALOG_CANCEL = (
        "dialog_continue", "dialog_overwrite", "dialog_new", "dialog_cancel")
    # text fields: while one has the keyboard the render loop keeps a short frame interval
    TEXT_FIELDS = ("prompt", "data_dir", "run_dir", "ckpt_path", "lr", "batch", "steps", "eval_every")
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


LINE_HEIGHT = 18  # one line of 15 px text with the item spacing


def _fixed_text(tag: str, lines: int, **text_options: Any) -> None:
    """A text whose box keeps `lines` lines of height whatever it says, so that a message
    wrapping onto another line does not push every control below it (the panel shifted)."""
    with dpg.child_window(height=lines * LINE_HEIGHT, border=False, no_scrollbar=True):
        dpg.add_text("", tag=tag, wrap=LEFT_WIDTH - 24, **text_options)


def _controls(actions: Any, form: TrainForm) -> None:
    _heading("Model")  # (the window title names the app: its line went to the fixed-height texts)
    dpg.add_combo(preset_names(), default_value=form.preset, tag=T.PRESET, width=-1, callback=actions.on_preset)
    _fixed_text(T.MODEL_SUMMARY, 3, color=MUTED)
    _heading("Data")
    dpg.add_input_text(default_value=form.data_dir, tag=T.DATA_DIR, width=-1, callback=actions.on_form_changed,
                       hint="dataset folder")
    _fixed_text(T.DATA_STATUS, 2, color=MUTED)
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
    # Start has a row of its own: "Continue from step 12,345" does not fit a quarter row
    dpg.add_button(label="Start", tag=T.START, width=-1, callback=actions.on_start)
    button_width = (LEFT_WIDTH - 36) // 3
    with dpg.group(horizontal=True):
        dpg.add_button(label="Pause", tag=T.PAUSE, width=button_width, callback=actions.on_pause)
        dpg.add_button(label="Resume", tag=T.RESUME, width=button_width, callback=actions.on_resume)
        dpg.add_button(label="Stop", tag=T.STOP, width=button_width, callback=actions.on_stop)
    _fixed_text(T.STATUS, 2)
    _heading("Checkpoint")
    dpg.add_input_text(default_value=f"{form.run_dir}/checkpoint", tag=T.CKPT_PATH, width=-1, hint="checkpoint folder")
    with dpg.group(horizontal=True):
        dpg.add_button(label="Save", tag=T.SAVE, width=70, callback=actions.on_save)
        dpg.add_button(label="Load", tag=T.LOAD, width=70, callback=actions.on_load)
        dpg.add_checkbox(label="continue it", tag=T.CONTINUE, callback=actions.on_form_changed)
    _fixed_text(T.CHECKPOINT, 1, color=MUTED)
    dpg.add_button(label="Save screenshot (PNG)", tag=T.SCREENSHOT, width=-1, callback=actions.on_screenshot)
    _heading("Ask the model")
    with dpg.group(horizontal=True):
        dpg.add_input_text(tag=T.PROMPT, width=LEFT_WIDTH - 84, hint="e.g. 123+456=   (\\n: a new line)", on_enter=True,
                           callback=actions.on_ask)
        dpg.add_button(label="Ask", tag=T.ASK, width=52, callback=actions.on_ask)
    # a scrolling box (the painter keeps it at the newest answer), not a read-only input,
    # which cannot be scrolled from code
    with dpg.child_window(tag=T.TRANSCRIPT_BOX, width=-1, height=-1, border=True):
        dpg.add_text("", tag=T.TRANSCRIPT, wrap=LEFT_WIDTH - 40)


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


def _sphere_plot(title: str, tag: str, x_tag: str, y_tag: str, series_tag: Any, height: int,
                 themes: list[int], scale: int) -> None:
    # no_mouse_pos: the corner text showed the cursor's coordinates, not the data; the
    # tooltip shows the series' values at the nearest step instead
    with dpg.plot(label=title, tag=tag, height=height, width=-1, no_menus=True, no_box_select=True,
                  no_mouse_pos=True):
        dpg.add_plot_legend(location=dpg.mvPlot_Location_East, outside=True, no_buttons=False)
        dpg.add_plot_axis(dpg.mvXAxis, label="step", tag=x_tag, auto_fit=True)
        with dpg.plot_axis(dpg.mvYAxis, tag=y_tag, auto_fit=True, scale=scale):
            for i in range(12):
                dpg.add_line_series([], [], label=f"s{i + 1}", tag=series_tag(i))
                dpg.bind_item_theme(series_tag(i), themes[i])


def _plots(actions: Any, height: int) -> None:
    with dpg.group(horizontal=True):
        _labelled("show")
        dpg.add_combo(["all spheres"] + [f"sphere s{i + 1}" for i in range(12)], default_value="all spheres",
                      tag=T.SPHERE_FILTER, width=112, callback=actions.on_sphere_filter)
        _labelled("smoothing")
        dpg.add_slider_float(tag=T.SMOOTHING, default_value=0.0, min_value=0.0, max_value=0.99, format="%.2f",
                             width=80, clamped=True, callback=actions.on_smoothing)
        dpg.add_checkbox(label="log loss", tag=T.LOG_LOSS, callback=actions.on_log_loss)
    plot_height = (height - 40) // 3
    themes = sphere_line_themes()
    _sphere_plot("per-sphere loss", T.LOSS_PLOT, T.LOSS_X, T.LOSS_Y, T.sphere_loss, plot_height,
                 themes, dpg.mvPlotScale_Linear)
    _sphere_plot("per-sphere gradient norm (log)", T.GRAD_PLOT, T.GRAD_X, T.GRAD_Y, T.sphere_grad,
                 plot_height, themes, dpg.mvPlotScale_Log10)
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
    _run_dialog(actions, width, height)
    # the values under the mouse over a per-sphere plot: a small window that follows it
    with dpg.window(tag=T.HOVER, show=False, no_title_bar=True, no_resize=True, no_move=True, autosize=True,
                    no_focus_on_appearing=True, no_saved_settings=True, no_scrollbar=True):
        dpg.add_text("", tag=T.HOVER_TEXT)
    with dpg.handler_registry(tag=T.INPUT_HANDLERS):  # any input: draw frames promptly for a while
        dpg.add_key_press_handler(callback=actions.on_input)
        dpg.add_mouse_click_handler(callback=actions.on_input)
        dpg.add_mouse_wheel_handler(callback=actions.on_input)
        dpg.add_mouse_move_handler(callback=actions.on_input)


def _run_dialog(actions: Any, width: int, height: int) -> None:
    """Asked when Start would overwrite a run: continue it, start it over, a new folder, or cancel."""
    dialog_width = 430
    with dpg.window(tag=T.RUN_DIALOG, label="This run folder holds a run", modal=True, show=False,
                    no_resize=True, no_collapse=True, no_close=True, width=dialog_width,
                    pos=((width - dialog_width) // 2, height // 3)):
        dpg.add_text("", tag=T.RUN_DIALOG_TEXT, wrap=dialog_width - 20)
        dpg.add_spacer(height=4)
        dpg.add_button(label="Continue it", tag=T.DIALOG_CONTINUE, width=-1, callback=actions.on_dialog_continue)
        dpg.add_button(label="Start over (overwrite it)", tag=T.DIALOG_OVERWRITE, width=-1,
                       callback=actions.on_dialog_overwrite)
        dpg.add_button(label="New folder", tag=T.DIALOG_NEW, width=-1, callback=actions.on_dialog_new_folder)
        dpg.add_button(label="Cancel", tag=T.DIALOG_CANCEL, width=-1, callback=actions.on_dialog_cancel)
