"""What the pipeline tells people: notification lines, the live status line, `status`.

* :class:`Console` writes one notification line per stage completion and per error (also
  appended to ``pipeline.log``) and keeps a status line at the bottom: rewritten in place
  with ``\\r`` on a terminal, a plain line every ``plain_every`` seconds otherwise.
* :func:`printable` escapes what a name, a URL or a reason could smuggle into a line (new
  lines, terminal escape codes, bidirectional overrides, undecodable bytes): every line
  written to the console or ``pipeline.log`` goes through it, so a file called
  ``"a\\n12:00:00 train ✓ ..."`` or ``"\\x1b]0;...\\x07"`` is shown, not obeyed.
* :func:`collect_status` reads pipeline.db read-only (works while the pipeline runs) into
  the dict that ``odin-pipeline status --json`` prints; :func:`format_status` is the text form.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Optional, TextIO

from odin.pipeline.store import STAGES, Store
from odin.runlock import folder_in_use

MARKS = {"info": ("✓", "ok"), "error": ("✗", "ERR"), "warn": ("!", "!")}

# control characters (C0, C1, DEL), format characters (bidirectional overrides, zero-width
# joiners), lone surrogates (undecodable bytes of a file name), unassigned code points and
# the Unicode line and paragraph separators
_ESCAPED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Cn", "Zl", "Zp"))
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` as one harmless line: each character that could end the line, move the
    cursor, recolour or retitle a terminal, or reorder what is shown, becomes a visible
    escape (``\\n``, ``\\x1b``, ``\\u202e``; a byte that was not valid UTF-8 in a file
    name, which Python carries as a lone surrogate, becomes ``\\xNN``)."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif unicodedata.category(char) not in _ESCAPED_CATEGORIES:
            out.append(char)
        else:
            code = ord(char)
            if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of the byte code - 0xDC00
                code -= 0xDC00
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
    return "".join(out)


class Console:
    """Thread-safe output: notifications above, one status line below."""

    def __init__(self, stream: TextIO = sys.stderr, log_path: Optional[Path] = None, *,
                 quiet: bool = False, plain_every: float = 10.0) -> None:
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.unicode = encoding.startswith("utf")
        self.quiet = quiet
        self.plain_every = plain_every
        self.log_path = log_path
        self._lock = threading.Lock()
        self._line = ""
        self._last_plain = 0.0
        self._last_plain_text = ""

    def _mark(self, level: str) -> str:
        fancy, plain = MARKS.get(level, ("·", "-"))
        return fancy if self.unicode else plain

    def notify(self, level: str, stage: str, name: Optional[str], message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        name = printable(name) if name else name
        message = printable(message)
        text = f"{stamp} {stage:<10} {self._mark(level)} " + (f"{name}: " if name else "") + message
        with self._lock:
            if self.log_path is not None:
                with open(self.log_path, "a", encoding="utf-8") as log:
                    log.write(f"{time.strftime('%Y-%m-%d')} {stamp} {level:<5} {stage} "
                              + (f"{name}: " if name else "") + message + "\n")
            if self.quiet and level == "info":
                return
            if self.tty and self._line:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            if self.tty and self._line:
                self.stream.write(self._line)
            self.stream.flush()

    def log_only(self, text: str) -> None:
        """A block for the log only (a traceback): continuation lines are indented, so no
        line of it, whatever an exception message holds, can pass for a log line."""
        if self.log_path is not None:
            first, *rest = text.rstrip("\n").split("\n")
            block = "".join(f"\n  {printable(line)}" for line in rest)
            with self._lock, open(self.log_path, "a", encoding="utf-8") as log:
                log.write(time.strftime("%Y-%m-%d %H:%M:%S ") + printable(first) + block + "\n")

    def status(self, line: str, force: bool = False) -> None:
        line = printable(line)
        with self._lock:
            if self.tty:
                self._line = line
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
                return
            now = time.monotonic()
            if force or (line != self._last_plain_text and now - self._last_plain >= self.plain_every):
                self._last_plain, self._last_plain_text = now, line
                self.stream.write(line + "\n")
                self.stream.flush()

    def end_status(self) -> None:
        with self._lock:
            if self.tty and self._line:
                self.stream.write("\n")
                self.stream.flush()
            self._line = ""


def _fmt_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}"


def status_line(counts: dict[str, dict[str, int]], inbox: int, current: str, train: Any,
                waiting: Optional[str], shards: tuple[int, int]) -> str:
    """inbox 2 | crawl 0 preprocess 1 tokenize 3 train 1 | done 40 quarantined 2 | shards 5/6 step 200
    tokens 1.2M val 5.123 | now: ..."""
    def active(stage: str) -> int:
        by = counts.get(stage, {})
        return by.get("pending", 0) + by.get("running", 0) + by.get("failed", 0)

    done = counts.get("train", {}).get("done", 0)
    quarantined = sum(by.get("quarantined", 0) for by in counts.values())
    parts = [f"inbox {inbox}", " ".join(f"{stage} {active(stage)}" for stage in STAGES),
             f"trained {done} quarantined {quarantined}",
             f"shards {shards[0]}/{shards[1]} step {train.step} tokens {_fmt_count(train.tokens_processed)}"
             + (f" val {train.val_loss:.3f}" if train.val_loss is not None else "")]
    if current:
        parts.append(f"now: {current}")
    elif waiting:
        parts.append(waiting)
    return " | ".join(parts)


# ---------------------------------------------------------------------------- `status`
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_status(folder: str | Path, *, events: int = 10, listed: int = 20) -> dict[str, Any]:
    """Everything `odin-pipeline status` shows, from pipeline.db (opened read-only)."""
    root = Path(folder).resolve()
    db_path = root / "pipeline.db"
    if not db_path.is_file():
        raise FileNotFoundError(f"no pipeline in {root} (no pipeline.db): start one with "
                                f"`odin-pipeline run {folder}`")
    store = Store(db_path, readonly=True, timeout=5.0)
    try:
        counts = store.counts()
        shards = store.shards()
        trained = [s for s in shards if s["status"] == "trained"]
        history = [{"shard": s["id"], "tokens": s["tokens"], "steps": s["steps"], "step_end": s["step_end"],
                    "val_loss": s["val_loss"], "train_loss": s["train_loss"], "seconds": s["seconds"]}
                   for s in trained]
        running = [{"name": r["name"], "stage": r["stage"]} for r in store.query(
            "SELECT name, stage FROM items WHERE status = 'running' ORDER BY updated DESC LIMIT ?", (listed,))]
        quarantine = [{"name": r["name"], "stage": r["stage"], "code": r["reason"], "error": r["error"]}
                      for r in store.query("SELECT * FROM items WHERE status = 'quarantined' "
                                           "ORDER BY updated DESC LIMIT ?", (listed,))]
        skipped = [{"name": r["name"], "kind": r["reason"], "note": r["note"]} for r in store.query(
            "SELECT * FROM items WHERE stage = 'preprocess' AND status = 'done' ORDER BY updated DESC LIMIT ?",
            (listed,))]
        waiting = store.scalar("SELECT note FROM items WHERE stage = 'tokenize' AND note IS NOT NULL "
                               "AND status != 'quarantined' ORDER BY updated DESC LIMIT 1")
        recent = [{"time": e["time"], "level": e["level"], "stage": e["stage"], "name": e["name"],
                   "message": e["message"]} for e in store.events(limit=events)]
        live = store.get_meta("train_live")
        tokenizer = store.get_meta("tokenizer_sha256")
        duplicates_dropped = store.scalar("SELECT COUNT(*) FROM events WHERE code = 'duplicate-file'", default=0)
        pid = store.get_meta("pid")
    finally:
        store.close()
    running_pid = pid if isinstance(pid, int) and _pid_alive(pid) and folder_in_use(root) else None
    totals = {stage: sum(counts.get(stage, {}).values()) for stage in counts}
    return {
        "folder": str(root),
        "running": running_pid is not None,
        "pid": running_pid,
        "items": {"total": sum(totals.values()), "by_stage": counts},
        "in_progress": running,
        "tokenizer": {"sha256": tokenizer, "waiting": waiting},
        "shards": {"total": len(shards), "trained": len(trained),
                   "pending": sum(1 for s in shards if s["status"] in ("pending", "training")),
                   "quarantined": sum(1 for s in shards if s["status"] == "quarantined")},
        "training": {
            "step": trained[-1]["step_end"] if trained else 0,
            "tokens_trained": sum(s["tokens"] for s in trained),
            "tokens_processed": sum(s["tokens_processed"] or 0 for s in trained),
            "last_val_loss": trained[-1]["val_loss"] if trained else None,
            "first_val_loss": trained[0]["val_loss"] if trained else None,
            "live": live,
            "history": history,
        },
        "quarantine": quarantine,
        "quarantined_total": sum(by.get("quarantined", 0) for by in counts.values()),
        "skipped_duplicates": skipped,
        "duplicate_files_dropped": duplicates_dropped,
        "events": recent,
    }


def format_status(info: dict[str, Any]) -> str:
    lines = [f"pipeline {info['folder']}: " + (f"running (pid {info['pid']})" if info["running"] else "not running")]
    by_stage = info["items"]["by_stage"]
    lines.append(f"items: {info['items']['total']}")
    for stage in [*STAGES, *sorted(set(by_stage) - set(STAGES))]:
        if stage in by_stage:
            counts = sorted(by_stage[stage].items())
            lines.append(f"  {stage:<10} " + ", ".join(f"{n} {status}" for status, n in counts))
    label = "now" if info["running"] else "interrupted, resumes on the next run"
    for item in info["in_progress"][:5]:
        lines.append(f"  {label}: {item['name']} ({item['stage']})")
    if len(info["in_progress"]) > 5:
        lines.append(f"  ... and {len(info['in_progress']) - 5} more in progress")
    tok = info["tokenizer"]
    lines.append("tokenizer: " + (f"fixed (sha256 {tok['sha256'][:12]}...)" if tok["sha256"] else "not trained yet")
                 + (f"; {tok['waiting']}" if tok["waiting"] else ""))
    sh, tr = info["shards"], info["training"]
    lines.append(f"shards: {sh['trained']} trained of {sh['total']}" +
                 (f", {sh['quarantined']} quarantined" if sh["quarantined"] else ""))
    val = tr["last_val_loss"]
    lines.append(f"training: step {tr['step']}, {tr['tokens_trained']:,} corpus tokens in trained shards, "
                 f"{tr['tokens_processed']:,} tokens processed"
                 + (f", last val loss {val:.4f}" if val is not None else ""))
    live = tr.get("live")
    if info["running"] and live and live.get("shard") and time.time() - live.get("time", 0) < 30:
        lines.append(f"  training shard {live['shard']}: {live['done']}/{live['steps']} steps, loss {live['loss']:.4f}")
    if tr["history"]:
        lines.append("  val loss per shard: " + " ".join(
            f"{h['val_loss']:.3f}" if h["val_loss"] is not None else "-" for h in tr["history"][-12:]))
    lines.append(f"quarantine: {info['quarantined_total']}")
    for item in info["quarantine"]:
        lines.append(f"  {item['name']} [{item['code']}, {item['stage']}]: {item['error']}")
    if info["skipped_duplicates"] or info["duplicate_files_dropped"]:
        lines.append(f"duplicates: {len(info['skipped_duplicates'])} texts skipped, "
                     f"{info['duplicate_files_dropped']} identical files dropped")
    if info["events"]:
        lines.append("recent:")
        for event in info["events"]:
            stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
            lines.append(f"  {stamp} {event['level']:<5} {event['stage'] or '':<10} "
                         + (f"{event['name']}: " if event["name"] else "") + event["message"])
    return "\n".join(printable(line) for line in lines)


def dumps(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=1, default=str)
