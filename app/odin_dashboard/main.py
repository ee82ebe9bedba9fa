"""`odin-dashboard`: the desktop training dashboard (Dear PyGui).

    odin-dashboard [--preset P] [--data DIR] [--out DIR] [--threads N] [--lr X]
                   [--batch-size N] [--steps N] [--eval-every N] [--checkpoint DIR]
                   [--autostart] [--exit-after SECONDS] [--screenshot FILE] [--ask PROMPT] [--fps 30]

Unattended: `--autostart --exit-after 60 --screenshot out.png` trains, saves the window as
a PNG just before closing it, stops training cleanly (the checkpoint is kept) and exits.
Exit status: 0; 1 when training failed (NaN, out of memory) or the --screenshot could not
be written; 2 for usage errors, no
display, or an --autostart that could not start (e.g. a dataset folder that does not exist).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # the GUI modules import dearpygui; main must not, before the display check
    from odin_dashboard.gui.app import AppOptions

PROG = "odin-dashboard"
EXIT_USAGE = 2

HEADLESS_HINT = (
    "run it under a virtual display:  xvfb-run -a -s \"-screen 0 1280x800x24\" odin-dashboard "
    "--autostart --exit-after 120 --screenshot dashboard.png\n"
    "or train without a window:       odin train --preset arith-3digit --data data/arith-3digit"
)


def display_problem() -> Optional[str]:
    """Why no window can be opened here, or None. Dear PyGui aborts the whole process when
    GLFW finds no display, so this is checked before it is touched."""
    if not sys.platform.startswith("linux"):
        return None  # Windows and macOS always have a desktop session for a GUI process
    display = os.environ.get("DISPLAY")
    if not display:
        return "no display: DISPLAY is not set (this looks like a headless machine or an SSH session)"
    library = ctypes.util.find_library("X11")
    if library is None:
        return "no display: libX11 is not installed"
    try:
        xlib = ctypes.CDLL(library)
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        handle = xlib.XOpenDisplay(display.encode())
    except (OSError, AttributeError) as error:
        return f"no display: cannot use libX11 ({error})"
    if not handle:
        return f"no display: cannot open the X display {display!r}"
    xlib.XCloseDisplay(handle)
    return None


def build_parser() -> argparse.ArgumentParser:
    from odin_dashboard.viewmodel.forms import DEFAULT_DATA_DIR, DEFAULT_PRESET, DEFAULT_RUN_DIR

    p = argparse.ArgumentParser(prog=PROG, description="ODIN desktop training dashboard (Dear PyGui).")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"model preset (default {DEFAULT_PRESET})")
    p.add_argument("--data", default=None,
                   help=f"dataset folder (default: data/<preset> for a preset that names its dataset, "
                        f"else {DEFAULT_DATA_DIR})")
    p.add_argument("--out", default=DEFAULT_RUN_DIR, help=f"run folder (default {DEFAULT_RUN_DIR})")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="load this checkpoint at start")
    p.add_argument("--autostart", action="store_true", help="start training as soon as the window opens")
    p.add_argument("--exit-after", type=float, default=None, metavar="SECONDS",
                   help="close the window after SECONDS (stopping training cleanly)")
    p.add_argument("--screenshot", default=None, metavar="FILE", help="save the window as PNG before closing")
    p.add_argument("--ask", default=None, metavar="PROMPT",
                   help="with --exit-after: ask the model PROMPT 3 s before closing (shows up in the screenshot)")
    p.add_argument("--fps", type=float, default=30.0, help="frame limit (default 30)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=800)
    return p


def options_from_args(args: argparse.Namespace) -> "AppOptions":
    from odin_dashboard.gui.app import AppOptions
    from odin_dashboard.viewmodel.forms import TrainForm, form_with_preset

    form = form_with_preset(TrainForm(run_dir=args.out), args.preset)
    given = (("data_dir", args.data), ("threads", args.threads), ("lr", args.lr),
             ("batch_size", args.batch_size), ("steps", args.steps), ("eval_every", args.eval_every))
    form = dataclasses.replace(form, **{name: value for name, value in given if value is not None})
    return AppOptions(form=form, width=args.width, height=args.height, fps=args.fps, autostart=args.autostart,
                      exit_after=args.exit_after, screenshot=Path(args.screenshot) if args.screenshot else None,
                      checkpoint=Path(args.checkpoint) if args.checkpoint else None, ask=args.ask)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from odin.errors import native_load_error

    isa_problem = native_load_error()  # before build_parser, whose imports load the library
    if isa_problem:  # a bad ODIN_ISA: one line, not a traceback
        print(f"{PROG}: {isa_problem}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    from odin.config import PRESETS

    if args.preset not in PRESETS:
        parser.error(f"unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
    if args.exit_after is not None and args.exit_after <= 0:
        parser.error("--exit-after must be > 0 seconds")
    if args.screenshot and args.exit_after is None:
        parser.error("--screenshot needs --exit-after (or use the 'Save screenshot' button)")
    problem = display_problem()
    if problem:
        print(f"{PROG}: {problem}\n{HEADLESS_HINT}", file=sys.stderr)
        return EXIT_USAGE
    from odin_dashboard.gui.app import DashboardApp

    app = DashboardApp(options_from_args(args))
    try:
        app.setup()
    except Exception as error:  # a viewport that cannot be created is reported, not a traceback
        print(f"{PROG}: cannot open the window: {error}\n{HEADLESS_HINT}", file=sys.stderr)
        return EXIT_USAGE
    # `kill` (SIGTERM) and Ctrl-C close the window like its close button: training stops
    # at the next step and the checkpoint is written; a second Ctrl-C interrupts for real
    def close(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and app.closing:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        app.request_close()

    signal.signal(signal.SIGTERM, close)
    signal.signal(signal.SIGINT, close)
    code = app.run()
    for path in app.screenshots_taken:
        print(f"{PROG}: screenshot saved to {path}", file=sys.stderr)
    if app.session.error:
        print(f"{PROG}: {app.session.error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
