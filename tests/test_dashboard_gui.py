"""The dashboard's window under Xvfb: start training from it, change threads, pause,
save, ask the model, stop, and check the checkpoint; plus the unattended command line.

Run by CI with Xvfb installed (`apt-get install xvfb xauth libgl1-mesa-dri libglx-mesa0`);
skipped only when `xvfb-run` is missing. The window is driven by a script executed in
the app's own render loop (this file run as a program under xvfb-run, see `drive`):
buttons are "clicked" by calling the callbacks Dear PyGui registered for them.
"""
from __future__ import annotations

import ctypes.util
import json
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.gui

XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24"]
needs_xvfb = pytest.mark.skipif(shutil.which("xvfb-run") is None,
                                reason="xvfb-run is not installed (apt-get install xvfb xauth)")
needs_xtest = pytest.mark.skipif(ctypes.util.find_library("Xtst") is None,
                                 reason="libXtst is not installed (apt-get install libxtst6): the test types "
                                        "with real X key events")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def build_tiny_dataset(folder: Path) -> None:
    from odin.data.dataset import build_dataset

    build_dataset(folder, seed=11, n_examples=600, ops=["add"], max_digits=2, reverse_answer=True)


class FakeInput:
    """Real X input events (XTest), as a user's keyboard and mouse would send them, from a
    thread of the driver: they reach the window through the X server and GLFW like any
    other input, so the render loop has to draw frames to see them."""

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        self.x = x = ctypes.CDLL(ctypes.util.find_library("X11"))
        self.xt = xt = ctypes.CDLL(ctypes.util.find_library("Xtst"))
        ptr, ulong = ctypes.c_void_p, ctypes.c_ulong
        x.XOpenDisplay.restype, x.XOpenDisplay.argtypes = ptr, [ctypes.c_char_p]
        x.XStringToKeysym.restype, x.XStringToKeysym.argtypes = ulong, [ctypes.c_char_p]
        x.XKeysymToKeycode.restype, x.XKeysymToKeycode.argtypes = ctypes.c_ubyte, [ptr, ulong]
        x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ptr]
        xt.XTestFakeKeyEvent.argtypes = [ptr, ctypes.c_uint, ctypes.c_int, ulong]
        xt.XTestFakeButtonEvent.argtypes = [ptr, ctypes.c_uint, ctypes.c_int, ulong]
        xt.XTestFakeMotionEvent.argtypes = [ptr, ctypes.c_int, ctypes.c_int, ctypes.c_int, ulong]
        self.display = x.XOpenDisplay(None)

    def move(self, x: float, y: float) -> None:
        self.xt.XTestFakeMotionEvent(self.display, -1, int(x), int(y), 0)
        self.x.XFlush(self.display)

    def click(self, x: float, y: float) -> None:
        self.move(x, y)
        time.sleep(0.05)
        for down in (1, 0):
            self.xt.XTestFakeButtonEvent(self.display, 1, down, 0)
            self.x.XFlush(self.display)
            time.sleep(0.05)

    def key(self, char: str) -> None:
        code = self.x.XKeysymToKeycode(self.display, self.x.XStringToKeysym(char.encode()))
        for down in (1, 0):
            self.xt.XTestFakeKeyEvent(self.display, code, down, 0)
            self.x.XFlush(self.display)
            time.sleep(0.02)


