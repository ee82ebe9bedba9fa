"""odin-pipeline end to end: files and URL lists dropped into a running pipeline become
shards, the checkpoint's step advances, validation loss is recorded, `status --json`
answers while it runs, and every web failure lands in quarantine with its reason."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

from pipeline_helpers import (
    db_count,
    LocalWeb, assert_exactly_once, checkpoint_state, closed_port, config_text, db_rows, html_page, make_text,
    wait_for, write_docs,
)

from odin.pipeline.config import load_pipeline_config
from odin.pipeline.runner import Runner

ROBOTS = b"User-agent: *\nDisallow: /private/\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


def start_runner(folder: Path, config_path: Path) -> tuple[Runner, threading.Thread, dict]:
    runner = Runner(folder, load_pipeline_config(config_path), stream=io.StringIO())
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", runner.run()), daemon=True)
    thread.start()
    return runner, thread, result


def test_files_and_urls_dropped_while_running_are_trained(tmp_path: Path) -> None:
    web = LocalWeb({
        "/robots.txt": (200, "text/plain", ROBOTS),
        "/page.html": (200, "text/html; charset=utf-8", html_page("A page about kalo", 501)),
        "/notes.txt": (200, "text/plain", make_text(502).encode()),
        "/private/secret.html": (200, "text/html", html_page("secret", 503)),
        "/broken": (500, "text/plain", b"server error"),
        "/slow": (200, "text/plain", make_text(504).encode()),
        "/image.png": (200, "image/png", PNG),
    })
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(), encoding="utf-8")
    runner, thread, result = start_runner(folder, config)
    try:
        inbox = wait_for(lambda: (folder / "inbox").is_dir() and folder / "inbox", 30, "the inbox")
        docs = write_docs(tmp_path / "src", 8)
        inputs = {}
        for path in docs:  # dropped while the pipeline runs
            inputs[path.name] = path.read_bytes()
            path.rename(inbox / path.name)
        dead = f"http://127.0.0.1:{closed_port()}/nothing"
        urls = ["# pages for the test", web.url("/page.html"), web.url("/notes.txt"), web.url("/private/secret.html"),
                web.url("/missing"), web.url("/broken"), web.url("/slow"), web.url("/image.png"), dead,
                "ftp://example.com/file.txt", web.url("/page.html#again")]
        (inbox / "web.urls").write_text("\n".join(urls) + "\n", encoding="utf-8")

        trained = lambda: db_count(folder, "SELECT COUNT(*) FROM shards WHERE status = 'trained'")  # noqa: E731
        wait_for(lambda: trained() >= 1, 120, "a trained shard")
        step_before, _ = wait_for(lambda: (folder / "checkpoints/latest").is_dir() and checkpoint_state(folder),
                                  30, "the first checkpoint")

        # status --json works while the pipeline runs (a separate process reading the database)
        out = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "status", str(folder), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["running"] and info["pid"] and info["shards"]["trained"] >= 1
        assert info["training"]["last_val_loss"] is not None

        # a whole folder moved in while running
        batch = tmp_path / "batch"
        more = write_docs(batch / "sub", 6, start=100)
        inputs.update({f"batch/sub/{p.name}": p.read_bytes() for p in more})
        batch.rename(inbox / "batch")
        keys = lambda: db_count(folder, "SELECT COUNT(*) FROM items WHERE name LIKE 'batch/%' "  # noqa: E731
                                       "AND stage = 'train' AND status = 'done'")
        wait_for(lambda: keys() == 6, 120, "the dropped folder to be trained")
        wait_for(lambda: checkpoint_state(folder)[0] > step_before, 60, "the checkpoint step to advance")
        reasons = lambda: dict(db_rows(folder, "SELECT name, reason FROM items WHERE kind = 'url' "  # noqa: E731
                                               "AND status = 'quarantined'"))
        wait_for(lambda: len(reasons()) == 7, 60, "the failing URLs in quarantine")
        wait_for(lambda: db_count(folder, "SELECT COUNT(*) FROM items WHERE stage IN ('crawl', 'preprocess', "
                                         "'tokenize') AND status != 'quarantined' AND kind != 'urls'") == 0
                 and not db_rows(folder, "SELECT 1 FROM shards WHERE status != 'trained'"), 120, "idle")
    finally:
        runner.request_stop("test")
        thread.join(timeout=60)
        web.close()
    assert result.get("code") == 0
    assert reasons() == {web.url("/private/secret.html"): "robots", web.url("/missing"): "http-error",
                         web.url("/broken"): "http-retry", web.url("/slow"): "timeout",
                         web.url("/image.png"): "content-type", dead: "unreachable",
                         "ftp://example.com/file.txt": "bad-url"}
    # every web failure has its record and reason in quarantine/
    reason_files = {p.read_text().split("\n", 1)[0] for p in (folder / "quarantine").glob("*.reason.txt")}
    assert any("robots.txt" in r for r in reason_files) and any("HTTP 404" in r for r in reason_files)
    assert any("timed out" in r for r in reason_files) and any("connection refused" in r for r in reason_files)
    assert any("after 2 attempts" in r for r in reason_files)  # retried, then quarantined
    # robots.txt was asked for, with our user agent; the disallowed page never was
    paths = [p for p, _ in web.requests]
    assert "/robots.txt" in paths and "/private/secret.html" not in paths
    assert all(ua.startswith("odin-pipeline/") for _, ua in web.requests)
    # the HTML page became text without its script, style and navigation
    (page_key,) = [k for k, in db_rows(folder, "SELECT hash FROM items WHERE name = ?", (web.url("/page.html"),))]
    text = (folder / "clean" / f"{page_key}.txt").read_text(encoding="utf-8")
    assert text.startswith("A page about kalo") and "café & more" in text
    assert "script text" not in text and "color: red" not in text and "Home | About" not in text
    # the fragment-only variant of page.html was the same URL: fetched once
    assert paths.count("/page.html") == 1
    # files and pages: every token once in the shards, every shard once in the model
    summary = assert_exactly_once(folder, inputs)
    assert summary["shards"] >= 2
    val = db_rows(folder, "SELECT val_loss FROM shards ORDER BY seq")
    assert all(v is not None and 0 < v < 10 for v, in val)
    assert not list((folder / "inbox").iterdir()), "processed inputs leave the inbox"
