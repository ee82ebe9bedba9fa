"""One training run driven from the dashboard, in a background Python thread.

`odin.train.train` runs in a worker thread and hands us its SpheresTrainer through
`on_trainer`; a training step is one C call with the GIL released, so the GUI thread
keeps rendering while the 12 spheres train. Everything the dashboard needs (snapshot,
new history records, new evaluation records, checkpoint state, control) goes through
this class, which imports no GUI: the tests drive it directly.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

from odin.checkpoint_io import OPTIMIZER_FILE, CheckpointError, read_progress
from odin.config import RunConfig
from odin.native import OdinError
from odin.spheres import Snapshot, SpheresTrainer, StepRecord
from odin_dashboard.priority import lower_this_thread_priority

TrainFn = Callable[..., Any]


class Phase(str, Enum):
    IDLE = "idle"
    PREPARING = "preparing"  # loading data, building the model
    TRAINING = "training"
    FINISHING = "finishing"  # final checkpoint / evaluation
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE_PHASES = (Phase.PREPARING, Phase.TRAINING, Phase.FINISHING)


@dataclass(frozen=True)
class StartRequest:
    run_config: RunConfig
    data_dir: Path
    out_dir: Path
    threads: int
    resume: bool = False
    overwrite: bool = False  # the user chose to start the run in out_dir over
    final_eval_examples: int = 500  # test examples scored with the final weights (0: none)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    saved_at: float  # file mtime


class TrainingSession:
    def __init__(self, train_fn: Optional[TrainFn] = None, lower_priority: bool = True) -> None:
        if train_fn is None:
            from odin.train import train as train_fn
        self._train_fn = train_fn
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.phase = Phase.IDLE
        self.error: Optional[str] = None
        self.request: Optional[StartRequest] = None
        self.trainer: Optional[SpheresTrainer] = None
        self.final_exact: Optional[float] = None
        self.result: Any = None
        self.started_at = 0.0
        self.started_wall = 0.0
        self.finished_at: Optional[float] = None
        self._stop_requested = False
        self._pause_requested = False
        self._pending_threads: Optional[int] = None
        self._history_since = 0
        self._metrics_offset = 0
        self._metrics_ready = False
        self._ckpt_seen: Optional[tuple[float, CheckpointInfo]] = None
        # the training thread and its workers run at a higher nice value than the window
        self._lower_priority = lower_priority
        self.lowered_priority = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pause_requested(self) -> bool:
        return self._pause_requested

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def start(self, request: StartRequest) -> None:
        if self.active:
            raise RuntimeError("a training run is already in progress")
        self.request = request
        self.phase, self.error, self.trainer, self.final_exact, self.result = Phase.PREPARING, None, None, None, None
        self._stop_requested = self._pause_requested = False
        self._pending_threads = None
        self._history_since = 0
        self._metrics_offset, self._metrics_ready = 0, False
        self._ckpt_seen = None
        self.started_at, self.finished_at = time.monotonic(), None
        self.started_wall = time.time()
        self._thread = threading.Thread(target=self._run, args=(request,), name="odin-dashboard-train", daemon=True)
        self._thread.start()

    def _attach(self, trainer: SpheresTrainer) -> None:
        """Called by train() with its trainer, after metrics.jsonl was (re)started."""
        with self._lock:
            self.trainer = trainer
            self._history_since = trainer.snapshot().step
            self._metrics_ready = True
            self.phase = Phase.TRAINING
            # requests made while the data was loading
            if self._pending_threads is not None:
                trainer.set_threads(self._pending_threads)
            if self._pause_requested:
                trainer.pause()
            if self._stop_requested:
                trainer.stop()

    def _run(self, request: StartRequest) -> None:
        # before the trainer spawns its workers from this thread, so that they inherit it
        self.lowered_priority = self._lower_priority and lower_this_thread_priority()
        try:
            options: dict[str, Any] = {"overwrite": True} if request.overwrite else {}
            self.result = self._train_fn(
                request.run_config, request.data_dir, request.out_dir, resume=request.resume,
                threads=request.threads, progress=False, final_eval_splits=(), on_trainer=self._attach, **options)
            self.phase = Phase.FINISHING
            # scored here rather than inside train(): a run the user stopped (or a closed
            # window) must not wait for the evaluation of a large model
            if not self._stop_requested and request.final_eval_examples > 0:
                self.final_exact = self._final_eval(request)
            self.phase = Phase.STOPPED if self._stop_requested else Phase.FINISHED
        except OdinError as error:  # NaN/Inf or out of memory inside the engine
            self.error, self.phase = f"training stopped by the engine: {error}", Phase.FAILED
        except Exception as error:  # bad data, config, checkpoint: shown, never raised in the GUI
            self.error, self.phase = f"{type(error).__name__}: {error}", Phase.FAILED
        finally:
            self.finished_at = time.monotonic()

    def _final_eval(self, request: StartRequest) -> Optional[float]:
        """Exact match on the test split with the final weights (the trainer is idle now),
        appended to metrics.jsonl as odin train records it ({"kind": "final_eval", "split":
        "test", "exact", ...}), so the run folder keeps its score."""
        from odin.data.dataset import load_manifest, load_split
        from odin.evaluate import eval_options, evaluate_examples
        from odin.tokenizers import CharTokenizer

        if self.trainer is None:
            return None
        try:
            examples = load_split(request.data_dir, "test")[: request.final_eval_examples]
        except FileNotFoundError:
            return None
        if not examples:
            return None
        scored = evaluate_examples(self.trainer.model, CharTokenizer(), examples,
                                   **eval_options(load_manifest(request.data_dir)))

        def number(value: float) -> Optional[float]:
            return value if math.isfinite(value) else None  # JSON has no NaN

        record = {"kind": "final_eval", "step": self.trainer.snapshot().step, "split": "test", "n": scored.n,
                  "correct": scored.correct, "exact": number(scored.exact),
                  "token_accuracy": number(scored.token_accuracy)}
        with open(request.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")  # one write: a whole line
        return scored.exact

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the training thread; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.active

    # ------------------------------------------------------------------ control (GUI thread)
    def pause(self) -> None:
        with self._lock:
            self._pause_requested = True
            if self.trainer is not None:
                self.trainer.pause()

    def resume(self) -> None:
        with self._lock:
            self._pause_requested = False
            if self.trainer is not None:
                self.trainer.resume()

    def stop(self) -> None:
        """Stop at the next step boundary; train() then writes the checkpoint and returns."""
        with self._lock:
            if not self.active:
                return
            self._stop_requested = True
            if self.trainer is not None:
                self.trainer.stop()

    def set_threads(self, threads: int) -> None:
        with self._lock:
            if self.trainer is not None:
                self.trainer.set_threads(int(threads))
            else:  # still loading the data: applied when the trainer exists
                self._pending_threads = int(threads)

    def request_checkpoint(self) -> bool:
        """Ask for a checkpoint at the next step boundary; False when not training."""
        with self._lock:
            if self.trainer is None or not self.active:
                return False
            self.trainer.request_checkpoint()
            return True

    # ------------------------------------------------------------------ state (GUI thread)
    def snapshot(self) -> Optional[Snapshot]:
        trainer = self.trainer
        return trainer.snapshot() if trainer is not None else None

    def new_records(self, chunk: int = 512) -> list[StepRecord]:
        """History records since the previous call (the C ring keeps the last 8192 steps)."""
        trainer = self.trainer
        if trainer is None:
            return []
        records: list[StepRecord] = []
        while True:
            batch = trainer.history(since_step=self._history_since, limit=chunk)
            if not batch:
                return records
            records.extend(batch)
            self._history_since = batch[-1].step
            if len(batch) < chunk:
                return records

    def new_evals(self) -> list[dict[str, Any]]:
        """Evaluation records appended to metrics.jsonl since the previous call: periodic
        ({"step", "val_loss", "val_exact"}) and final ({"step", "split", "exact"}); only
        whole lines are consumed."""
        if not self._metrics_ready or self.request is None:
            return []
        path = self.request.out_dir / "metrics.jsonl"
        try:
            with open(path, "rb") as handle:
                handle.seek(self._metrics_offset)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._metrics_offset += end + 1
        evals = []
        for line in data[: end + 1].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and ("val_loss" in record or "split" in record):
                evals.append(record)
        return evals

    @property
    def checkpoint_dir(self) -> Optional[Path]:
        return self.request.out_dir / "checkpoint" if self.request is not None else None

    def latest_checkpoint(self) -> Optional[CheckpointInfo]:
        """The checkpoint this run wrote (step read from the optimizer file's header); one
        left in the run folder by an earlier run does not count."""
        if self.checkpoint_dir is None:
            return None
        info = read_checkpoint_info(self.checkpoint_dir, self)
        return info if info is not None and info.saved_at >= self.started_wall - 1.0 else None

    def elapsed(self, now: Optional[float] = None) -> float:
        if self.started_at == 0.0:
            return 0.0
        end = self.finished_at if self.finished_at is not None else (now or time.monotonic())
        return max(0.0, end - self.started_at)


def read_checkpoint_info(folder: Path, cache_owner: Any = None) -> Optional[CheckpointInfo]:
    """Step and save time of a checkpoint folder, or None when it has no optimizer file.

    Only the safetensors header is read, and only when the file changed since the last
    call for the same owner, so polling this every second costs one stat()."""
    optimizer = Path(folder) / OPTIMIZER_FILE
    try:
        mtime = optimizer.stat().st_mtime
    except OSError:
        return None
    cached = getattr(cache_owner, "_ckpt_seen", None)
    if cached is not None and cached[0] == mtime and cached[1].path == Path(folder):
        return cached[1]
    try:
        step, _ = read_progress(folder)
    except CheckpointError:  # a checkpoint being swapped in right now: try again next poll
        return None
    info = CheckpointInfo(Path(folder), step, mtime)
    if cache_owner is not None:
        cache_owner._ckpt_seen = (mtime, info)
    return info
