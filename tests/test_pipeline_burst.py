"""A burst of 500 small files written into the inbox of a running pipeline: every one is
taken, cleaned, tokenized and trained exactly once, and the inbox ends empty."""
from __future__ import annotations

import time
from pathlib import Path

from pipeline_helpers import assert_exactly_once, config_text, db_count, db_rows, make_text, wait_for
from test_pipeline_e2e import start_runner

N_FILES = 500


def test_burst_of_500_small_files(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(tokenizer={"shard_tokens": 4096}, train={"steps_per_shard": 4}), encoding="utf-8")
    runner, thread, result = start_runner(folder, config)
    try:
        inbox = wait_for(lambda: (folder / "inbox").is_dir() and folder / "inbox", 30, "the inbox")
        started = time.monotonic()
        inputs = {}
        for i in range(N_FILES):  # written in place, as fast as Python can: close-after-write makes them ready
            data = make_text(10_000 + i, sentences=5).encode("utf-8")  # 150-600 characters
            (inbox / f"note{i:03d}.txt").write_bytes(data)
            inputs[f"note{i:03d}.txt"] = data
        settled = lambda: db_count(folder, "SELECT COUNT(*) FROM items WHERE status = 'quarantined' OR "  # noqa: E731
                                          "(stage = 'train' AND status = 'done')")
        wait_for(lambda: settled() == N_FILES and not db_rows(folder, "SELECT 1 FROM shards WHERE status != 'trained'"),
                 240, f"{N_FILES} files to be trained")
        seconds = time.monotonic() - started
    finally:
        runner.request_stop("test")
        thread.join(timeout=60)
    assert result.get("code") == 0
    summary = assert_exactly_once(folder, inputs)
    assert summary["items"] == N_FILES and summary["shards"] >= 2
    assert not db_rows(folder, "SELECT 1 FROM items WHERE status IN ('failed', 'quarantined')")
    print(f"{N_FILES} files in {seconds:.1f} s, {summary['shards']} shards")
