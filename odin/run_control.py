"""How a training run stops and what it may write to: SIGINT and SIGTERM stop the trainer at
a step boundary so the checkpoint is saved (then :class:`TrainingInterrupted`, exit 130 /
143), and a progress stream whose reader went away goes quiet instead of failing the run.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Optional, TextIO

from odin.spheres import SpheresTrainer


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended train(); ``exit_status`` is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class StopSignals:
    """SIGINT and SIGTERM during train(). While the trainer runs they ask it to stop at the next
    step boundary (the C call in flight finishes first), so the loop ends normally and the
    checkpoint is saved; before the trainer exists, or once the final checkpoint is saved, they
    interrupt at once (nothing to save, or saved already). Handlers only exist in the main
    thread (a GUI runs train() in a worker thread and stops it through the trainer)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.trainer: Optional[SpheresTrainer] = None
        self.saved_note = ""
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self.trainer is not None:
            self.trainer.stop()
        else:
            raise self.interrupted(self.saved_note or "nothing was trained yet")

    def interrupted(self, note: str) -> TrainingInterrupted:
        signum = self.signum or signal.SIGINT
        return TrainingInterrupted(signum, f"{signal.Signals(signum).name}: {note}")

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class QuietWhenClosed:
    """A progress stream that goes quiet when its reader is gone (`odin train | head`, or a
    `tee` killed by the same Ctrl-C): a write to a closed pipe must never cost the checkpoint."""

    def __init__(self, stream: TextIO) -> None:
        self._stream: Optional[TextIO] = stream
        self.encoding = getattr(stream, "encoding", None)

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def write(self, text: str) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write(text)
        except (OSError, ValueError):  # EPIPE, or the stream was closed
            self._stream = None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._stream = None
