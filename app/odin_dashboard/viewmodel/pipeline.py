"""What the pipeline panel shows, read from `pipeline.db` in the chosen data folder.

The schema (documented in docs/dashboard.md; the pipeline writes it) is one row per item,
holding the stage it is in and its status there::

    CREATE TABLE items(hash TEXT PRIMARY KEY, stage TEXT, status TEXT,
                       name TEXT, error TEXT, updated REAL);

status is one of pending / running / done / failed (will be retried) / quarantined.
The database is opened read-only with a short timeout, so a pipeline writing to it is
never blocked, and any problem with the file becomes a message, never an exception.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

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
class PipelineView:
    running: bool  # a pipeline.db was found and read
    message: str
    stages: list[StageCounts] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)  # "name (stage)"
    quarantine: list[QuarantinedItem] = field(default_factory=list)
    quarantine_total: int = 0


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
    )