# ---------------------------------------------------------------------- the driver (runs under Xvfb)
def drive(work: Path) -> None:
    """Open the dashboard and operate it like a user; write what was seen to work/result.json."""
    import dearpygui.dearpygui as dpg

    from odin_dashboard.gui.app import AppOptions, DashboardApp
    from odin_dashboard.gui.layout import T
    from odin_dashboard.viewmodel.forms import TrainForm

    data, run = work / "data", work / "run"
    build_tiny_dataset(data)
    form = TrainForm(preset="tiny", data_dir=str(data), run_dir=str(run), threads=1, lr=1e-3, batch_size=24,
                     steps=100_000, eval_every=40)
    app = DashboardApp(AppOptions(form=form))
    result: dict[str, Any] = {"events": []}

    def click(tag: str, app_data: Any = None) -> None:
        dpg.get_item_callback(tag)(tag, app_data, None)

    def enabled(tag: str) -> bool:
        return bool(dpg.get_item_configuration(tag)["enabled"])

    def status() -> str:
        return str(dpg.get_value(T.STATUS))

    def wait(condition: Any, what: str, seconds: float = 30.0) -> Iterator[None]:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; status: {status()!r}")
            yield
        result["events"].append(what)

    def step() -> int:
        snap = app.session.snapshot()
        return snap.step if snap is not None else -1

    def frames(n: int) -> Iterator[None]:
        for _ in range(n):
            yield

    def screen_centre(tag: str) -> tuple[float, float]:
        """Where `tag` is on the X screen (the viewport's position plus the item's)."""
        (vx, vy), (ix, iy), (w, h) = dpg.get_viewport_pos(), dpg.get_item_rect_min(tag), dpg.get_item_rect_size(tag)
        return vx + ix + min(40, w / 2), vy + iy + h / 2

    def line_count(path: Path) -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    def logged_steps(path: Path) -> list[int]:
        """The steps of metrics.jsonl's per-step records (not its evaluation records)."""
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return [r["step"] for r in records if "tokens_per_s" in r]

    typed: dict[str, Any] = {"seen": [], "sent": []}

    def type_into_prompt(text: str) -> None:
        """Click into the prompt and type, one key after the other once the previous one is seen."""
        keyboard = FakeInput()
        keyboard.click(*typed["prompt_at"])
        time.sleep(0.3)
        for char in text:
            before = len(typed["seen"])
            typed["sent"].append(time.monotonic())
            keyboard.key(char)
            deadline = time.monotonic() + 10
            while len(typed["seen"]) == before and time.monotonic() < deadline:
                time.sleep(0.002)
        typed["done"] = True

    def script() -> Iterator[None]:
        # a preset fills in its training settings; then back to the small test settings
        dpg.set_value(T.PRESET, "small")
        click(T.PRESET, "small")
        yield from wait(lambda: "3.2" in dpg.get_value(T.MODEL_SUMMARY), "preset summary")
        result["small_preset"] = [dpg.get_value(T.STEPS), dpg.get_value(T.BATCH), dpg.get_value(T.MODEL_SUMMARY)]
        dpg.set_value(T.PRESET, "tiny")
        click(T.PRESET, "tiny")
        for tag, value in ((T.STEPS, 100_000), (T.BATCH, 24), (T.EVAL_EVERY, 40)):
            dpg.set_value(tag, value)
            click(tag, value)
        # bad situations are shown, not crashed on
        dpg.set_value(T.DATA_DIR, str(work / "no-such-folder"))
        click(T.DATA_DIR)
        yield from wait(lambda: "does not exist" in status() and not enabled(T.START)
                        and dpg.get_item_configuration(T.BUILD_DATA)["show"], "missing dataset shown")
        result["missing_dataset_status"] = status()
        click(T.BUILD_DATA)  # builds the default recipe's set (120k problems, ~2 s) in that folder
        yield from wait(lambda: status() == "dataset built"
                        and "96,000 training examples" in dpg.get_value(T.DATA_STATUS), "dataset built", 60)
        broken = work / "broken-checkpoint"
        broken.mkdir()
        (broken / "model.safetensors").write_bytes(b"not a safetensors file")
        dpg.set_value(T.CKPT_PATH, str(broken))
        click(T.LOAD)
        yield from wait(lambda: "checkpoint does not load" in status(), "bad checkpoint shown")
        result["bad_checkpoint_status"] = status()
        dpg.set_value(T.DATA_DIR, str(data))
        click(T.DATA_DIR)
        app.post("")
        yield from wait(lambda: enabled(T.START), "start enabled")
        result["empty_grad_limits"] = list(dpg.get_axis_limits(T.GRAD_Y))  # no data yet
        # a status that wraps onto more lines must not move the controls below it
        app.post("short", "warn")
        yield from frames(3)
        below_before = dpg.get_item_rect_min(T.CKPT_PATH)[1]
        app.post("a long warning " * 12, "warn")
        yield from frames(3)
        result["status_shift"] = dpg.get_item_rect_min(T.CKPT_PATH)[1] - below_before
        app.post("")

        click(T.START)
        yield from wait(lambda: step() >= 10, "training from the dashboard")
        result["threads_before"] = app.session.snapshot().threads
        dpg.set_value(T.THREADS, 2)
        click(T.THREADS, 2)
        changed_at = step()
        yield from wait(lambda: app.session.snapshot().threads == 2 and step() >= changed_at + 5, "threads changed")
        result["threads_after"] = app.session.snapshot().threads

        # type into the prompt with real key events while the spheres train on both cores
        dpg.set_value(T.PROMPT, "")
        typed["prompt_at"] = screen_centre(T.PROMPT)
        typed["pacer_active"] = []
        threading.Thread(target=type_into_prompt, args=("90817",), daemon=True).start()
        yield from wait(lambda: typed.get("done", False), "typed while training", 60)
        result["typed"] = dpg.get_value(T.PROMPT)
        result["typing_latency_ms"] = [round(1000 * (seen - sent)) for sent, seen in zip(typed["sent"], typed["seen"])]
        result["pacer_active_while_typing"] = typed["pacer_active"]

        # the values under the mouse over the per-sphere loss plot
        yield from wait(lambda: len(app.vm.history) > 5, "history to hover over")
        mouse = FakeInput()
        mouse.move(*screen_centre(T.LOSS_PLOT))
        yield from wait(lambda: dpg.get_item_configuration(T.HOVER)["show"] and
                        dpg.get_value(T.HOVER_TEXT).startswith("step"), "values under the mouse", 10)
        result["hover_text"] = dpg.get_value(T.HOVER_TEXT)
        app.request_screenshot(work / "hover.png")
        yield from wait(lambda: work / "hover.png" in app.screenshots_taken, "hover screenshot")
        mouse.move(*screen_centre(T.STATUS))
        yield from wait(lambda: not dpg.get_item_configuration(T.HOVER)["show"], "hover hidden", 10)

        # smoothing: what is drawn is the EMA of the raw values
        dpg.set_value(T.SMOOTHING, 0.9)
        click(T.SMOOTHING, 0.9)
        yield from wait(lambda: app.plots_view is not None and app.plots_view.sphere_loss[0].y
                        != app.plots_view.sphere_loss[0].raw, "smoothed", 10)
        yield from frames(2)
        drawn = dpg.get_value(T.sphere_loss(0))[1]
        result["smoothed_drawn"] = drawn[: len(app.plots_view.sphere_loss[0].y)] == app.plots_view.sphere_loss[0].y
        result["smoothed_differs"] = app.plots_view.sphere_loss[0].y != app.plots_view.sphere_loss[0].raw
        dpg.set_value(T.SMOOTHING, 0.0)
        click(T.SMOOTHING, 0.0)

        click(T.PAUSE)
        yield from wait(lambda: app.session.snapshot().paused and enabled(T.RESUME), "paused")
        paused_at = step()
        for _ in range(10):
            yield
        result["steps_while_paused"] = step() - paused_at
        click(T.RESUME)
        yield from wait(lambda: step() > paused_at + 5, "resumed")

        click(T.SAVE)
        yield from wait(lambda: "checkpoint saved at step" in status(), "checkpoint saved on request")
        result["save_status"] = status()
        yield from wait(lambda: len(app.vm.val_points) > 0, "periodic evaluation plotted")

        for prompt in ("1+2=", "3+4=", "5+6=", "7+8=", "12+34="):
            dpg.set_value(T.PROMPT, prompt)
            click(T.ASK)
            yield from wait(lambda: bool(app.chat.turns) and app.chat.turns[-1].done, "chat answered")
        for _ in range(4):
            yield
        result["transcript"] = dpg.get_value(T.TRANSCRIPT)
        result["transcript_scroll"] = [dpg.get_y_scroll(T.TRANSCRIPT_BOX), dpg.get_y_scroll_max(T.TRANSCRIPT_BOX)]

        dpg.set_value(T.SPHERE_FILTER, "sphere s3")
        click(T.SPHERE_FILTER, "sphere s3")
        for _ in range(int(0.5 / 0.03)):  # let the plots refresh
            yield
        result["visible_loss_series"] = [i for i in range(12) if dpg.get_item_configuration(T.sphere_loss(i))["show"]]
        dpg.set_value(T.SPHERE_FILTER, "all spheres")
        click(T.SPHERE_FILTER, "all spheres")
        yield from wait(lambda: all(dpg.get_item_configuration(T.sphere_loss(i))["show"] for i in range(12)),
                        "all spheres shown again", 5)
        result["points_per_sphere"] = [len(dpg.get_value(T.sphere_loss(i))[0]) for i in range(12)]
        result["ring_items"] = len(dpg.get_item_children(T.RING, 2) or [])

        click(T.SCREENSHOT)
        yield from wait(lambda: bool(app.screenshots_taken), "screenshot saved")
        result["screenshot"] = str(app.screenshots_taken[-1])

        click(T.STOP)
        yield from wait(lambda: not app.session.active, "stopped")
        result["final_step"] = step()
        result["phase"] = app.session.phase.value
        result["start_enabled_after_stop"] = enabled(T.START)
        result["stopped_checkpoint_step"] = app.session.latest_checkpoint().step

        # load that checkpoint and continue it from the dashboard
        click(T.LOAD)
        yield from wait(lambda: app.loaded is not None and "Continue from step" in
                        dpg.get_item_configuration(T.START)["label"], "checkpoint loaded")
        result["continue_label"] = dpg.get_item_configuration(T.START)["label"]
        yield from frames(2)
        result["start_label_fits"] = [dpg.get_text_size(result["continue_label"])[0],
                                      dpg.get_item_rect_size(T.START)[0]]
        click(T.START)
        # the view-model polls the trainer once per frame: wait for its history too, not
        # only for the trainer's step (on an idle machine 10 tiny steps fit inside a frame)
        yield from wait(lambda: app.session.active and step() >= result["final_step"] + 10
                        and bool(app.vm.history.series("loss")[0]), "continued")
        result["continued_first_record"] = app.vm.history.series("loss")[0][0]
        click(T.STOP)
        yield from wait(lambda: not app.session.active, "stopped again")
        result["continued_to"] = step()

        # Start again into that folder: it holds a run, so the dashboard asks first
        metrics, lines = run / "metrics.jsonl", line_count(run / "metrics.jsonl")
        click(T.START)
        yield from wait(lambda: dpg.get_item_configuration(T.RUN_DIALOG)["show"], "asked before overwriting")
        result["dialog_text"] = dpg.get_value(T.RUN_DIALOG_TEXT)
        result["dialog_new_label"] = dpg.get_item_configuration(T.DIALOG_NEW)["label"]
        yield from frames(3)
        app.request_screenshot(work / "dialog.png")
        yield from wait(lambda: bool(app.screenshots_taken) and app.screenshots_taken[-1] == work / "dialog.png",
                        "dialog screenshot")
        click(T.DIALOG_CANCEL)
        yield from frames(3)
        result["after_cancel"] = [app.session.active, line_count(metrics) == lines, status()]
        click(T.START)
        yield from wait(lambda: dpg.get_item_configuration(T.RUN_DIALOG)["show"], "asked again")
        click(T.DIALOG_NEW)  # a fresh folder next to it
        yield from wait(lambda: app.session.active and step() >= 5, "trained in a new folder")
        result["new_folder"] = dpg.get_value(T.RUN_DIR)
        click(T.STOP)
        yield from wait(lambda: not app.session.active, "stopped in the new folder")
        result["old_run_kept"] = line_count(metrics) == lines
        # run-2 holds a run now: start it over, from step 0, when the user says so
        second_metrics = Path(result["new_folder"]) / "metrics.jsonl"
        click(T.START)
        yield from wait(lambda: dpg.get_item_configuration(T.RUN_DIALOG)["show"], "asked about run-2")
        click(T.DIALOG_OVERWRITE)
        yield from wait(lambda: app.session.active and step() >= 3 and bool(app.vm.history.series("loss")[0]),
                        "started over")
        click(T.STOP)
        yield from wait(lambda: not app.session.active, "stopped the restarted run")
        result["started_over"] = [logged_steps(second_metrics), step(), app.vm.history.series("loss")[0][0]]
        dpg.set_value(T.RUN_DIR, str(run))
        click(T.RUN_DIR)
        click(T.START)
        yield from wait(lambda: dpg.get_item_configuration(T.RUN_DIALOG)["show"], "asked a third time")
        click(T.DIALOG_CONTINUE)  # loads run/checkpoint and continues it
        yield from wait(lambda: app.session.active and step() >= result["continued_to"] + 5
                        and bool(app.vm.history.series("loss")[0]), "continued from the dialog")
        result["dialog_continued_from"] = app.vm.history.series("loss")[0][0]
        click(T.STOP)
        yield from wait(lambda: not app.session.active, "stopped a third time")
        result["final_continued_to"] = step()
        app.request_close()

    steps = script()
    last_prompt = {"text": ""}
    original_render = dpg.render_dearpygui_frame

    def render_and_watch_the_prompt() -> None:
        """A typed key shows in the frame that processed it: note when, right after drawing it."""
        original_render()
        text = dpg.get_value(T.PROMPT) or ""
        if typed.get("prompt_at") and text != last_prompt["text"] and len(text) > len(last_prompt["text"]):
            typed["seen"].append(time.monotonic())
            typed["pacer_active"].append(app.pacer.active(time.monotonic()))
        last_prompt["text"] = text

    dpg.render_dearpygui_frame = render_and_watch_the_prompt

    def hook(now: float) -> None:
        try:
            next(steps)
        except StopIteration:
            pass

    app.frame_hooks.append(hook)
    app.setup()
    started = time.monotonic()
    try:
        result["exit_code"] = app.run()
    except Exception as error:  # reported to the test, which prints it
        result["error"] = f"{type(error).__name__}: {error}"
    result["seconds"] = time.monotonic() - started
    result["frames"] = app.frames
    (work / "result.json").write_text(json.dumps(result, indent=2))


