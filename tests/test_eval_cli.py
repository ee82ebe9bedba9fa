"""`odin eval CHECKPOINT` as the installed command: it finds the run's dataset from any
directory (checkpoints record absolute data paths), says in one line what to do when that
dataset is gone, and refuses a text model (odin-pipeline, BPE) before writing anything."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from odin.checkpoint import model_from_config, save_model_checkpoint
from odin.config import RunConfig
from odin.data.dataset import build_dataset
from odin.tokenizers import BPETokenizer, CharTokenizer

SMALL = """
[model]
n_layer = 1
d_model = 32
n_head = 2
context = 16

[train]
batch_size = 16
steps = 5
eval_every = 0
checkpoint_every = 0
"""


def odin(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "odin"
    cmd = [str(script), *args] if script.exists() else [sys.executable, "-m", "odin.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odin eval: error: "), proc.stderr
    return lines[0]


def test_eval_finds_the_runs_dataset_from_any_directory(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build_dataset(work / "d", seed=2, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True, n_heldout=0)
    (work / "small.toml").write_text(SMALL, encoding="utf-8")
    trained = odin("train", "--config", "small.toml", "--data", "d", "--out", "run", "--threads", "1", "--json",
                   cwd=work)  # relative paths, as a user types them
    assert trained.returncode == 0, trained.stderr
    scored = odin("eval", str(work / "run" / "checkpoint"), "--splits", "test", "--json", cwd=elsewhere)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["test"]["n"] == 10

    build_dataset(work / "other", seed=3, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True,
                  n_heldout=0)
    (work / "d").rename(work / "moved")
    (work / "other").rename(work / "d")  # another dataset where the run's was
    replaced = one_line_error(odin("eval", str(work / "run" / "checkpoint"), cwd=elsewhere))
    assert f"{work / 'd'} no longer holds the dataset" in replaced and "pass --data DIR" in replaced
    (work / "d").rename(work / "other")
    gone = one_line_error(odin("eval", str(work / "run" / "checkpoint"), cwd=elsewhere))
    assert f"({work / 'd'}) is not there: pass --data DIR" in gone
    assert odin("eval", str(work / "run" / "checkpoint"), "--data", str(work / "moved"), "--splits", "test",
                cwd=elsewhere).returncode == 0


def test_eval_scores_a_pipeline_model_on_its_validation_shards(tmp_path):
    """What the pipeline reports after its last shard (the held-out loss over every trained
    shard) is what `odin eval` finds for the checkpoint; and nothing is written beside it."""
    from pipeline_helpers import config_text, db_rows, run_once, write_docs

    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(train={"steps_per_shard": 20}), encoding="utf-8")
    write_docs(folder / "inbox", 8)
    ran = run_once(folder, config, timeout=300)
    assert ran.returncode == 0, ran.stderr
    (reported, shards), = db_rows(folder, "SELECT val_loss, (SELECT COUNT(*) FROM shards WHERE status = 'trained') "
                                          "FROM shards WHERE status = 'trained' ORDER BY step_end DESC LIMIT 1")
    ckpt = folder / "checkpoints" / "latest"
    before = sorted(p.name for p in (folder / "checkpoints").iterdir())
    scored = odin("eval", str(ckpt), "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    score = json.loads(scored.stdout)
    assert score["shards"] == shards >= 1 and score["tokens"] > 0
    assert abs(score["loss"] - reported) < 1e-4 * max(1.0, reported)  # the pipeline's cap is not reached here
    assert abs(score["perplexity"] - math.exp(score["loss"])) < 1e-6 * score["perplexity"]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == before  # no error files beside it
    line = one_line_error(odin("eval", str(ckpt), "--data", str(tmp_path), cwd=tmp_path))
    assert re.search(r"is an odin-pipeline model \(BPE tokenizer, \d+ tokens\)", line), line


def test_eval_refuses_a_text_model_away_from_a_pipeline_and_writes_nothing(tmp_path):
    cfg = RunConfig.from_dict({"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16,
                                         "vocab_size": 300}})
    model = model_from_config(cfg)
    model.init_weights(0)
    tokenizer = BPETokenizer.train(["the cat sat on the mat\n"] * 30, 300)
    moved = save_model_checkpoint(tmp_path / "moved", model, tokenizer, cfg, step=3,
                                  trainer_state={"pipeline": {"trained": [], "history": []}})
    imported = save_model_checkpoint(tmp_path / "imported", model, tokenizer, cfg, step=0)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    line = one_line_error(odin("eval", str(moved), cwd=tmp_path))
    assert "away from its pipeline folder" in line and f"odin-infer -m {moved}" in line
    line = one_line_error(odin("eval", str(imported), cwd=tmp_path))
    assert re.search(r"is a text model \(BPE tokenizer, \d+ tokens\)", line) and f"odin-infer -m {imported}" in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_eval_rebuilds_the_missing_dataset_of_a_preset_run(tmp_path):
    """A preset's dataset is deterministic: when the one a run recorded is gone, odin eval builds
    it again where it was (the old hint built a default dataset that eval then refused)."""
    from odin.config import preset_config

    cfg = preset_config("arith-3digit")
    model = model_from_config(cfg)
    model.init_weights(0)
    data = tmp_path / "data" / "arith-3digit"
    ckpt = save_model_checkpoint(tmp_path / "run" / "checkpoint", model, CharTokenizer(), cfg, step=1,
                                 trainer_state={"data_dir": str(data), "reverse_answer": True})
    scored = odin("eval", str(ckpt), "--splits", "test", "--limit", "5", "--json", cwd=tmp_path, timeout=300)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["test"]["n"] == 5
    assert f"building the dataset of preset 'arith-3digit' in {data}" in scored.stderr
    assert (data / "dataset.json").is_file()
