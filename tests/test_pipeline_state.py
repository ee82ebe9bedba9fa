"""The pipeline folder's lifetime: a clean stop on SIGTERM, one pipeline per folder, items
that wait for the tokenizer, a configured tokenizer, and a tokenizer or model that must
not change under a trained checkpoint."""
from __future__ import annotations

import io
import json
import signal
import subprocess
from pathlib import Path

from pipeline_helpers import (
    assert_exactly_once, checkpoint_state, config_text, db_rows, make_text, pipeline_cmd, run_once, wait_for,
    write_docs,
)

from odin.pipeline.config import load_pipeline_config
from odin.pipeline.runner import Runner
from odin.tokenizers import BPETokenizer


def run_in_process(folder: Path, config: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = Runner(folder, load_pipeline_config(config), once=True, stream=out).run()
    return code, out.getvalue()


def test_sigterm_stops_cleanly_and_a_second_pipeline_is_refused(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(train={"steps_per_shard": 400}, model={"d_model": 64, "n_layer": 2}),
                      encoding="utf-8")
    inputs = {p.name: p.read_bytes() for p in write_docs(folder / "inbox", 12)}
    child = subprocess.Popen(pipeline_cmd(folder, "--config", str(config)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: db_rows(folder, "SELECT 1 FROM shards WHERE status = 'training'"), 120, "training")
        second = subprocess.run(pipeline_cmd(folder, "--config", str(config), "--once"), capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1 and f"another odin-pipeline (pid {child.pid}) is running" in second.stderr
        assert "Traceback" not in second.stderr
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "stopped (SIGTERM)" in err
    step, state = checkpoint_state(folder)  # the stop saved where it was (mid-shard, unless a slow
    # machine let the shard finish first): every step is accounted for exactly once
    in_progress = state["current"]["done"] if state["current"] else 0
    assert [h["shard"] for h in state["history"]] == state["trained"]
    assert all(h["steps"] <= 400 for h in state["history"])  # a part-filled shard gets fewer
    assert step > 0 and step == sum(h["steps"] for h in state["history"]) + in_progress
    config.write_text(config_text(train={"steps_per_shard": 400}, model={"d_model": 64, "n_layer": 2}),
                      encoding="utf-8")
    final = run_once(folder, config, timeout=300)
    assert final.returncode == 0, final.stderr
    assert assert_exactly_once(folder, inputs)["step"] >= step


def test_items_wait_for_the_tokenizer_then_train(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(tokenizer={"min_chars": 8000}), encoding="utf-8")
    inputs = {p.name: p.read_bytes() for p in write_docs(folder / "inbox", 3)}
    code, out = run_in_process(folder, config)
    assert code == 0
    waiting = db_rows(folder, "SELECT stage, status, note FROM items")
    assert len(waiting) == 3 and all(row[:2] == ("tokenize", "pending") for row in waiting)
    assert "waiting for the tokenizer" in waiting[0][2] and "of 8,000 characters" in waiting[0][2]
    assert not (folder / "tokenizer.json").exists()
    status = subprocess.run(["odin-pipeline", "status", str(folder), "--json"], capture_output=True, text=True)
    assert "waiting for the tokenizer" in json.loads(status.stdout)["tokenizer"]["waiting"]
    inputs.update({p.name: p.read_bytes() for p in write_docs(folder / "inbox", 10, start=3)})
    code, out = run_in_process(folder, config)
    assert code == 0, out
    assert "trained a 300-token BPE tokenizer on 13 documents" in out
    assert_exactly_once(folder, inputs)


def test_a_configured_tokenizer_is_used_and_a_changed_one_is_refused(tmp_path: Path) -> None:
    tok = BPETokenizer.train([make_text(i) for i in range(50, 60)], 320)
    tok.save(tmp_path / "mine.json")
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(tokenizer={"path": "mine.json", "min_chars": 10**9}), encoding="utf-8")
    inputs = {p.name: p.read_bytes() for p in write_docs(folder / "inbox", 4)}
    code, out = run_in_process(folder, config)
    assert code == 0, out
    assert (folder / "tokenizer.json").read_bytes() == (tmp_path / "mine.json").read_bytes()
    assert_exactly_once(folder, inputs)
    assert json.loads((folder / "checkpoints/latest/config.json").read_text())["model"]["vocab_size"] == 320

    # another tokenizer configured for a folder that has trained: refused
    BPETokenizer.train([make_text(i) for i in range(70, 80)], 330).save(tmp_path / "other.json")
    config.write_text(config_text(tokenizer={"path": "other.json"}), encoding="utf-8")
    code, out = run_in_process(folder, config)
    assert code == 1 and "the tokenizer of a folder never changes" in out
    # the folder's tokenizer.json edited after shards were written with it: refused
    config.write_text(config_text(), encoding="utf-8")
    (folder / "tokenizer.json").write_bytes((tmp_path / "other.json").read_bytes())
    code, out = run_in_process(folder, config)
    assert code == 1 and "changed after shards were written" in out
    (folder / "tokenizer.json").write_bytes((tmp_path / "mine.json").read_bytes())
    # a different [model] under a trained checkpoint: refused, naming what to do
    config.write_text(config_text(model={"d_model": 48}), encoding="utf-8")
    code, out = run_in_process(folder, config)
    assert code == 1 and "pipeline.toml's [model] now gives" in out
    config.write_text(config_text(), encoding="utf-8")
    assert run_in_process(folder, config)[0] == 0


def test_a_single_small_file_gets_trained(tmp_path: Path) -> None:
    """One file shorter than the model's context: it still becomes a shard and is trained
    (the window is padded and the padding masked out of the loss)."""
    BPETokenizer.train([make_text(i) for i in range(50, 60)], 320).save(tmp_path / "mine.json")
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(tokenizer={"path": "mine.json"}, model={"context": 256}), encoding="utf-8")
    inputs = {p.name: p.read_bytes() for p in write_docs(folder / "inbox", 1, sentences=2)}
    code, out = run_in_process(folder, config)
    assert code == 0, out
    (tokens, steps), = db_rows(folder, "SELECT tokens, steps FROM shards")
    assert tokens < 257 and steps == 1
    assert assert_exactly_once(folder, inputs)["step"] == 1


def test_a_shard_that_cannot_be_read_is_quarantined_and_the_pipeline_goes_on(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(train={"steps_per_shard": 400}), encoding="utf-8")
    write_docs(folder / "inbox", 14)
    child = subprocess.Popen(pipeline_cmd(folder, "--config", str(config)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:  # stopped while the first shard trains and the others wait
        wait_for(lambda: len(db_rows(folder, "SELECT 1 FROM shards WHERE status = 'pending'")) >= 2, 120,
                 "shards waiting to be trained", interval=0.02)
    finally:
        child.kill()
        child.wait()
    (victim,), = db_rows(folder, "SELECT id FROM shards WHERE status = 'pending' ORDER BY seq DESC LIMIT 1")
    (folder / "shards" / "train" / f"{victim}.bin").unlink()  # lost (a disk problem, a careless rm)
    code, out = run_in_process(folder, config)
    assert code == 0, out
    assert db_rows(folder, "SELECT status, error FROM shards WHERE id = ?", (victim,))[0][0] == "quarantined"
    lost = db_rows(folder, "SELECT i.status, i.reason, i.error FROM items i JOIN shard_items s ON s.item = i.hash "
                           "WHERE s.shard = ?", (victim,))
    assert lost and all(row[:2] == ("quarantined", "training") and victim in row[2] for row in lost)
    assert f"shard {victim}" in out and "quarantine/" in out
    others = db_rows(folder, "SELECT status FROM shards WHERE id != ?", (victim,))
    assert others and all(status == "trained" for status, in others)
    step, state = checkpoint_state(folder)
    assert victim not in state["trained"]
    assert step == sum(s for s, in db_rows(folder, "SELECT steps FROM shards WHERE id != ?", (victim,)))
