"""`mpirun -np N odin train`: the spheres over several processes, as a user starts them.

Weights and AdamW moments after a run over any split of ranks x threads equal a one-process
run's bit for bit (the files are compared byte for byte); a killed rank and a silent one stop
every rank in bounded time with a line naming it; a run stopped that way resumes with another
rank count and ends where an uninterrupted run ends. Needs OpenMPI (`mpirun`) and mpi4py: on a
developer's machine without them these tests skip and say so; in CI (which installs both) a
missing one fails.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from interchange_models import in_ci
from odin.checkpoint_io import read_progress
from odin.data.dataset import build_dataset
from pipeline_helpers import config_text, pipeline_cmd, write_docs
from test_train_runs import odin, odin_cmd

MPIRUN = shutil.which("mpirun")
HELPER = Path(__file__).with_name("mpi_trainer_check.py")
LONG = 800  # steps of a run killed midway and then resumed to its end (a few ms each)
ENDLESS = 100_000  # steps of a run that is stopped midway and never finished

RUN = """
[model]
arch = "{arch}"
n_layer = 1
d_model = 32
n_head = 2
context = 16
[train]
batch_size = {batch}
steps = {steps}
warmup_steps = 5
eval_every = 0
checkpoint_every = {every}
"""


@pytest.fixture(autouse=True)
def require_mpi() -> None:
    missing = [what for what, there in (("mpirun (apt install openmpi-bin libopenmpi-dev)", MPIRUN),
                                        ("mpi4py (pip install 'odin[mpi]')", importlib.util.find_spec("mpi4py")))
               if not there]
    if missing:
        if in_ci():
            pytest.fail(f"CI must test MPI runs; missing: {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


def mpi_env(**extra: str) -> dict[str, str]:
    # OpenMPI refuses root unless told; CI containers run as root
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_btl_vader_single_copy_mechanism": "none", **extra}


def mpirun(ranks: int, *args: str) -> list[str]:
    return [MPIRUN, "--oversubscribe", "-np", str(ranks), *args]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d"
    build_dataset(path, seed=7, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True, n_heldout=0)
    return path


def config(tmp_path: Path, steps: int, every: int = 0, batch: int = 16, arch: str = "gpt") -> Path:
    path = tmp_path / f"run-{arch}-{steps}-{every}-{batch}.toml"
    path.write_text(RUN.format(arch=arch, steps=steps, every=every, batch=batch), encoding="utf-8")
    return path


def checkpoint_bytes(run: Path) -> dict[str, str]:
    """The files that hold the weights, the moments, the step and the sampler's position."""
    return {name: hashlib.sha256((run / "checkpoint" / name).read_bytes()).hexdigest()
            for name in ("model.safetensors", "optimizer.safetensors")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data) -> dict[str, dict[str, str]]:
    """One process, two threads: the runs every split must equal (GPT and RWKV)."""
    out = {}
    for arch in ("gpt", "rwkv"):
        tmp = tmp_path_factory.mktemp(f"ref-{arch}")
        proc = odin("train", "--config", str(config(tmp, 24, arch=arch)), "--data", str(data), "--out",
                    str(tmp / "run"), "--threads", "2", "--json")
        assert proc.returncode == 0, proc.stderr
        out[arch] = checkpoint_bytes(tmp / "run")
    return out