def close_window(title: str) -> None:
    """Send WM_DELETE_WINDOW to the top-level window called `title`: what a window
    manager does when the user clicks the close button (Xvfb has no window manager)."""
    import ctypes
    import ctypes.util

    x = ctypes.CDLL(ctypes.util.find_library("X11"))
    ptr, ulong = ctypes.c_void_p, ctypes.c_ulong
    x.XOpenDisplay.restype, x.XOpenDisplay.argtypes = ptr, [ctypes.c_char_p]
    x.XDefaultRootWindow.restype, x.XDefaultRootWindow.argtypes = ulong, [ptr]
    x.XInternAtom.restype, x.XInternAtom.argtypes = ulong, [ptr, ctypes.c_char_p, ctypes.c_int]
    x.XQueryTree.argtypes = [ptr, ulong, ctypes.POINTER(ulong), ctypes.POINTER(ulong),
                             ctypes.POINTER(ctypes.POINTER(ulong)), ctypes.POINTER(ctypes.c_uint)]
    x.XFetchName.argtypes = [ptr, ulong, ctypes.POINTER(ctypes.c_char_p)]
    x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ptr]

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ulong), ("send_event", ctypes.c_int), ("display", ptr),
                    ("window", ulong), ("message_type", ulong), ("format", ctypes.c_int),
                    ("data", ctypes.c_long * 5)]

    class Event(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    x.XSendEvent.argtypes = [ptr, ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(Event)]
    display = x.XOpenDisplay(None)

    def find(window: int) -> int:
        name = ctypes.c_char_p()
        if x.XFetchName(display, window, ctypes.byref(name)) and name.value == title.encode():
            return window
        root, parent, children, count = ulong(), ulong(), ctypes.POINTER(ulong)(), ctypes.c_uint()
        x.XQueryTree(display, window, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children),
                     ctypes.byref(count))
        for i in range(count.value):
            found = find(children[i])
            if found:
                return found
        return 0

    window = find(x.XDefaultRootWindow(display))
    assert window, f"no window called {title!r}"
    event = Event()
    event.xclient.type, event.xclient.window, event.xclient.format = 33, window, 32  # 33: ClientMessage
    event.xclient.message_type = x.XInternAtom(display, b"WM_PROTOCOLS", 0)
    event.xclient.data[0] = x.XInternAtom(display, b"WM_DELETE_WINDOW", 0)
    x.XSendEvent(display, window, 0, 0, ctypes.byref(event))
    x.XFlush(display)
    x.XCloseDisplay(display)


