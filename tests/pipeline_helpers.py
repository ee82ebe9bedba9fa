"""Shared pieces of the odin-pipeline tests: synthetic documents, a small config, a local
HTTP server (with robots.txt, slow and failing pages), running the real command, and the
exactly-once checks that read pipeline.db, the shards and the checkpoint."""
from __future__ import annotations

import http.server
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pel", "dor", "an", "ith", "or", "um", "el",
             "bra", "gan", "tis", "mor", "qua", "zen", "fi", "lu", "ce", "po"]


def make_text(seed: int, sentences: int = 12) -> str:
    """Natural-looking prose in a made-up language: distinct seeds share almost no 5-word
    shingles, so documents are neither exact nor near duplicates of each other."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(400)]
    out = []
    for _ in range(sentences):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
        out.append(sentence.capitalize() + ".")
    return " ".join(out) + "\n"


def config_text(**overrides: dict[str, Any]) -> str:
    """A pipeline.toml for tests: a very small model and fast timings; override per table."""
    tables: dict[str, dict[str, Any]] = {
        "watch": {"settle_seconds": 0.2, "rescan_seconds": 1.0, "idle_seconds": 0.3},
        "retry": {"max_attempts": 2, "backoff_seconds": 0.05, "backoff_max_seconds": 0.2},
        "crawl": {"timeout_seconds": 0.5, "per_host_interval_seconds": 0.0, "max_file_bytes": 200_000},
        "preprocess": {"min_chars": 100},
        "tokenizer": {"vocab_size": 300, "min_chars": 3000, "shard_tokens": 1024},
        "model": {"preset": "tiny", "n_layer": 1, "d_model": 32, "n_head": 2, "context": 32},
        "train": {"steps_per_shard": 6, "batch_size": 8, "warmup_steps": 2, "threads": 2,
                  "val_max_tokens": 2048},
    }
    for table, values in overrides.items():
        tables.setdefault(table, {}).update(values)
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def write_docs(folder: Path, count: int, start: int = 0, sentences: int = 12, prefix: str = "doc") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"{prefix}{i:04d}.txt"
        tmp = folder / f".{path.name}.tmp"  # written elsewhere, renamed in: the polite way
        tmp.write_text(make_text(i, sentences), encoding="utf-8")
        tmp.rename(path)
        paths.append(path)
    return paths


def pipeline_cmd(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "odin.pipeline.cli", "run", str(folder), *args]


def run_once(folder: Path, config: Path, timeout: float = 120, preexec: Optional[Callable[[], None]] = None
             ) -> subprocess.CompletedProcess:
    return subprocess.run(pipeline_cmd(folder, "--config", str(config), "--once"), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def db_count(folder: Path, sql: str, params: tuple = ()) -> int:
    """The single number a COUNT query returns; 0 while the database or its tables do not
    exist yet (a pipeline that has just started)."""
    rows = db_rows(folder, sql, params)
    return int(rows[0][0]) if rows else 0


def db_rows(folder: Path, sql: str, params: tuple = ()) -> list[tuple]:
    path = folder / "pipeline.db"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # created but no tables yet
        return []


def checkpoint_state(folder: Path) -> tuple[int, dict[str, Any]]:
    from odin.checkpoint_io import read_progress

    latest = folder / "checkpoints" / "latest"
    if not latest.is_dir():  # killed between a save's two renames: the restart takes the parked one
        parked = sorted(latest.parent.glob(".latest.old-*"), key=lambda path: path.stat().st_mtime)
        latest = parked[-1] if parked else latest
    step, state = read_progress(latest)
    return step, state["pipeline"]


def assert_exactly_once(folder: Path, inputs: dict[str, bytes]) -> dict[str, Any]:
    """Every input in the pipeline exactly once, every token of every kept document in
    exactly one shard (re-encoded and compared), every shard in the model exactly once."""
    from odin.pipeline.store import content_hash
    from odin.tokenizers import load_tokenizer

    items = {row[0]: row for row in db_rows(folder, "SELECT hash, stage, status, name, tokens, val_tokens FROM items")}
    for name, data in inputs.items():
        key = content_hash(data)
        assert key in items, f"{name} was lost"
        assert items[key][1:3] == ("train", "done"), f"{name} ended at {items[key][1:3]}"
    assert len({row[3] for row in items.values()}) == len(items), "an input was recorded twice"
    assert not list((folder / "inbox").rglob("*.*")), "the inbox is not empty"
    tok = load_tokenizer(folder / "tokenizer.json")
    shards = db_rows(folder, "SELECT id, steps, status, tokens, val_tokens FROM shards ORDER BY seq")
    assert shards and all(s[2] == "trained" for s in shards), shards
    expected_train: dict[str, list[np.ndarray]] = {s[0]: [] for s in shards}
    for key, row in items.items():
        if row[1] != "train":
            continue
        body = np.asarray(tok.encode((folder / "clean" / f"{key}.txt").read_text(encoding="utf-8")))
        n_val = row[5] - 1 if row[5] else 0
        train = np.concatenate([[tok.bos_id], body[: len(body) - n_val], [tok.end_id]])
        assert len(train) == row[4], (row[3], len(train), row[4])
        spans = db_rows(folder, "SELECT shard, offset, count FROM shard_items WHERE item = ? ORDER BY offset", (key,))
        position = 0
        for shard, offset, count in spans:
            assert offset == position, f"{row[3]}: tokens {position}..{offset} missing or repeated"
            expected_train[shard].append((offset, key, train[offset:offset + count]))
            position += count
        assert position == len(train), f"{row[3]}: {position} of {len(train)} tokens in shards"
    from odin.pipeline.shards import read_shard

    for sid, *_ in shards:
        order = [key for key, in db_rows(folder, "SELECT item FROM shard_items WHERE shard = ? ORDER BY rowid", (sid,))]
        pieces = sorted(expected_train[sid], key=lambda p: order.index(p[1]))
        on_disk = read_shard(folder / "shards", "train", sid, verify=True).tokens
        assert np.array_equal(on_disk, np.concatenate([p[2] for p in pieces])), f"shard {sid} content"
    step, state = checkpoint_state(folder)
    assert len(state["trained"]) == len(set(state["trained"])), "a shard was trained twice"
    assert state["trained"] == [s[0] for s in shards], (state["trained"], shards)
    assert state["current"] is None
    assert step == sum(s[1] for s in shards), (step, [s[1] for s in shards])
    return {"step": step, "shards": len(shards), "items": len(items)}


# ---------------------------------------------------------------------- a local web server
class _Handler(http.server.BaseHTTPRequestHandler):
    pages: dict[str, tuple[int, str, bytes]] = {}
    requests: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requests.append((self.path, self.headers.get("User-Agent", "")))
        if self.path == "/slow":
            time.sleep(2.0)
        status, ctype, body = self.pages.get(self.path, (404, "text/plain", b"not found"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args: Any) -> None:
        pass


class LocalWeb:
    """A threaded HTTP server on 127.0.0.1 serving ``pages`` (path -> (status, type, body))."""

    def __init__(self, pages: dict[str, tuple[int, str, bytes]]) -> None:
        handler = type("Handler", (_Handler,), {"pages": pages, "requests": []})
        self.handler = handler
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.handler.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def html_page(title: str, seed: int) -> bytes:
    text = make_text(seed)
    return (f"<!doctype html><html><head><title>{title}</title><style>p {{color: red}}</style>"
            f"<script>var x = 'script text must go';</script></head><body><nav>Home | About</nav>"
            f"<h1>{title}</h1><p>{text}</p><p>caf&eacute; &amp; more</p></body></html>").encode("utf-8")


def drop_privileges_if_root() -> Optional[Callable[[], None]]:
    """For root: a preexec_fn that drops CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so file
    permissions apply to the child as to any user (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop
