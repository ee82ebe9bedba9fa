"""DashboardApp: the window, the manual render loop with its frame pacing, unattended
runs (autostart / exit-after / screenshot) and a clean shutdown.

The loop draws at most `fps` frames per second and sleeps the rest of each frame: Xvfb
has no vsync, and an uncapped loop would take a core from the trainer. How long it sleeps
is the FramePacer's call (viewmodel/pacing.py): long while nobody touches the window,
short while someone types or moves the mouse (input is only seen when a frame is drawn).
Cheap things (the ring, the figures) update every frame; history and plots ~4x a second;
CPU, pipeline and the form check once a second.
"""
from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import dearpygui.dearpygui as dpg

from odin_dashboard.chat import ChatWorker
from odin_dashboard.gui.actions import Actions
from odin_dashboard.gui.layout import RING_SIZE, T, build_window
from odin_dashboard.gui.painter import Painter
from odin_dashboard.gui.theme import apply_global_theme, load_fonts
from odin_dashboard.session import Phase, TrainingSession
from odin_dashboard.tasks import BackgroundTask
from odin_dashboard.viewmodel.dashboard import DashboardViewModel, PlotsView, SessionState, controls_view
from odin_dashboard.viewmodel.formatting import fmt_duration
from odin_dashboard.viewmodel.forms import TrainForm, check_form, is_default_data_dir
from odin_dashboard.viewmodel.pacing import FramePacer
from odin_dashboard.viewmodel.pipeline import read_pipeline_state
from odin_dashboard.viewmodel.plotaxes import hover_text
from odin_dashboard.viewmodel.system import SystemSampler

PLOT_INTERVAL = 0.25
PLOT_POINTS = 384  # per series at most (the per-sphere plots are ~400 px wide)
SLOW_INTERVAL = 1.0


@dataclass
class AppOptions:
    form: TrainForm
    width: int = 1280
    height: int = 800
    fps: float = 30.0
    autostart: bool = False
    exit_after: Optional[float] = None  # seconds after the window opens
    screenshot: Optional[Path] = None  # taken just before exit_after closes the window
    checkpoint: Optional[Path] = None  # load at start
    ask: Optional[str] = None  # unattended: ask the model this a few seconds before exit_after


