"""Every kind of bad input ends in quarantine/ with a clear recorded reason while the
pipeline keeps going; exact and near duplicates are recognised and skipped (not errors).

Runs the real `odin-pipeline run --once` in a subprocess. As root, the child drops the
capabilities that let root read any file, so permission errors are real ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from pipeline_helpers import (
    config_text, db_rows, drop_privileges_if_root, make_text, pipeline_cmd, run_once, wait_for, write_docs,
)

EXPECTED = {  # inbox name -> (reason code, words the reason must contain)
    "empty.txt": ("empty", "empty file"),
    "big.txt": ("too-large", "file too large"),
    "photo.txt": ("binary", "PNG image"),
    "nul.md": ("binary", "NUL byte at offset 11"),
    "latin1.txt": ("invalid-utf8", "invalid UTF-8 at byte"),
    "picture.png": ("unsupported-type", "unsupported file type '.png'"),
    "short.txt": ("too-short", "too short after cleaning"),
    "numbers.csv": ("low-quality", "letters"),
    "locked.txt": ("permission", "permission denied"),
    "gone.txt": ("vanished", "vanished"),
    "spaces.txt": ("empty", "whitespace"),
}


def make_bad_inputs(inbox: Path) -> None:
    (inbox / "empty.txt").write_bytes(b"")
    (inbox / "big.txt").write_text(make_text(1, 400), encoding="utf-8")  # > max_file_bytes below
    (inbox / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    (inbox / "nul.md").write_bytes(b"hello world\x00" + make_text(2).encode())
    (inbox / "latin1.txt").write_bytes(("Caf\u00e9 " + make_text(3)).encode("latin-1"))
    (inbox / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (inbox / "short.txt").write_text("Too short to learn from.\n", encoding="utf-8")
    (inbox / "numbers.csv").write_text("\n".join(f"{i},{i * i},{i * 7 % 13}" for i in range(200)), encoding="utf-8")
    (inbox / "spaces.txt").write_text(" \n\t\n   \n", encoding="utf-8")
    for name in ("locked.txt", "gone.txt"):
        (inbox / name).write_text(make_text(4), encoding="utf-8")
        os.chmod(inbox / name, 0)


def test_bad_inputs_are_quarantined_with_reasons_and_duplicates_skipped(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    inbox = folder / "inbox"
    config.write_text(config_text(crawl={"max_file_bytes": 5000},
                                  retry={"max_attempts": 3, "backoff_seconds": 1.0, "backoff_max_seconds": 1.0}),
                      encoding="utf-8")
    docs = {p.name: p.read_bytes() for p in write_docs(tmp_path / "docs", 10)}
    inbox.mkdir(parents=True, exist_ok=True)
    for name, data in docs.items():
        (inbox / name).write_bytes(data)
    first = run_once(folder, config)
    assert first.returncode == 0, first.stderr
    # a second run: the bad inputs, and duplicates of what the first run learned from:
    # identical bytes under another name; the same text with CRLF line ends; the same
    # text with one word changed
    make_bad_inputs(inbox)
    (inbox / "copy-of-doc0.txt").write_bytes(docs["doc0000.txt"])
    (inbox / "doc1-crlf.txt").write_bytes(docs["doc0001.txt"].replace(b"\n", b"\r\n"))
    words = docs["doc0002.txt"].decode().split(" ")
    words[5] = "zzzz"
    (inbox / "doc2-edited.txt").write_text(" ".join(words), encoding="utf-8")
    child = subprocess.Popen(pipeline_cmd(folder, "--config", str(config), "--once"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=drop_privileges_if_root())
    output: dict[str, str] = {}
    reader = threading.Thread(target=lambda: output.update(zip(("out", "err"), child.communicate(timeout=180))))
    reader.start()
    # gone.txt: after its first failed attempt (permission denied), it disappears
    wait_for(lambda: db_rows(folder, "SELECT 1 FROM items WHERE name = 'gone.txt' AND status = 'failed'"),
             60, "the first failed attempt on gone.txt")
    (inbox / "gone.txt").unlink()
    reader.join(timeout=200)
    assert child.returncode == 0, output.get("err")
    err = output["err"]

    rows = {name: (stage, status, reason, error) for name, stage, status, reason, error in db_rows(
        folder, "SELECT name, stage, status, reason, error FROM items")}
    for name, (code, words) in EXPECTED.items():
        assert name in rows, f"{name} not recorded"
        stage, status, reason, error = rows[name]
        assert (status, reason) == ("quarantined", code), (name, rows[name])
        assert words.lower() in error.lower(), (name, error)
        assert f"{name}: " in err and "quarantine/" in err  # a notification line per error
        reason_file = next((folder / "quarantine").glob(f"*-{name}.reason.txt"))
        fields = dict(line.split(": ", 1) for line in reason_file.read_text().splitlines())
        assert fields["code"] == code and fields["name"] == name and words.lower() in fields["reason"].lower()
        kept = reason_file.with_name(reason_file.name[: -len(".reason.txt")])
        assert kept.exists(), f"the original of {name} (or its record) is missing from quarantine/"
    # the retried ones were retried with backoff before giving up
    assert "attempt 1 of 3" in err and "after 3 attempts" in rows["locked.txt"][3]
    assert (folder / "quarantine").joinpath(next(p.name for p in (folder / "quarantine").glob("*-big.txt"))
                                           ).stat().st_size > 5000  # the original itself, moved
    # duplicates are recognised, recorded, and not errors
    assert rows["doc1-crlf.txt"][1:3] == ("done", "duplicate")
    assert rows["doc2-edited.txt"][1:3] == ("done", "near-duplicate")
    assert "copy-of-doc0.txt" not in rows  # identical bytes: never a second item
    assert db_rows(folder, "SELECT COUNT(*) FROM events WHERE code = 'duplicate-file' AND name = 'copy-of-doc0.txt'")
    assert "duplicate of doc0000.txt" in err
    # the good documents went all the way, and the pipeline did not stop for the bad ones
    assert all(rows[f"doc{i:04d}.txt"][:2] == ("train", "done") for i in range(10))
    assert not [p for p in inbox.rglob("*") if p.is_file()]
    out = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "status", str(folder), "--json"],
                         capture_output=True, text=True, timeout=60)
    info = json.loads(out.stdout)
    assert info["quarantined_total"] == len(EXPECTED) and not info["running"]
    assert {q["code"] for q in info["quarantine"]} == {code for code, _ in EXPECTED.values()}
    text = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "status", str(folder)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "quarantine: 11" in text and "invalid UTF-8" in text
