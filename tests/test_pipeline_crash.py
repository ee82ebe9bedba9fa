"""kill -9 at any moment, restart: nothing lost, nothing twice.

The real command runs in a subprocess and is SIGKILLed three times — while documents are
being preprocessed, in the middle of a shard (after a mid-shard checkpoint), and at a
random moment of the training run — with new files and duplicates dropped in while it is
down. A last `--once` run finishes, and then every document must be in the shards exactly
once (re-encoded and compared token by token), every shard in the checkpoint exactly once,
and the checkpoint's step equal to the sum of the shards' steps."""
from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from pipeline_helpers import (
    assert_exactly_once, checkpoint_state, config_text, db_rows, pipeline_cmd, run_once, wait_for, write_docs,
)


def run_until(folder: Path, config: Path, trigger: Callable[[], Any], what: str, delay: float = 0.0) -> str:
    """Start the pipeline, wait for ``trigger``, SIGKILL it. Returns its output."""
    child = subprocess.Popen(pipeline_cmd(folder, "--config", str(config)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: trigger() or child.poll() is not None, 120, what, interval=0.02)
        assert child.poll() is None, f"the pipeline exited before {what}: {child.stderr.read()}"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return err


def mid_shard_checkpoint(folder: Path) -> bool:
    try:
        return checkpoint_state(folder)[1]["current"] is not None
    except Exception:  # not written yet, or being swapped in right now
        return False


def test_sigkill_and_restart_process_every_input_exactly_once(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    # 200 steps a shard: a step of this model takes ~1 ms on an idle machine, so the window
    # between a mid-shard checkpoint and the end of its shard must be long enough to kill in
    config.write_text(config_text(train={"steps_per_shard": 200, "checkpoint_every_steps": 10},
                                  model={"d_model": 64, "n_layer": 2, "n_head": 2}), encoding="utf-8")
    inbox = folder / "inbox"
    inputs = {p.name: p.read_bytes() for p in write_docs(inbox, 30)}

    # 1. killed while documents are preprocessed (some already further on)
    run_until(folder, config, lambda: db_rows(folder, "SELECT 1 FROM items WHERE stage = 'tokenize'"),
              "a document to reach the tokenizer")
    # 2. killed in the middle of a shard, after a mid-shard checkpoint was written
    run_until(folder, config, lambda: mid_shard_checkpoint(folder), "a mid-shard checkpoint", delay=0.05)
    step, state = checkpoint_state(folder)
    assert state["current"] and 0 < state["current"]["done"] < 200
    partial = state["current"]["shard"]
    # while it is down: new documents, a byte-identical copy of one it has, a folder
    inputs.update({p.name: p.read_bytes() for p in write_docs(inbox, 8, start=30)})
    (inbox / "again.txt").write_bytes(inputs["doc0003.txt"])
    # 3. killed at a random moment of training
    rng = random.Random(7)
    run_until(folder, config, lambda: len(db_rows(folder, "SELECT 1 FROM shards WHERE status = 'trained'")) >= 3,
              "three trained shards", delay=rng.uniform(0.0, 0.4))

    final = run_once(folder, config)
    assert final.returncode == 0, final.stderr
    summary = assert_exactly_once(folder, inputs)
    assert summary["items"] == len(inputs)  # the copy was recognised, not added
    copies = "SELECT COUNT(*) FROM events WHERE code = 'duplicate-file' AND name = 'again.txt'"
    assert db_rows(folder, copies)[0][0] == 1
    # the shard cut by kill 2 went on from its mid-shard checkpoint: had it started over,
    # its first mid-shard checkpoint ("at step 10") would have been written twice
    log = (folder / "pipeline.log").read_text(encoding="utf-8")
    assert log.count(f"shard {partial} at step 10)") == 1
    assert f"checkpoint at step {step + 10} " in log
    # and validation loss was recorded for every shard
    assert all(v is not None for v, in db_rows(folder, "SELECT val_loss FROM shards"))


@pytest.mark.slow
def test_many_random_sigkills(tmp_path: Path) -> None:
    """Twelve kills at random moments (crawl, preprocess, tokenizer training, packing,
    training, checkpoint writes: wherever they fall), files dropped between them."""
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(train={"steps_per_shard": 30, "checkpoint_every_steps": 7},
                                  model={"d_model": 64, "n_layer": 2, "n_head": 2}), encoding="utf-8")
    inbox = folder / "inbox"
    inputs: dict[str, bytes] = {}
    rng = random.Random(1234)
    for round_ in range(12):
        inputs.update({p.name: p.read_bytes() for p in write_docs(inbox, 6, start=6 * round_)})
        run_until(folder, config, lambda: True, "start", delay=rng.uniform(1.0, 4.0))
    final = run_once(folder, config, timeout=300)
    assert final.returncode == 0, final.stderr
    summary = assert_exactly_once(folder, inputs)
    assert summary["items"] == len(inputs)