def close_while_training(work: Path) -> None:
    """Start the dashboard training, close its window, record how it ended."""
    build_tiny_dataset(work / "data")
    args = ["--autostart", "--preset", "tiny", "--data", str(work / "data"), "--out", str(work / "run"),
            "--batch-size", "24", "--steps", "100000", "--eval-every", "0", "--threads", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "odin_dashboard.main", *args], stderr=subprocess.PIPE, text=True)
    metrics = work / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 40
    while (not metrics.exists() or metrics.read_text().count("\n") < 50) and time.monotonic() < deadline:
        time.sleep(0.2)
    close_window("ODIN dashboard")
    closed_at = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    steps_logged = len(metrics.read_text().splitlines())
    (work / "result.json").write_text(json.dumps({"exit_code": proc.returncode, "stderr": stderr,
                                                  "seconds_to_exit": time.monotonic() - closed_at,
                                                  "steps_logged": steps_logged}))


# ---------------------------------------------------------------------- the tests
@needs_xvfb
@needs_xtest
def test_dashboard_trains_changes_threads_stops_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    from odin.checkpoint import load_model_checkpoint

    proc = subprocess.run(XVFB + [sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                          timeout=240)
    result_file = tmp_path / "result.json"
    assert result_file.exists(), f"the driver wrote no result:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, f"{result['error']}\nevents: {result['events']}\n{proc.stderr}"
    assert proc.returncode == 0 and result["exit_code"] == 0

    assert "does not exist" in result["missing_dataset_status"]
    assert (tmp_path / "no-such-folder" / "dataset.json").is_file()  # built from the dashboard
    assert "checkpoint does not load" in result["bad_checkpoint_status"]
    assert (result["threads_before"], result["threads_after"]) == (1, 2)
    assert result["steps_while_paused"] == 0
    assert result["save_status"].startswith("checkpoint saved at step")
    assert result["transcript"].startswith("> 1+2=") and "\n> 12+34=" in result["transcript"]
    scroll, scroll_max = result["transcript_scroll"]
    assert scroll_max > 0 and scroll == scroll_max  # the newest answer is in view
    assert result["empty_grad_limits"] == pytest.approx([0.1, 10.0])  # not 1 ... 1e-306
    assert result["status_shift"] == 0  # a wrapping status does not push the panel down
    assert result["typed"] == "90817"  # every key typed while training arrived, in order
    # the handler registry saw the input: frames were drawn back to back while typing
    assert len(result["pacer_active_while_typing"]) == 5 and all(result["pacer_active_while_typing"])
    assert result["hover_text"].startswith("step ") and len(result["hover_text"].splitlines()) == 13
    assert result["smoothed_drawn"] and result["smoothed_differs"]
    label_width, button_width = result["start_label_fits"]
    assert label_width + 8 <= button_width  # "Continue from step N" is not clipped
    assert result["visible_loss_series"] == [2]
    assert min(result["points_per_sphere"]) > 10
    assert result["ring_items"] > 12 * 3  # circles, arcs and labels of 12 spheres, the root, the legend
    assert png_size(Path(result["screenshot"])) == (1280, 800)
    assert result["phase"] == "stopped" and result["start_enabled_after_stop"]

    assert result["small_preset"][:2] == [5000, 32] and "3.2" in result["small_preset"][2]
    assert result["stopped_checkpoint_step"] == result["final_step"] > 20  # saved at the step it stopped
    assert result["continue_label"] == f"Continue from step {result['final_step']:,}"
    assert result["continued_first_record"] == result["final_step"] + 1  # resumed, not restarted
    # Start over a folder that holds a run: asked, cancel keeps it, "new folder" trains beside it,
    # "continue it" resumes it exactly where it stopped
    assert "already holds a run (a checkpoint at step" in result["dialog_text"]
    assert result["dialog_new_label"] == f"New folder: {tmp_path / 'run-2'}"
    assert png_size(tmp_path / "dialog.png") == (1280, 800)
    assert result["after_cancel"][:2] == [False, True] and "not started" in result["after_cancel"][2]
    assert result["new_folder"] == str(tmp_path / "run-2") and result["old_run_kept"]
    logged, restarted_to, first_step = result["started_over"]
    assert first_step == 1 and logged == list(range(1, restarted_to + 1))  # from step 0, in a fresh log
    assert load_model_checkpoint(tmp_path / "run-2" / "checkpoint").step == restarted_to
    assert result["dialog_continued_from"] == result["continued_to"] + 1
    checkpoint = load_model_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.step == result["final_continued_to"] > result["continued_to"] > result["final_step"]
    assert checkpoint.run_config.preset == "tiny" and checkpoint.run_config.train.batch_size == 24
    print("typing latency while training (ms):", result["typing_latency_ms"])
    assert result["frames"] / result["seconds"] <= 31  # the frame pacer's cap holds


@needs_xvfb
def test_unattended_run_trains_saves_a_screenshot_and_exits(tmp_path: Path) -> None:
    from odin.checkpoint import load_model_checkpoint

    build_tiny_dataset(tmp_path / "data")
    shot = tmp_path / "shot.png"
    args = ["--autostart", "--exit-after", "6", "--screenshot", str(shot), "--preset", "tiny", "--data",
            str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--batch-size", "24", "--steps", "100000",
            "--eval-every", "50", "--threads", "2"]
    started = time.monotonic()
    proc = subprocess.run(XVFB + [sys.executable, "-m", "odin_dashboard.main", *args], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60
    assert png_size(shot) == (1280, 800) and f"screenshot saved to {shot}" in proc.stderr
    assert load_model_checkpoint(tmp_path / "run" / "checkpoint").step > 0  # closing kept the checkpoint


@needs_xvfb
def test_autostart_into_a_run_folder_that_holds_a_run_trains_beside_it(tmp_path: Path) -> None:
    """Unattended, nobody can answer the run dialog: the run is kept and a fresh folder is used."""
    from odin.checkpoint import load_model_checkpoint

    build_tiny_dataset(tmp_path / "data")
    entry_point = Path(sys.executable).with_name("odin-dashboard")  # the installed command
    args = ["--autostart", "--exit-after", "4", "--preset", "tiny", "--data", str(tmp_path / "data"), "--out",
            str(tmp_path / "run"), "--batch-size", "24", "--steps", "100000", "--eval-every", "0", "--threads", "2"]
    first = subprocess.run(XVFB + [str(entry_point), *args], capture_output=True, text=True, timeout=90)
    assert first.returncode == 0, first.stderr
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    step = load_model_checkpoint(tmp_path / "run" / "checkpoint").step
    second = subprocess.run(XVFB + [str(entry_point), *args], capture_output=True, text=True, timeout=90)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics  # the first run is untouched
    assert load_model_checkpoint(tmp_path / "run" / "checkpoint").step == step
    assert load_model_checkpoint(tmp_path / "run-2" / "checkpoint").step > 0  # trained beside it


@needs_xvfb
def test_autostart_with_a_missing_dataset_is_reported_with_status_2(tmp_path: Path) -> None:
    args = ["--autostart", "--exit-after", "2", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]
    proc = subprocess.run(XVFB + [sys.executable, "-m", "odin_dashboard.main", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "run" / "checkpoint").exists()


@needs_xvfb
def test_closing_the_window_stops_training_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    from odin.checkpoint import load_model_checkpoint

    proc = subprocess.run(XVFB + [sys.executable, __file__, "--close", str(tmp_path)], capture_output=True,
                          text=True, timeout=90)
    assert (tmp_path / "result.json").exists(), proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["exit_code"] == 0, result["stderr"]
    assert result["seconds_to_exit"] < 20
    checkpoint = load_model_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.step == result["steps_logged"] >= 50  # saved at the very step training stopped


if __name__ == "__main__":
    if sys.argv[1] == "--close":
        close_while_training(Path(sys.argv[2]))
    else:
        drive(Path(sys.argv[1]))
