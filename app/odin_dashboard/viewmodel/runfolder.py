"""What a run folder already holds, and what the dashboard may do with it (no GUI import).

*Start* trains into `<run folder>`: a fresh start writes `metrics.jsonl` from scratch and
replaces `checkpoint/`. A folder that holds a run already must never be overwritten
without the user saying so: the dashboard asks (continue it / start over / a new folder /
cancel), and unattended starts (`--autostart`) take a fresh folder name instead.
What counts as a run is `odin train`'s rule (odin.runlock.existing_run: a `checkpoint/` or
a non-empty `metrics.jsonl`; it refuses such a folder without --resume or --overwrite);
this module adds what the dialog shows (the step, the log's length) and the new name.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class ExistingRun:
    folder: Path
    has_checkpoint: bool
    checkpoint_step: Optional[int]  # None: no checkpoint, or its step could not be read
    metrics_lines: int
    total_steps: Optional[int] = None  # the run's planned steps (its config.json)

    @property
    def continue_problem(self) -> Optional[str]:
        """Why *Continue it* cannot work for this run, or None."""
        if not self.has_checkpoint:
            return "there is no checkpoint to continue"
        if self.checkpoint_step is None:
            return "its checkpoint cannot be read"
        if self.total_steps is not None and self.checkpoint_step >= self.total_steps:
            return f"it finished (step {self.checkpoint_step:,} of {self.total_steps:,}): nothing is left to train"
        return None

    def describe(self) -> str:
        parts = []
        if self.has_checkpoint:
            parts.append(f"a checkpoint at step {self.checkpoint_step:,}" if self.checkpoint_step is not None
                         else "a checkpoint")
        if self.metrics_lines:
            parts.append(f"{self.metrics_lines:,} lines of metrics.jsonl")
        return f"{self.folder} already holds a run ({' and '.join(parts)})"


def existing_run(folder: str | os.PathLike[str]) -> Optional[ExistingRun]:
    """The run in `folder` that a fresh start would overwrite, or None when there is none.
    What counts as a run is odin train's rule (odin.runlock.existing_run), so the dashboard
    asks exactly when `odin train` would refuse."""
    from odin.runlock import existing_run as holds_a_run

    path = Path(folder)
    if holds_a_run(path) is None:
        return None
    checkpoint = path / CHECKPOINT_DIR
    has_checkpoint = checkpoint.exists()
    lines = 0
    try:
        with open(path / METRICS_FILE, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                lines += block.count(b"\n")
    except OSError:
        pass
    step = total = None
    if has_checkpoint:
        from odin.checkpoint_io import CheckpointError, read_progress

        try:
            step, _ = read_progress(checkpoint)
        except (CheckpointError, OSError, ValueError):
            step = None
        try:
            total = int(json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))["train"]["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            total = None
    return ExistingRun(path, has_checkpoint, step, lines, total)


def fresh_run_dir(folder: str | os.PathLike[str]) -> Path:
    """`folder` itself when it holds no run, else the first of folder-2, folder-3, ... that
    neither exists nor holds a run."""
    path = Path(folder)
    if existing_run(path) is None:
        return path
    base, n = path.name, 2
    stem = base.rsplit("-", 1)[0] if base.rsplit("-", 1)[-1].isdigit() and "-" in base else base
    while True:
        candidate = path.with_name(f"{stem}-{n}")
        if not candidate.exists():
            return candidate
        n += 1


def continue_problem(loaded: Any) -> Optional[str]:
    """Why the dashboard cannot continue training `loaded` (an odin.checkpoint.LoadedModel),
    or None when it can: it trains char-tokenizer models on reasoning sets and resumes them
    exactly, which needs the optimizer moments and the batch sampler's position."""
    from odin.tokenizers import CharTokenizer

    if loaded.model.is_quantized:
        return (f"its weights are quantized as {loaded.model.weights.describe()}: it answers but cannot train; "
                f"continue the float32 checkpoint it was made from")
    if not isinstance(loaded.tokenizer, CharTokenizer):
        return ("this model uses a BPE tokenizer (an odin-pipeline model): the pipeline continues it "
                "(odin-pipeline run FOLDER); here you can ask it questions")
    if not loaded.optimizer_saved or "sampler" not in loaded.trainer_state:
        return "this checkpoint has no optimizer or sampler state (an export): it cannot be continued exactly"
    total = loaded.run_config.train.steps
    if loaded.step >= total:  # a resumed run keeps its own settings, steps included
        return f"this run finished (step {loaded.step:,} of {total:,}): nothing is left to train"
    return None


def final_test_score(folder: str | os.PathLike[str]) -> Optional[tuple[int, float]]:
    """(step, exact match) of the last final test evaluation in `folder/metrics.jsonl`
    (a record with "split": "test"), or None when there is none."""
    found: Optional[tuple[int, float]] = None
    try:
        with open(Path(folder) / METRICS_FILE, "rb") as handle:
            for line in handle:
                if b'"split"' not in line:
                    continue
                score = test_score_of(_json_or_none(line))
                if score is not None:
                    found = score
    except OSError:
        return None
    return found


def test_score_of(record: Any) -> Optional[tuple[int, float]]:
    """(step, exact) when `record` is a final test evaluation record."""
    if not isinstance(record, dict) or record.get("split") != "test":
        return None
    try:
        return int(record["step"]), float(record["exact"])
    except (KeyError, TypeError, ValueError):
        return None


def _json_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None