class DashboardApp(Actions):
    def __init__(self, options: AppOptions, session: Optional[TrainingSession] = None) -> None:
        self.options = options
        self.session = session or TrainingSession()
        self.chat = ChatWorker()
        # ~one point per pixel column of a plot: 24 series of 1024 points took half of a
        # frame's drawing under software OpenGL, and a slow frame is a slow key press
        self.vm = DashboardViewModel(ring_size=RING_SIZE, plot_capacity=PLOT_POINTS)
        self.painter = Painter()
        self.system = SystemSampler()
        self.loaded: Any = None
        self.model_source = "none"
        self.reverse_answer = False
        self.prompt_width = 0
        self.total_steps = options.form.steps
        self.tasks: dict[str, BackgroundTask] = {}
        self.screenshot_dir = Path(options.form.run_dir)
        self.form_dirty = True
        self.pending_save: Optional[tuple[float, Any]] = None
        self.message, self.message_level, self.message_time = "", "info", 0.0
        self.closing = False
        self.autostart_done = not options.autostart
        self.autostart_failed = False
        self._autostart_built = False
        self._exit_screenshot_requested = False
        self.asked = options.ask is None
        self._screenshot: Optional[tuple[Path, int, int]] = None  # path, frames waited, last size
        self.screenshots_taken: list[Path] = []
        self._last_plot = self._last_slow = 0.0
        self._form_check = check_form(options.form)
        self.frames = 0
        self.opened_at = 0.0
        self.pacer = FramePacer(options.fps)
        self.start_after_load = False  # the run dialog's "Continue it": start once the checkpoint loaded
        self.asked_run: Any = None  # the run the dialog is asking about
        self.plots_view: Optional[PlotsView] = None
        # called once per frame after the update (the GUI test drives the app through these)
        self.frame_hooks: list[Callable[[float], None]] = []

    # ------------------------------------------------------------------ messages
    def post(self, message: str, level: str = "info") -> None:
        self.message, self.message_level, self.message_time = message, level, time.monotonic()

    def request_close(self) -> None:
        """Window close (or exit-after): stop training cleanly; the loop ends when it has."""
        if not self.closing:
            self.closing = True
            self.session.stop()
            self.post("closing: stopping training and saving the checkpoint ...", "busy")

    def request_screenshot(self, path: Path) -> None:
        """Save the window as PNG. The capture is asked for two frames later, so that what
        changed this frame (and the plots' auto-fit) has been drawn; Dear PyGui then writes
        the file asynchronously, so poll_screenshot waits until it stops growing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        self._screenshot = (path, -2, -1)

    # ------------------------------------------------------------------ setup and loop
    def setup(self) -> None:
        dpg.create_context()
        dpg.configure_app(manual_callback_management=True)  # callbacks run in our loop, one thread
        load_fonts()
        apply_global_theme()
        build_window(self, self.options.form, self.options.width, self.options.height)
        dpg.create_viewport(title="ODIN dashboard", width=self.options.width, height=self.options.height,
                            vsync=False, disable_close=True, clear_color=(22, 24, 29, 255))
        dpg.set_exit_callback(lambda *_: self.request_close())
        dpg.setup_dearpygui()
        dpg.show_viewport()
        if self.options.checkpoint is not None:
            dpg.set_value(T.CKPT_PATH, str(self.options.checkpoint))
            self.on_load()

    def run(self) -> int:
        self.opened_at = time.monotonic()
        try:
            while dpg.is_dearpygui_running():
                started = time.monotonic()
                try:
                    self.frame(started)
                except KeyboardInterrupt:
                    self.request_close()
                drawn = time.monotonic()
                dpg.render_dearpygui_frame()
                now = time.monotonic()
                self.pacer.rendered(now - drawn)
                self.frames += 1
                if self.closing and not self.session.active and self._screenshot is None:
                    break
                time.sleep(self.pacer.sleep_before_next(now, started, self.editing()))
        finally:
            self.shutdown()
        return self.exit_code()

    def editing(self) -> bool:
        """Whether a text field has the keyboard (the user may type any moment)."""
        return any(dpg.is_item_active(tag) for tag in T.TEXT_FIELDS)

    def exit_code(self) -> int:
        if self.session.phase == Phase.FAILED:
            return 1
        if self.options.screenshot is not None and self.options.screenshot not in self.screenshots_taken:
            return 1
        return 2 if self.autostart_failed else 0

    def shutdown(self) -> None:
        if self.session.active:
            print("odin-dashboard: stopping training and saving the checkpoint ...", file=sys.stderr)
            self.session.stop()
            self.session.join()
        self.chat.wait(5.0)
        dpg.destroy_context()

    def run_callbacks(self) -> None:
        for job in dpg.get_callback_queue() or []:
            callback = job[0]
            if callback is None:
                continue
            try:
                params = list(inspect.signature(callback).parameters.values())
                if any(p.kind == p.VAR_POSITIONAL for p in params):
                    callback(*job[1:4])  # sender, app_data, user_data
                else:
                    callback(*job[1:1 + len(params)])
            except Exception as error:  # a bad value in a field: show it, keep running
                self.post(f"{type(error).__name__}: {error}", "error")

    # ------------------------------------------------------------------ one frame
    def frame(self, now: float) -> None:
        self.run_callbacks()
        self.poll_tasks()
        self.unattended(now)
        snapshot = self.session.snapshot()
        if now - self._last_plot >= PLOT_INTERVAL:
            self._last_plot = now
            self.vm.ingest_records(self.session.new_records())
            self.vm.ingest_evals(self.session.new_evals())
            self.plots_view = self.vm.plots()
            self.painter.plots(self.plots_view)
            self.check_saved()
        if now - self._last_slow >= SLOW_INTERVAL or self.form_dirty:
            self.slow_updates(now)
        caption = f"{snapshot.threads} threads on 12 spheres" if snapshot is not None else "12 spheres, not training"
        self.painter.ring(self.vm.ring(snapshot, now, self.total_steps, caption))
        info = self.session.latest_checkpoint()
        saved = f"step {info.step:,}, {fmt_duration(time.time() - info.saved_at)} ago" if info else ""
        ckpt_text = f"{saved} in {info.path}" if info else ""
        self.painter.metrics(self.vm.metrics(snapshot, now, self.total_steps, self.session.elapsed(now),
                                             int(dpg.get_value(T.THREADS)), self.session.final_exact, saved))
        if self.chat.drain():
            self.painter.transcript(self.chat.transcript())
        self.hover()
        self.painter.controls(controls_view(self.session_state(snapshot, ckpt_text)))
        for hook in self.frame_hooks:
            hook(now)

    def hover(self) -> None:
        """Over a per-sphere plot: the series' values at the step nearest the mouse, in a
        small window next to it (the plots' own corner text showed only the cursor)."""
        text = ""
        if self.plots_view is not None:
            for plot, series in ((T.LOSS_PLOT, self.plots_view.sphere_loss),
                                 (T.GRAD_PLOT, self.plots_view.sphere_grad)):
                if dpg.is_item_hovered(plot):
                    text = hover_text(series, dpg.get_plot_mouse_pos()[0])
        mouse = dpg.get_mouse_pos(local=False)
        self.painter.hover(text, (mouse[0], mouse[1]), (self.options.width, self.options.height))

    def slow_updates(self, now: float) -> None:
        self._last_slow = now
        form = self.read_form()
        self.screenshot_dir = Path(form.run_dir or ".")
        self._form_check = check_form(form, self.base_config())
        self.form_dirty = False
        dataset = self._form_check.dataset
        summary = self._form_check.model_summary or "; ".join(self._form_check.problems[:1])
        self.painter.form_texts(summary, dataset.message, dataset.ready)
        self.painter.system(self.system.sample(now))
        self.painter.pipeline(read_pipeline_state(form.data_dir))
        if not self.session.active:
            self.total_steps = form.steps if self.session.request is None else self.total_steps

    def session_state(self, snapshot: Any, ckpt_text: str) -> SessionState:
        session = self.session
        message = self.message if time.monotonic() - self.message_time < 8.0 or self.message_level == "error" else ""
        if self.can_continue_loaded() and bool(dpg.get_value(T.CONTINUE)) and not session.active:
            resume_step: Optional[int] = self.loaded.step
        else:
            resume_step = None
        return SessionState(
            phase=session.phase.value, active=session.active,
            paused=bool(snapshot.paused) if snapshot is not None else False,
            pause_requested=session.pause_requested, stop_requested=session.stop_requested,
            step=snapshot.step if snapshot is not None else 0, error=session.error,
            form_problems=tuple(self._form_check.problems), dataset_can_build=self._form_check.dataset.can_build,
            building_dataset="dataset" in self.tasks, resume_from_step=resume_step,
            has_loaded_checkpoint=self.loaded is not None, can_continue_loaded=self.can_continue_loaded(),
            has_model=self.chat_model_available(), can_save_idle=self.current_checkpoint_dir() is not None,
            chat_busy=self.chat.busy, final_exact=session.final_exact,
            checkpoint_text=f"checkpoint {ckpt_text}" if ckpt_text else "",
            message=message, message_level=self.message_level,
        )

    def chat_model_available(self) -> bool:
        return (self.model_source == "session" and self.session.trainer is not None) or self.loaded is not None

    def check_saved(self) -> None:
        """Report a requested checkpoint once the training thread has written it."""
        if self.pending_save is None:
            return
        requested_at, before = self.pending_save
        info = self.session.latest_checkpoint()
        if info is not None and (before is None or info.saved_at != before.saved_at):
            self.pending_save = None
            self.post(f"checkpoint saved at step {info.step:,} in {info.path}")
        elif time.monotonic() - requested_at > 120:
            self.pending_save = None

    def poll_tasks(self) -> None:
        for name, task in list(self.tasks.items()):
            if not task.done:
                continue
            del self.tasks[name]
            if name == "dataset":
                if task.error is not None:
                    self.post(f"could not build the dataset: {task.error}", "error")
                else:
                    self.post("dataset built")
                self.form_dirty = True
            elif name == "load":
                if task.error is not None:
                    self.start_after_load = False
                    self.post(f"checkpoint does not load: {task.error}", "error")
                else:
                    self.loaded_checkpoint(task.result)

    def unattended(self, now: float) -> None:
        """--autostart, --exit-after, --screenshot."""
        if not self.autostart_done and "load" not in self.tasks and "dataset" not in self.tasks:
            form = self.read_form()
            check = check_form(form, self.base_config())
            if check.dataset.can_build and is_default_data_dir(form) and not self._autostart_built:
                self._autostart_built = True  # one attempt; a failed build is reported, not retried
                self.on_build_dataset()  # like `odin train`: the default recipe builds its data
            else:
                self.autostart_done = True
                self.autostart_failed = not self.start_run(unattended=True)
        if self._screenshot is not None:
            self.poll_screenshot()
        exit_after = self.options.exit_after
        if not self.asked and exit_after is not None and now - self.opened_at >= max(0.0, exit_after - 3.0) \
                and self.chat_model_available():
            self.asked = True
            dpg.set_value(T.PROMPT, self.options.ask)
            self.on_ask()
        if exit_after is not None and not self.closing and now - self.opened_at >= exit_after:
            if self.options.screenshot is not None and not self._exit_screenshot_requested:
                self._exit_screenshot_requested = True
                self.request_screenshot(self.options.screenshot)
            if self._screenshot is None:  # written (or given up on: reported in the exit status)
                self.request_close()

    def poll_screenshot(self) -> None:
        path, frames, last_size = self._screenshot  # type: ignore[misc]
        if frames < 0:
            if frames == -1:
                dpg.output_frame_buffer(file=str(path))
            self._screenshot = (path, frames + 1, -1)
            return
        size = path.stat().st_size if path.exists() else -1
        if size > 0 and size == last_size:  # written and no longer growing
            self._screenshot = None
            self.screenshots_taken.append(path)
            self.post(f"screenshot saved to {path}")
        elif frames > 120:
            self._screenshot = None
            self.post(f"the screenshot {path} was not written", "error")
        else:
            self._screenshot = (path, frames + 1, size)