@pytest.mark.parametrize("arch,ranks,threads", [("gpt", 2, 1), ("gpt", 3, 1), ("gpt", 2, 2), ("rwkv", 3, 1)])
def test_any_split_of_ranks_and_threads_gives_the_one_process_weights(tmp_path, data, reference, arch, ranks,
                                                                      threads):
    run = tmp_path / "run"
    proc = subprocess.run(mpirun(ranks, *odin_cmd("train", "--config", str(config(tmp_path, 24, arch=arch)),
                                                  "--data", str(data), "--out", str(run), "--threads",
                                                  str(threads))),
                          capture_output=True, text=True, timeout=180, env=mpi_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_bytes(run) == reference[arch]
    # rank 0 alone writes and talks: one header, one metrics line per step
    assert proc.stderr.count("training ") == 1 and f"x {ranks} MPI ranks" in proc.stderr, proc.stderr
    assert proc.stdout.count("trained 24 steps") == 1, proc.stdout
    assert (run / "metrics.jsonl").read_text().count('"loss"') == 24


def test_the_trainer_api_matches_one_process_and_reports_every_sphere(tmp_path):
    # the Python API under mpirun: weights, the loss, and all 12 spheres' statistics on every rank
    single = subprocess.run([sys.executable, str(HELPER), "1"], capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    split = subprocess.run(mpirun(3, sys.executable, str(HELPER), "1"), capture_output=True, text=True,
                           timeout=120, env=mpi_env())
    assert split.returncode == 0, split.stderr[-3000:]
    lines = split.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line == single.stdout.strip() for line in lines), (single.stdout, lines)


def test_the_pipeline_over_ranks_trains_the_one_process_checkpoint(tmp_path):
    # odin-pipeline run over 2 ranks: rank 0 is the pipeline, rank 1 trains every step with it.
    # Which texts train the tokenizer and fill which shard depends on timing (a stream), so
    # both runs start from one prepared folder without its checkpoints: the trainer then
    # trains the same shards in the same order, and only the ranks differ
    config = tmp_path / "pipeline.toml"
    config.write_text(config_text())
    base = tmp_path / "base"
    write_docs(base / "inbox", 30)
    prepared = subprocess.run(pipeline_cmd(base, "--config", str(config), "--once", "--quiet"),
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    runs = {}
    for name, launcher in (("one", []), ("two", mpirun(2))):
        folder = tmp_path / name
        shutil.copytree(base, folder)
        shutil.rmtree(folder / "checkpoints")
        proc = subprocess.run([*launcher, *pipeline_cmd(folder, "--config", str(config), "--once", "--quiet")],
                              capture_output=True, text=True, timeout=300, env=mpi_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (folder / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    assert runs["one"] == runs["two"]


def _rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("OMPI_COMM_WORLD_RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank} under mpirun")


def _start_and_wait_for_checkpoint(tmp_path: Path, data: Path, run: Path, ranks: int, env: dict,
                                   steps: int = ENDLESS) -> subprocess.Popen:
    launcher = subprocess.Popen(
        mpirun(ranks, *odin_cmd("train", "--config", str(config(tmp_path, steps, every=50)), "--data", str(data),
                                "--out", str(run), "--threads", "1")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while True:
        assert launcher.poll() is None, launcher.communicate()
        try:
            if read_progress(run / "checkpoint")[0] >= 50:
                return launcher
        except Exception:  # not written yet
            pass
        assert time.monotonic() < deadline, "no checkpoint in 120 s"
        time.sleep(0.05)


def test_a_killed_rank_stops_all_and_the_run_resumes_with_other_ranks_as_if_uninterrupted(tmp_path, data):
    whole = tmp_path / "whole"
    proc = odin("train", "--config", str(config(tmp_path, LONG, every=50)), "--data", str(data), "--out",
                str(whole), "--threads", "2", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    launcher = _start_and_wait_for_checkpoint(tmp_path, data, run, 2, mpi_env(), steps=LONG)
    killed_at = time.monotonic()
    _rank_process(launcher, 1).send_signal(signal.SIGKILL)
    _, err = launcher.communicate(timeout=60)
    assert time.monotonic() - killed_at < 30  # the others did not hang
    assert launcher.returncode != 0
    assert any("rank 1" in line and "signal 9" in line for line in err.splitlines()), err[-2000:]
    stopped_at = read_progress(run / "checkpoint")[0]
    assert 50 <= stopped_at < LONG
    # three ranks take over from the checkpoint the two left
    resumed = subprocess.run(mpirun(3, *odin_cmd("train", "--resume", "--out", str(run), "--threads", "1",
                                                 "--json")),
                             capture_output=True, text=True, timeout=300, env=mpi_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint_bytes(run) == checkpoint_bytes(whole)


def test_ctrl_c_to_mpirun_stops_every_rank_after_one_step_and_saves(tmp_path, data):
    # mpirun turns Ctrl-C into SIGTERM to every rank; the stop travels with the step's exchange,
    # so all ranks stop after the same step and rank 0 (alone) saves and says so
    run = tmp_path / "run"
    launcher = _start_and_wait_for_checkpoint(tmp_path, data, run, 2, mpi_env())
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=60)
    said = [line for line in err.replace("\r", "\n").splitlines() if "stopped at step" in line]
    assert len(said) == 1, err[-2000:]
    step = int(said[0].split("stopped at step ")[1].split(";")[0])
    assert read_progress(run / "checkpoint")[0] == step
    assert "Traceback" not in err


def test_a_silent_rank_is_named_and_every_rank_stops(tmp_path, data):
    # a rank that hangs or whose host is gone kills nothing mpirun can see: the heartbeat does
    run = tmp_path / "run"
    launcher = _start_and_wait_for_checkpoint(tmp_path, data, run, 2, mpi_env(ODIN_MPI_TIMEOUT="3"))
    frozen = _rank_process(launcher, 1)
    frozen.send_signal(signal.SIGSTOP)
    try:
        _, err = launcher.communicate(timeout=60)
    finally:
        try:
            frozen.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    assert launcher.returncode != 0
    named = [line for line in err.splitlines() if line.startswith("odin train: error: rank 1 has not answered")]
    assert named, err[-2000:]
    assert "Traceback" not in err


def test_more_ranks_than_slots_is_one_line(tmp_path, data):
    proc = subprocess.run(mpirun(3, *odin_cmd("train", "--config", str(config(tmp_path, 5, batch=2)), "--data",
                                              str(data), "--out", str(tmp_path / "run"), "--threads", "1")),
                          capture_output=True, text=True, timeout=120, env=mpi_env())
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("odin train: error:")]
    assert ours == ["odin train: error: 3 ranks but a batch of 2 fills only 2 slots: run at most 2 ranks "
                    "(mpirun -np 2) or raise the batch size"], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_argument_is_said_once_and_no_rank_hangs(tmp_path, data):
    proc = subprocess.run(mpirun(2, *odin_cmd("train", "--config", str(config(tmp_path, 5)), "--data",
                                              str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))),
                          capture_output=True, text=True, timeout=120, env=mpi_env())
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("odin train: error:")]
    assert len(ours) == 1 and "nowhere" in ours[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_started_by_mpirun_without_mpi4py_or_with_a_bad_timeout_is_one_line(tmp_path, data):
    # mpi4py hidden from one run (as on a machine without it); a bad ODIN_MPI_TIMEOUT in another
    hide = ("import sys; sys.modules['mpi4py'] = None; from odin.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    args = ["train", "--config", str(config(tmp_path, 5)), "--data", str(data), "--out", str(tmp_path / "run")]
    for argv, env, said in (([sys.executable, "-c", hide, *args], mpi_env(), "mpi4py is not installed"),
                            (odin_cmd(*args), mpi_env(ODIN_MPI_TIMEOUT="soon"), "ODIN_MPI_TIMEOUT must be")):
        proc = subprocess.run(mpirun(2, *argv), capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2, proc.stderr
        ours = [line for line in proc.stderr.splitlines() if line.startswith("odin train: error:")]
        assert len(ours) == 1 and said in ours[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run").exists()


def test_odin_info_says_whether_mpi_is_available():
    proc = odin("info")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("MPI"))
    assert "available: mpi4py" in line and "mpirun: " in line, line


def test_bench_mpi_counts_the_bytes_the_cost_model_states(tmp_path):
    # tools/bench_mpi.py as a user runs it, and its byte count against the model's 8 x P per
    # link: (ranks - 1) links' worth of chain and of broadcast per step
    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_mpi.py"
    for ranks in (2, 3):
        done = subprocess.run(mpirun(ranks, sys.executable, str(tool), "--worker", "tiny", "--threads", "1",
                                     "--steps", "3"), capture_output=True, text=True, timeout=120, env=mpi_env())
        assert done.returncode == 0, done.stderr[-2000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got["bytes_per_step"] == 4 * got["params"] * 2 * (ranks - 1), (ranks, got)
        assert len(got["peak_rss"]) == ranks
    done = subprocess.run([sys.executable, str(tool), "--configs", "tiny", "--pairs", "1", "--markdown"],
                          capture_output=True, text=True, timeout=300, env=mpi_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| tiny |" in done.stdout and "Cost model for N hosts" in done.stdout and "Machine:" in done.stdout
