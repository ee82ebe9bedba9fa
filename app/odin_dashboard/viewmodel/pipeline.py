"""What the pipeline panel shows, read from `pipeline.db` in the chosen data folder.

The schema (documented in docs/dashboard.md; the pipeline writes it) is one row per item,
holding the stage it is in and its status there::

    CREATE TABLE items(hash TEXT PRIMARY KEY, stage TEXT, status TEXT,
                       name TEXT, error TEXT, updated REAL);

status is one of pending / running / done / failed (will be retried) / quarantined.
When the database also has the pipeline's ``shards`` table (odin-pipeline writes it; see
docs/pipeline.md), the panel adds the training side: shards trained, the step, the corpus
tokens trained and the validation loss (first and last). The database is opened read-only
with a short timeout, so a pipeline writing to it is never blocked, and any problem with
the file becomes a message, never an exception.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

PIPELINE_DB = "pipeline.db"
KNOWN_STAGES: tuple[str, ...] = ("crawl", "preprocess", "tokenize", "train")
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "quarantined")


@dataclass(frozen=True)
class StageCounts:
    stage: str
    counts: dict[str, int]  # status -> items

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class QuarantinedItem:
    name: str
    stage: str
    error: str


@dataclass(frozen=True)
class TrainingSummary:
    shards_trained: int
    shards_total: int
    step: int
    tokens_trained: int  # corpus tokens in the trained shards
    first_val_loss: Optional[float]
    last_val_loss: Optional[float]

    def line(self) -> str:
        text = (f"training: {self.shards_trained}/{self.shards_total} shards, step {self.step:,}, "
                f"{self.tokens_trained:,} tokens")
        if self.last_val_loss is not None:
            text += f", val loss {self.last_val_loss:.3f}"
            if self.first_val_loss is not None and self.shards_trained > 1:
                text += f" (first shard {self.first_val_loss:.3f})"
        return text


@dataclass(frozen=True)
class PipelineView:
    running: bool  # a pipeline.db was found and read
    message: str
    stages: list[StageCounts] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)  # "name (stage)"
    quarantine: list[QuarantinedItem] = field(default_factory=list)
    quarantine_total: int = 0
    training: Optional[TrainingSummary] = None  # None: no shards table (yet)


NO_PIPELINE = PipelineView(False, "no pipeline running")


def _stage_order(stage: str) -> tuple[int, str]:
    return (KNOWN_STAGES.index(stage), "") if stage in KNOWN_STAGES else (len(KNOWN_STAGES), stage)


def read_pipeline_state(folder: str | Path | None, *, max_listed: int = 8) -> PipelineView:
    """The pipeline's state from `folder/pipeline.db`, or NO_PIPELINE when there is none."""
    if not folder:
        return NO_PIPELINE
    db_path = Path(folder) / PIPELINE_DB
    if not db_path.is_file():
        return NO_PIPELINE
    try:
        uri = db_path.resolve().as_uri() + "?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=0.2) as connection:
            rows = connection.execute(
                "SELECT stage, status, COUNT(*) FROM items GROUP BY stage, status").fetchall()
            running = connection.execute(
                "SELECT name, stage FROM items WHERE status = 'running' ORDER BY updated DESC LIMIT ?",
                (max_listed,)).fetchall()
            quarantined = connection.execute(
                "SELECT name, stage, error FROM items WHERE status = 'quarantined' "
                "ORDER BY updated DESC LIMIT ?", (max_listed,)).fetchall()
            (quarantine_total,) = connection.execute(
                "SELECT COUNT(*) FROM items WHERE status = 'quarantined'").fetchone()
            training = _training_summary(connection)
    except sqlite3.Error as error:  # locked, corrupt, not a database, no items table
        return PipelineView(False, f"pipeline.db unreadable: {error}")
    by_stage: dict[str, dict[str, int]] = {}
    for stage, status, count in rows:
        by_stage.setdefault(str(stage or "?"), {})[str(status or "?")] = int(count)
    stages = [StageCounts(stage, by_stage[stage]) for stage in sorted(by_stage, key=_stage_order)]
    items = sum(s.total for s in stages)
    message = (f"pipeline: {items} item{'s' if items != 1 else ''} in "
               f"{len(stages)} stage{'s' if len(stages) != 1 else ''}")
    return PipelineView(
        running=True, message=message, stages=stages,
        in_progress=[f"{name or '?'} ({stage})" for name, stage in running],
        quarantine=[QuarantinedItem(str(name or "?"), str(stage or "?"), str(error or ""))
                    for name, stage, error in quarantined],
        quarantine_total=int(quarantine_total),
        training=training,
    )


def _training_summary(connection: sqlite3.Connection) -> Optional[TrainingSummary]:
    """From the pipeline's shards table; None when the database has none (yet)."""
    has_shards = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shards'").fetchone()
    if not has_shards:
        return None
    total, trained, tokens, step = connection.execute(
        "SELECT COUNT(*), SUM(status = 'trained'), SUM(CASE WHEN status = 'trained' THEN tokens END), "
        "MAX(CASE WHEN status = 'trained' THEN step_end END) FROM shards").fetchone()
    losses = connection.execute(
        "SELECT val_loss FROM shards WHERE status = 'trained' AND val_loss IS NOT NULL ORDER BY seq").fetchall()
    return TrainingSummary(int(trained or 0), int(total or 0), int(step or 0), int(tokens or 0),
                           float(losses[0][0]) if losses else None, float(losses[-1][0]) if losses else None)
