"""A run folder's life through the real `odin train` command: refused unless resumed or
overwritten, every argument checked before the folder is touched, SIGINT/SIGTERM saving a
checkpoint whatever became of stdout/stderr, a resume that keeps the run's own settings and
says why it cannot go on, one process per folder, the final score in metrics.jsonl, and a new
run from another checkpoint's weights (--init-from)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.checkpoint_io import read_progress
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
steps = {steps}
warmup_steps = 5
eval_every = 0
checkpoint_every = 0
"""


def odin_cmd(*args: str) -> list[str]:
    """The installed `odin` entry point of this interpreter's environment."""
    script = Path(sys.executable).parent / "odin"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "odin.cli", *args]


def odin(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(odin_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess, status: int = 2) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odin train: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d"
    build_dataset(path, seed=7, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True, n_heldout=0)
    return path


def config(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / f"small-{steps}.toml"
    path.write_text(SMALL.format(steps=steps), encoding="utf-8")
    return path


def folder_state(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def wait_for_metrics(run: Path, lines: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= lines):
        assert proc.poll() is None, "odin train ended before it was signalled"
        assert time.monotonic() < deadline, "odin train made no progress"
        time.sleep(0.05)


# ---------------------------------------------------------------- item 5: existing runs
def test_an_existing_run_is_refused_unless_resumed_or_overwritten(tmp_path, data):
    cfg, run = config(tmp_path, 20), tmp_path / "run"
    first = odin("train", "--config", str(cfg), "--data", str(data), "--out", str(run), "--threads", "1")
    assert first.returncode == 0, first.stderr
    before = folder_state(run)
    assert before["metrics.jsonl"] and "checkpoint/model.safetensors" in before

    again = one_line_error(odin("train", "--config", str(cfg), "--data", str(data), "--out", str(run)))
    assert "already holds a run" in again and "--resume" in again and "--overwrite" in again
    bad_threads = one_line_error(odin("train", "--config", str(cfg), "--data", str(data), "--out", str(run),
                                      "--threads", "1000", "--overwrite"))
    assert "threads must be" in bad_threads
    assert folder_state(run) == before  # neither start touched the run

    over = odin("train", "--config", str(config(tmp_path, 7)), "--data", str(data), "--out", str(run),
                "--overwrite", "--threads", "1", "--json")
    assert over.returncode == 0, over.stderr
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == list(range(1, 8))
    assert read_progress(run / "checkpoint")[0] == 7


def test_bad_arguments_are_refused_before_anything_is_built_or_written(tmp_path, data):
    run = tmp_path / "run"
    steps = one_line_error(odin("train", "--config", str(config(tmp_path, 5)), "--data", str(data), "--out", str(run),
                                "--steps", "2147483648"))
    assert "2147483647" in steps
    assert not run.exists()
    # the default preset would build its 120,000-example dataset first: --threads is checked before
    threads = one_line_error(odin("train", "--threads", "65", cwd=tmp_path), 2)
    assert "threads must be 0 (automatic" in threads and "1..64" in threads
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_threads_zero_means_automatic_everywhere():
    from odin.run_checks import resolve_threads
    from odin.spheres import default_threads

    assert resolve_threads(0) == resolve_threads(None) == default_threads()
    assert resolve_threads(64) == 64
    for bad in (-1, 65, 1000, True, 2.0):
        with pytest.raises(ValueError, match=r"threads must be 0 \(automatic"):
            resolve_threads(bad)
    assert RunConfig.from_dict({"train": {"threads": 0}}).train.threads == 0
    with pytest.raises(ValueError, match="threads"):  # the config's rule is the trainer's limit too
        RunConfig.from_dict({"train": {"threads": 65}})


def test_a_preset_dataset_built_with_other_options_is_refused(tmp_path):
    built = odin("data", "build", "--out", str(tmp_path / "data" / "arith-3digit"), "--ops", "add",
                 "--max-digits", "2", "--reverse", "--n", "300", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    refused = one_line_error(odin("train", "--steps", "1", "--threads", "1", cwd=tmp_path))
    assert "data/arith-3digit was built with other options than preset 'arith-3digit'" in refused
    assert "max_digits: built 2, preset 3" in refused and "n_examples: built 300, preset 120000" in refused
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- item 6: signals, closed pipes
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_checkpoint_even_when_the_output_pipe_is_gone(tmp_path, data, sig, status):
    run = tmp_path / "run"
    proc = subprocess.Popen(odin_cmd("train", "--config", str(config(tmp_path, 1_000_000)), "--data", str(data),
                                     "--out", str(run), "--threads", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline().startswith(b"training gpt")
        wait_for_metrics(run, 50, proc)
        proc.stdout.close()  # `| head` has read its lines and gone: every later write hits EPIPE
        time.sleep(0.3)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == status
    finally:
        if proc.poll() is None:
            proc.kill()
    step, state = read_progress(run / "checkpoint")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert step >= 50 and step == max(r["step"] for r in metrics) and "sampler" in state
    assert load_model_checkpoint(run / "checkpoint").step == step


# ---------------------------------------------------------------- item 7 and 18: resume
def stopped_run(tmp_path: Path, data: Path, steps: int) -> Path:
    """A run of `steps` (given as a flag, not in its config) stopped by Ctrl-C partway."""
    run = tmp_path / "run"
    proc = subprocess.Popen(odin_cmd("train", "--config", str(config(tmp_path, 5000)), "--steps", str(steps),
                                     "--data", str(data), "--out", str(run), "--threads", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_metrics(run, 20, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 20 <= read_progress(run / "checkpoint")[0] < steps
    return run


def test_resume_keeps_the_runs_own_settings_and_refuses_others(tmp_path, data):
    run = stopped_run(tmp_path, data, 2000)
    cfg = str(config(tmp_path, 5000))
    other = one_line_error(odin("train", "--config", cfg, "--out", str(run), "--resume", "--steps", "3000"))
    assert "[train].steps = 3000 (the run has 2000)" in other
    lr = one_line_error(odin("train", "--out", str(run), "--resume", "--lr", "0.5"))
    assert "[train].lr = 0.5 (the run has 0.001)" in lr
    # the same value as the run's is no difference; and no flag at all continues the run as it was
    resumed = odin("train", "--out", str(run), "--resume", "--steps", "2000", "--threads", "1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 2000
    loaded = load_model_checkpoint(run / "checkpoint")
    assert loaded.step == 2000 and loaded.run_config.train.steps == 2000
    done = one_line_error(odin("train", "--out", str(run), "--resume"))
    assert "at step 2000 of 2000 (finished)" in done and "--init-from" in done


def test_resume_of_an_incomplete_checkpoint_is_one_line(tmp_path, data):
    cfg = RunConfig.from_dict({"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16},
                               "train": {"batch_size": 16, "steps": 30}})
    model = model_from_config(cfg)
    model.init_weights(0)

    def saved(name: str, step: int, state: dict, with_optimizer: bool = True) -> Path:
        run = tmp_path / name
        save_model_checkpoint(run / "checkpoint", model, CharTokenizer(), cfg, step=step, trainer_state=state,
                              with_optimizer=with_optimizer)
        return run

    full_state = {"data_dir": str(data)}
    no_optimizer = saved("a", 10, full_state, with_optimizer=False)
    no_sampler = saved("b", 10, full_state)
    past_end = saved("c", 31, {**full_state, "sampler": {"seed": 1, "epoch": 0, "position": 0}})
    bad_sampler = saved("d", 10, {**full_state, "sampler": {"seed": 1, "epoch": 0, "position": 10 ** 6}})
    for run, says in [(no_optimizer, "optimizer.safetensors is missing"),
                      (no_sampler, "no batch sampler position"),
                      (past_end, "at step 31 of 30 (past its end)"),
                      (bad_sampler, "batch sampler state does not fit")]:
        before = folder_state(run)
        line = one_line_error(odin("train", "--out", str(run), "--data", str(data), "--resume"))
        assert says in line, line
        assert folder_state(run) == before
    # a config.json whose [train] settings are gone (damaged, hand-edited): RunConfig's defaults would
    # fill them and the run would go on with the preset's step count and batch size (re-audit sweep)
    for name, drop in [("e", None), ("f", "batch_size")]:
        run = saved(name, 10, {**full_state, "sampler": {"seed": 1, "epoch": 0, "position": 0}})
        recorded = json.loads((run / "checkpoint" / "config.json").read_text())
        if drop is None:
            del recorded["train"]
        else:
            del recorded["train"][drop]
        (run / "checkpoint" / "config.json").write_text(json.dumps(recorded))
        before = folder_state(run)
        line = one_line_error(odin("train", "--out", str(run), "--data", str(data), "--resume"))
        assert "does not record the run's [train] settings" in line and (drop or "steps") in line, line
        assert folder_state(run) == before


# ---------------------------------------------------------------- item 8: one process per folder
def test_a_second_train_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, data):
    run = tmp_path / "run"
    cfg = str(config(tmp_path, 1_000_000))
    first = subprocess.Popen(odin_cmd("train", "--config", cfg, "--data", str(data), "--out", str(run),
                                      "--threads", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_metrics(run, 5, first)
        for owner_file in run.glob(".odin.lock"):  # the lock does not live in a file one can delete
            owner_file.unlink()
        for extra in (["--resume"], ["--overwrite"]):
            line = one_line_error(odin("train", "--config", cfg, "--data", str(data), "--out", str(run), *extra))
            assert f"{run} is in use by another process" in line
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == list(range(1, len(metrics) + 1))  # one writer, no interleaving


def test_the_folder_lock_survives_deleting_files_and_is_released(tmp_path):
    from odin.runlock import FolderInUseError, folder_in_use, lock_folder

    lock = lock_folder(tmp_path / "f", "odin train")
    for path in (tmp_path / "f").iterdir():
        path.unlink()
    with pytest.raises(FolderInUseError, match="in use by another process"):
        lock_folder(tmp_path / "f", "odin train")
    assert folder_in_use(tmp_path / "f")
    lock.release()
    assert not folder_in_use(tmp_path / "f")
    lock_folder(tmp_path / "f", "odin train").release()


def test_deleting_pipeline_lock_lets_no_second_pipeline_in(tmp_path):
    from pipeline_helpers import config_text

    from odin.pipeline.config import load_pipeline_config
    from odin.pipeline.runner import Runner

    folder, cfg_path = tmp_path / "pipe", tmp_path / "pipeline.toml"
    cfg_path.write_text(config_text(), encoding="utf-8")
    cfg = load_pipeline_config(cfg_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from odin.pipeline.config import load_pipeline_config\n"
        "from odin.pipeline.runner import Runner\n"
        f"r = Runner({str(folder)!r}, load_pipeline_config({str(cfg_path)!r}))\n"
        "r.paths.make(); r._acquire_lock(); print('locked', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (folder / "pipeline.lock").unlink()
        import io

        out = io.StringIO()
        assert Runner(folder, cfg, once=True, stream=out).run() == 1
        assert f"another odin-pipeline (pid {holder.pid}) is running" in out.getvalue()
    finally:
        holder.kill()
        holder.wait()


def test_pipeline_status_sees_the_runner_after_its_lock_file_is_deleted(tmp_path):
    from pipeline_helpers import config_text

    from odin.pipeline.status import collect_status

    folder, cfg_path = tmp_path / "pipe", tmp_path / "pipeline.toml"
    cfg_path.write_text(config_text(), encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        "from odin.pipeline.config import load_pipeline_config\n"
        "from odin.pipeline.runner import Runner\n"
        "from odin.pipeline.store import Store\n"
        f"r = Runner({str(folder)!r}, load_pipeline_config({str(cfg_path)!r}))\n"
        "r.paths.make(); r._acquire_lock()\n"
        "s = Store(r.paths.db); s.set_meta('pid', os.getpid()); s.close()\n"
        "print('locked', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert collect_status(folder)["running"]
        (folder / "pipeline.lock").unlink()
        info = collect_status(folder)
        assert info["running"] and info["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert not collect_status(folder)["running"]


# ---------------------------------------------------------------- item 24: the final score
def test_the_final_test_score_is_a_metrics_record(tmp_path, data):
    run = tmp_path / "run"
    done = odin("train", "--config", str(config(tmp_path, 10)), "--data", str(data), "--out", str(run),
                "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r.get("kind") == "final_eval"]
    summary = json.loads(done.stdout)["eval"]["test"]
    assert [r["split"] for r in final] == ["test"]
    assert final[0]["step"] == 10 and final[0]["n"] == 10 and final[0]["exact"] == summary["exact"]


# ---------------------------------------------------------------- --init-from
def test_init_from_starts_a_new_run_from_a_checkpoints_weights(tmp_path, data):
    source_cfg = RunConfig.from_dict({"model": {"n_layer": 2, "d_model": 48, "n_head": 4, "context": 16},
                                      "train": {"steps": 5}})
    model = model_from_config(source_cfg)
    model.init_weights(123)
    source = save_model_checkpoint(tmp_path / "source", model, CharTokenizer(), source_cfg, step=777,
                                   trainer_state={"anything": 1}, with_optimizer=False)
    run = tmp_path / "run"
    # the config names another shape: the checkpoint's wins; lr ~0 keeps its weights
    proc = odin("train", "--init-from", str(source), "--config", str(config(tmp_path, 4)), "--lr", "1e-9",
                "--data", str(data), "--out", str(run), "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    loaded = load_model_checkpoint(run / "checkpoint")
    assert loaded.step == 4 and loaded.run_config.model == source_cfg.model
    assert loaded.trainer_state["init_from"] == str(source.resolve())
    assert np.allclose(loaded.model.params, model.params, atol=1e-6)
    fresh = model_from_config(source_cfg)
    fresh.init_weights(source_cfg.model.init_seed)
    assert not np.allclose(loaded.model.params, fresh.params, atol=1e-3)

    bpe_cfg = RunConfig.from_dict({"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16,
                                             "vocab_size": 300}})
    bpe_model = model_from_config(bpe_cfg)
    bpe_model.init_weights(0)
    bpe = save_model_checkpoint(tmp_path / "bpe", bpe_model, BPETokenizer.train(["the cat sat on the mat\n"] * 30, 300),
                                bpe_cfg, step=0)
    line = one_line_error(odin("train", "--init-from", str(bpe), "--config", str(config(tmp_path, 4)),
                               "--data", str(data), "--out", str(tmp_path / "run2")))
    assert "its tokenizer (BPE" in line and "char tokenizer" in line
    assert not (tmp_path / "run2").exists()


def test_a_start_that_fails_after_creating_the_folder_leaves_no_folder(tmp_path, data):
    from odin.train import train

    cfg = RunConfig.from_dict({"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16},
                               "train": {"batch_size": 16, "steps": 5}})

    def fails(trainer):  # anything between creating the folder and the first step
        raise RuntimeError("failed while starting")

    with pytest.raises(RuntimeError, match="failed while starting"):
        train(cfg, data, tmp_path / "new", threads=1, progress=False, on_trainer=fails)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="failed while starting"):
        train(cfg, data, tmp_path / "kept", threads=1, progress=False, on_trainer=fails)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["metrics.jsonl", "notes.txt"]
