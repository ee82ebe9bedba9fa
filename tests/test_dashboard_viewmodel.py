"""The dashboard's plain-Python parts: view-model, session, chat, pipeline reader, forms.

None of this needs a display; the Dear PyGui layer is tested in test_dashboard_gui.py.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from odin.config import preset_config
from odin.data.dataset import build_dataset
from odin.native import NanError
from odin.spheres import Snapshot, SphereStats, StepRecord
from odin.tokenizers import CHAR_VOCAB_SIZE
from odin_dashboard.chat import ChatModel, ChatWorker, clone_model
from odin_dashboard.checkpoints import copy_checkpoint, place_for_resume
from odin_dashboard.session import Phase, StartRequest, TrainingSession
from odin_dashboard.viewmodel.dashboard import DashboardViewModel, SessionState, controls_view
from odin_dashboard.viewmodel.forms import (
    TrainForm, build_dataset_for, check_form, dataset_build_spec, dataset_status, describe_build_spec,
    form_with_preset, is_default_data_dir, run_config_from_form,
)
from odin_dashboard.viewmodel.formatting import compact_count, distinct_counts, fmt_duration
from odin_dashboard.viewmodel.pacing import FramePacer
from odin_dashboard.viewmodel.plotaxes import ema, hover_text, log_axis
from odin_dashboard.viewmodel.runfolder import continue_problem, existing_run, final_test_score, fresh_run_dir
from odin_dashboard.viewmodel.history import DecimatingHistory
from odin_dashboard.viewmodel.pipeline import NO_PIPELINE, TrainingSummary, read_pipeline_state
from odin_dashboard.viewmodel.ring import STATE_COLOURS, LoadMeter, build_ring

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "add2"
    build_dataset(folder, seed=7, n_examples=400, ops=["add"], max_digits=2, reverse_answer=True)
    return folder


def tiny_config(steps: int = 40, eval_every: int = 20):
    config = preset_config("tiny")
    train = dataclasses.replace(config.train, batch_size=24, steps=steps, eval_every=eval_every,
                                eval_examples=16, checkpoint_every=0, warmup_steps=5)
    return dataclasses.replace(config, train=train)


def snapshot(step: int = 10, states: tuple[str, ...] = ("forward",) * 12, busy: float = 0.0,
             threads: int = 2, paused: bool = False, running: bool = True) -> Snapshot:
    spheres = [SphereStats(state, rows=2, microbatches=step, tokens=20 * step, last_loss=1.0 + i / 10,
                           last_grad_norm=0.5, busy_seconds=busy) for i, state in enumerate(states)]
    return Snapshot(step=step, lr=1e-3, loss=1.25, grad_norm=0.75, tokens_per_s=12_345.0, step_seconds=0.02,
                    tokens=240 * step, threads=threads, running=running, paused=paused, stopped=False,
                    root_state="waiting", spheres=spheres)


def record(step: int, loss: float = 2.0) -> StepRecord:
    return StepRecord(step=step, loss=loss, grad_norm=1.0, lr=1e-3, tokens_per_s=1000.0,
                      sphere_loss=[loss + i for i in range(12)], sphere_grad_norm=[0.1 * (i + 1) for i in range(12)])


# ---------------------------------------------------------------------- history
def test_history_stays_bounded_and_keeps_the_mean() -> None:
    history = DecimatingHistory(("loss", "x2"), capacity=8)
    for step in range(1, 101):
        history.append(step, [float(step), 2.0 * step])
    assert len(history) <= 8 + 1
    assert history.stride == 16  # 100 records squeezed into <= 8 points: pairs merged 4 times
    steps, values = history.series("loss")
    assert steps == values  # loss == step here, and buckets average both the same way
    assert steps == sorted(steps) and steps[-1] <= 100
    _, doubled = history.series("x2")
    assert doubled == [2 * v for v in values]
    # every stored point is the mean of a contiguous run of steps
    assert steps[0] == pytest.approx((1 + 16) / 2)


def test_history_shows_the_newest_partial_bucket_and_clears() -> None:
    history = DecimatingHistory(("loss",), capacity=4)
    for step in range(1, 6):
        history.append(step, [10.0])
    assert history.stride == 2 and history.series("loss")[0][-1] == 5.0  # the partial bucket: step 5
    with pytest.raises(ValueError):
        history.append(6, [1.0, 2.0])
    history.clear()
    assert len(history) == 0 and history.stride == 1


# ---------------------------------------------------------------------- ring
def test_ring_places_twelve_spheres_around_the_root_without_overlap() -> None:
    states = ("idle", "forward", "backward", "waiting", "reducing") * 2 + ("forward", "idle")
    ring = build_ring(420, 440, snapshot(1234, states).spheres, [0.5] * 12, root_state="reducing",
                      step=1234, total_steps=4000, loss=0.5)
    assert len(ring.spheres) == 12
    cx, cy = ring.root.center
    distances = [math.dist(node.center, (cx, cy)) for node in ring.spheres]
    assert max(distances) - min(distances) < 1e-6  # one ring
    for a, b in zip(ring.spheres, ring.spheres[1:] + ring.spheres[:1]):
        assert math.dist(a.center, b.center) > 2 * a.radius  # neighbours do not overlap
    assert min(distances) - ring.spheres[0].radius > ring.root.radius  # nor do they touch the root
    for node in ring.spheres:
        assert 0 <= node.center[0] - node.radius and node.center[0] + node.radius <= 420
        assert node.state == states[node.index] and node.label == "1234"
    assert ring.root.lines == ["root", "step 1,234 / 4,000", "loss 0.5000"]
    assert [name for name, _ in ring.legend] == ["idle", "forward", "backward", "waiting", "reducing"]
    assert all(spoke.colour == STATE_COLOURS["reducing"] for spoke in ring.spokes)  # the root reduces


def test_ring_colour_brightens_with_load_and_arc_follows_it() -> None:
    spheres = snapshot(5, ("backward",) * 12).spheres
    loads = [i / 11 for i in range(12)]
    ring = build_ring(420, 440, spheres, loads)
    brightness = [sum(node.fill[:3]) for node in ring.spheres]
    assert brightness == sorted(brightness) and brightness[0] < brightness[-1]
    assert ring.spheres[0].load_arc == []  # no load, no arc
    assert len(ring.spheres[11].load_arc) > len(ring.spheres[5].load_arc) > 0
    empty = build_ring(420, 440, None, [0.0] * 12)  # before training: grey ring, no numbers
    assert all(node.state == "idle" and node.label == "-" for node in empty.spheres)


def test_load_meter_measures_busy_share_against_the_fair_share() -> None:
    meter = LoadMeter(smoothing=1.0, min_interval=0.0)
    meter.update([0.0] * 12, threads=2, now=0.0)
    # 12 spheres, 2 threads, 6 s of wall time: each sphere's fair share is 1 s of busy time
    loads = meter.update([1.0] * 6 + [0.5] * 6, threads=2, now=6.0)
    assert loads == [1.0] * 6 + [0.5] * 6
    loads = meter.update([0.0] * 12, threads=2, now=7.0)  # counters went back: a new trainer
    assert loads == [1.0] * 6 + [0.5] * 6  # kept until the next real sample


# ---------------------------------------------------------------------- dashboard view-model
def test_view_model_plots_per_sphere_series_and_one_sphere_filter() -> None:
    vm = DashboardViewModel(plot_capacity=64)
    assert vm.ingest_records([record(s, 3.0 - s / 100) for s in range(1, 51)]) == 50
    assert vm.ingest_records([record(50)]) == 0  # an overlapping poll adds nothing
    vm.ingest_evals([{"step": 20, "val_loss": 2.5, "val_exact": 0.25}, {"step": 40, "loss": 1.0}])
    plots = vm.plots()
    assert [s.label for s in plots.sphere_loss] == [f"s{i}" for i in range(1, 13)]
    assert len(plots.sphere_loss[3].x) == 50 and plots.sphere_loss[3].y[0] == pytest.approx(3.0 - 0.01 + 3)
    assert plots.sphere_grad[11].y[0] == pytest.approx(1.2)
    assert plots.val_loss.x == [20.0] and plots.val_loss.y == [2.5]
    assert all(s.visible for s in plots.sphere_loss)
    version = plots.version
    vm.show_sphere(4)
    plots = vm.plots()
    assert plots.version != version
    assert [s.visible for s in plots.sphere_grad] == [i == 4 for i in range(12)]
    with pytest.raises(ValueError):
        vm.show_sphere(12)


def test_view_model_metrics_eta_and_exact_match() -> None:
    vm = DashboardViewModel()
    vm.ingest_evals([{"step": 200, "val_loss": 0.5, "val_exact": 0.875}])
    vm.metrics(snapshot(100), now=0.0, total_steps=1000, elapsed=5.0, threads=2)
    view = vm.metrics(snapshot(200), now=10.0, total_steps=1000, elapsed=15.0, threads=2)
    rows = dict(view.rows)
    assert rows["ETA"] == "01:20"  # 10 steps/s, 800 steps left
    assert rows["val exact"] == "87.5 % @ 200"
    assert rows["tokens/s"] == "12.3k tok/s" and rows["step time"] == "20.0 ms"
    assert rows["learning rate"] == "1.00e-03" and rows["threads"] == "2"
    assert view.progress == pytest.approx(0.2) and view.progress_text == "step 200 / 1,000"
    assert dict(vm.metrics(snapshot(200, paused=True), 11.0, 1000, 16.0, 2).rows)["ETA"] == "paused"
    assert dict(vm.metrics(None, 0.0, 1000, 0.0, 3).rows)["threads"] == "3"


def test_controls_follow_the_session_state() -> None:
    ready = controls_view(SessionState("idle", active=False, paused=False, pause_requested=False,
                                       stop_requested=False))
    assert ready.start_enabled and not ready.stop_enabled and ready.settings_enabled and not ready.chat_enabled
    training = controls_view(SessionState("training", True, False, False, False, step=50, has_model=True))
    assert (training.pause_enabled, training.resume_enabled, training.stop_enabled) == (True, False, True)
    assert not training.start_enabled and not training.settings_enabled and training.save_enabled
    assert training.chat_enabled and training.status == "training: step 50"
    paused = controls_view(SessionState("training", True, True, True, False, step=60))
    assert paused.resume_enabled and not paused.pause_enabled and paused.status == "paused at step 60"
    stopping = controls_view(SessionState("training", True, False, False, True))
    assert not stopping.stop_enabled and "stopping" in stopping.status
    missing = controls_view(SessionState("idle", False, False, False, False, dataset_can_build=True,
                                         form_problems=("data/x does not exist - build a dataset there?",)))
    assert not missing.start_enabled and missing.build_dataset_visible and missing.status_level == "warn"
    nan = controls_view(SessionState("failed", False, False, False, False,
                                     error="training stopped by the engine: NaN in sphere 3 at step 7"))
    assert nan.status_level == "error" and "NaN" in nan.status and nan.start_enabled
    resume = controls_view(SessionState("idle", False, False, False, False, resume_from_step=4000))
    assert resume.start_label == "Continue from step 4,000" and not resume.continue_enabled
    loaded = controls_view(SessionState("idle", False, False, False, False, has_loaded_checkpoint=True,
                                        can_continue_loaded=True))
    assert loaded.continue_enabled and not training.load_enabled
    # a loaded pipeline (BPE) model or a finished run: chat yes, "continue it" no
    chat_only = controls_view(SessionState("idle", False, False, False, False, has_loaded_checkpoint=True,
                                           has_model=True))
    assert not chat_only.continue_enabled and chat_only.chat_enabled
    assert not resume.schedule_enabled and resume.settings_enabled  # a continued run keeps its own settings


def test_formatting() -> None:
    assert [compact_count(n) for n in (7, 1234, 125_000, 5_600_000)] == ["7", "1.2k", "125k", "5.6M"]
    assert [fmt_duration(s) for s in (42, 185, 4020, math.inf)] == ["42 s", "03:05", "1h07", "-"]


# ---------------------------------------------------------------------- forms and datasets
def test_dataset_status_for_missing_empty_broken_and_real_folders(tmp_path: Path, tiny_dataset: Path) -> None:
    missing = dataset_status(tmp_path / "nope")
    assert not missing.ready and missing.can_build and "does not exist" in missing.message
    empty = dataset_status(tmp_path)
    assert not empty.ready and empty.can_build and "no dataset" in empty.message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_text("{not json")
    assert not dataset_status(broken).ready and not dataset_status(broken).can_build
    real = dataset_status(tiny_dataset)
    assert real.ready and real.reverse_answer and "training examples (add, 1-2 digits, reversed" in real.message


def test_preset_choice_sets_its_dataset_folder_and_build_spec() -> None:
    form = form_with_preset(TrainForm(data_dir="somewhere"), "arith-3digit")
    assert form.data_dir == "data/arith-3digit" and (form.steps, form.batch_size) == (4000, 128)
    assert is_default_data_dir(form) and not is_default_data_dir(dataclasses.replace(form, data_dir="x"))
    tiny = form_with_preset(form, "tiny")
    assert tiny.data_dir == "data/arith-3digit" and tiny.steps == 1000  # tiny names no dataset: kept
    spec = dataset_build_spec("tiny")  # the default recipe's data
    assert spec["ops"] == ["add"] and spec["max_digits"] == 3 and spec["reverse_answer"]
    assert describe_build_spec(spec) == "120,000 add problems up to 3 digits, reversed answers"


def test_build_button_writes_a_dataset(tmp_path: Path) -> None:
    spec = {"seed": 1, "n_examples": 60, "ops": ["add"], "max_digits": 2, "reverse_answer": False}
    build_dataset_for(tmp_path / "built", spec)
    status = dataset_status(tmp_path / "built")
    assert status.ready and not status.reverse_answer and status.examples == 48


def test_form_builds_the_run_config_and_lists_problems(tmp_path: Path, tiny_dataset: Path) -> None:
    form = form_with_preset(TrainForm(data_dir=str(tiny_dataset), run_dir=str(tmp_path)), "odin-100m")
    config = run_config_from_form(dataclasses.replace(form, lr=5e-4, steps=123, threads=3))
    assert config.model.vocab_size == CHAR_VOCAB_SIZE  # the char vocabulary, not the preset's 32k BPE
    assert (config.train.lr, config.train.steps, config.train.threads) == (5e-4, 123, 3)
    check = check_form(form)
    assert check.ok and "M params" in check.model_summary
    bad = check_form(dataclasses.replace(form, data_dir=str(tmp_path / "missing"), lr=-1.0, threads=0))
    assert not bad.ok and len(bad.problems) == 3
    assert "does not exist" in bad.problems[0] and "lr" in bad.problems[2]
    assert "load a checkpoint" in check_form(dataclasses.replace(form, resume=True)).problems[0]


# ---------------------------------------------------------------------- pipeline panel
def make_pipeline_db(folder: Path) -> Path:
    path = folder / "pipeline.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items(hash TEXT PRIMARY KEY, stage TEXT, status TEXT, name TEXT, "
                   "error TEXT, updated REAL)")
        rows = [("a", "crawl", "done", "a.txt", None, 1.0), ("b", "preprocess", "running", "b.html", None, 5.0),
                ("c", "tokenize", "pending", "c.txt", None, 2.0), ("d", "tokenize", "done", "d.txt", None, 3.0),
                ("e", "preprocess", "quarantined", "e.pdf", "not UTF-8 after 3 tries", 4.0),
                ("f", "crawl", "failed", "f.url", "timeout", 6.0), ("g", "train", "done", "g.bin", None, 7.0)]
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", rows)
    return path


def test_pipeline_panel_reads_stage_counts_progress_and_quarantine(tmp_path: Path) -> None:
    assert read_pipeline_state(tmp_path) == NO_PIPELINE
    assert read_pipeline_state(None).message == "no pipeline running"
    make_pipeline_db(tmp_path)
    view = read_pipeline_state(tmp_path)
    assert view.running and view.message == "pipeline: 7 items in 4 stages"
    assert [s.stage for s in view.stages] == ["crawl", "preprocess", "tokenize", "train"]
    counts = {s.stage: s.counts for s in view.stages}
    assert counts["crawl"] == {"done": 1, "failed": 1} and counts["tokenize"] == {"pending": 1, "done": 1}
    assert view.in_progress == ["b.html (preprocess)"]
    assert view.quarantine_total == 1 and view.quarantine[0].error == "not UTF-8 after 3 tries"
    assert view.training is None  # a database without the pipeline's shards table


def test_pipeline_panel_reports_a_broken_database_instead_of_raising(tmp_path: Path) -> None:
    (tmp_path / "pipeline.db").write_bytes(b"this is not sqlite" * 100)
    view = read_pipeline_state(tmp_path)
    assert not view.running and "unreadable" in view.message
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "pipeline.db") as db:
        db.execute("CREATE TABLE something(x)")
    assert "no such table: items" in read_pipeline_state(other).message


def test_pipeline_panel_reads_what_odin_pipeline_writes(tmp_path: Path) -> None:
    """The real pipeline.db schema (odin.pipeline.store): stage counts plus the training line."""
    from odin.pipeline.store import Store

    store = Store(tmp_path / "pipeline.db")
    store.insert_item("a", stage="train", status="done", name="a.txt")
    store.insert_item("b", stage="preprocess", status="running", name="b.md")
    store.insert_item("c", stage="crawl", status="quarantined", name="http://x/y", error="HTTP 404 Not Found")
    assert read_pipeline_state(tmp_path).training == TrainingSummary(0, 0, 0, 0, None, None)
    with store.tx() as db:
        for seq, (status, loss) in enumerate([("trained", 6.5), ("trained", 5.25), ("pending", None)], 1):
            db.execute("INSERT INTO shards(id, seq, tokens, val_tokens, steps, status, step_end, val_loss) "
                       "VALUES(?, ?, 1000, 100, 40, ?, ?, ?)", (f"s{seq}", seq, status, 40 * seq, loss))
    view = read_pipeline_state(tmp_path)
    assert view.running and view.in_progress == ["b.md (preprocess)"] and view.quarantine_total == 1
    assert view.training == TrainingSummary(2, 3, 80, 2000, 6.5, 5.25)
    assert view.training.line() == "training: 2/3 shards, step 80, 2,000 tokens, val loss 5.250 (first shard 6.500)"
    assert read_pipeline_state(tmp_path / "elsewhere") == NO_PIPELINE
    # the data field pointing at a pipeline folder: explained, and no offer to build a dataset there
    status = dataset_status(tmp_path)
    assert not status.ready and not status.can_build and "odin-pipeline folder" in status.message


# ---------------------------------------------------------------------- session
def test_session_trains_changes_threads_stops_and_keeps_the_checkpoint(tmp_path: Path, tiny_dataset: Path) -> None:
    from odin.checkpoint import load_model_checkpoint

    session = TrainingSession()
    session.start(StartRequest(tiny_config(steps=100_000, eval_every=20), tiny_dataset, tmp_path, threads=1))
    deadline = time.monotonic() + 30
    while (session.snapshot() is None or session.snapshot().step < 25) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert session.phase == Phase.TRAINING and session.snapshot().threads == 1
    session.set_threads(2)
    step_at_change = session.snapshot().step
    while session.snapshot().step < step_at_change + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert session.snapshot().threads == 2
    records = session.new_records()
    assert records and records[0].step == 1 and len(records[0].sphere_loss) == 12
    assert session.new_records() == [] or session.new_records()[0].step > records[-1].step
    evals = session.new_evals()
    assert evals and evals[0]["step"] == 20 and 0.0 <= evals[0]["val_exact"] <= 1.0
    session.stop()
    assert session.join(30)
    assert session.phase == Phase.STOPPED and session.error is None and session.final_exact is None
    info = session.latest_checkpoint()
    assert info is not None and info.step == session.snapshot().step > 25
    assert load_model_checkpoint(info.path).step == info.step


def task_ids() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_session_trains_at_a_higher_nice_value_than_the_window(tmp_path: Path, tiny_dataset: Path) -> None:
    """The training thread and every worker it spawns (also after a thread-count change
    asked for from the window's thread) yield the CPU to the window's thread, which keeps
    its own priority."""
    window_thread = threading.get_native_id()
    window_nice = os.getpriority(os.PRIO_PROCESS, window_thread)
    before = task_ids()
    session = TrainingSession()
    session.start(StartRequest(tiny_config(steps=100_000, eval_every=0), tiny_dataset, tmp_path, threads=1))
    deadline = time.monotonic() + 30
    while (session.snapshot() is None or session.snapshot().step < 5) and time.monotonic() < deadline:
        time.sleep(0.02)
    session.set_threads(2)  # from this (the window's) thread: the workers still inherit the trainer's nice
    step_at_change = session.snapshot().step
    while session.snapshot().step < step_at_change + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert session.snapshot().threads == 2
    training_threads = task_ids() - before
    niceness = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in training_threads}
    assert session._thread is not None and session._thread.native_id in training_threads
    assert len(training_threads) >= 3  # the training thread and two workers
    assert set(niceness.values()) == {min(19, window_nice + 10)}, niceness
    assert os.getpriority(os.PRIO_PROCESS, window_thread) == window_nice
    session.stop()
    assert session.join(30) and session.phase == Phase.STOPPED
    assert os.getpriority(os.PRIO_PROCESS, window_thread) == window_nice


def test_session_runs_to_the_end_and_evaluates(tmp_path: Path, tiny_dataset: Path) -> None:
    session = TrainingSession()
    session.start(StartRequest(tiny_config(steps=30, eval_every=0), tiny_dataset, tmp_path, threads=2,
                               final_eval_examples=20))
    assert session.join(30)
    assert session.phase == Phase.FINISHED and session.snapshot().step == 30
    assert session.final_exact is not None and 0.0 <= session.final_exact <= 1.0


def test_a_finished_session_writes_its_test_score_to_metrics_and_the_view_shows_it(
        tmp_path: Path, tiny_dataset: Path) -> None:
    session = TrainingSession()
    session.start(StartRequest(tiny_config(steps=30, eval_every=0), tiny_dataset, tmp_path, threads=1,
                               final_eval_examples=20))
    assert session.join(30) and session.phase == Phase.FINISHED
    assert final_test_score(tmp_path) == (30, session.final_exact)  # the run folder keeps its score
    vm = DashboardViewModel()
    vm.ingest_evals(session.new_evals())  # read from metrics.jsonl like the periodic evaluations
    rows = dict(vm.metrics(None, 0.0, 30, 1.0, 1).rows)
    assert rows["test exact"] == f"{100 * session.final_exact:.1f} % @ 30"


def test_session_starts_over_an_existing_run_only_when_told_to(tmp_path: Path, tiny_dataset: Path) -> None:
    first = TrainingSession()
    first.start(StartRequest(tiny_config(steps=20, eval_every=0), tiny_dataset, tmp_path, threads=1,
                             final_eval_examples=0))
    assert first.join(30) and first.phase == Phase.FINISHED
    log = (tmp_path / "metrics.jsonl").read_bytes()
    refused = TrainingSession()  # odin train's own refusal stands behind the dashboard's dialog
    refused.start(StartRequest(tiny_config(steps=10, eval_every=0), tiny_dataset, tmp_path, threads=1))
    assert refused.join(30) and refused.phase == Phase.FAILED and "already holds a run" in refused.error
    assert (tmp_path / "metrics.jsonl").read_bytes() == log
    again = TrainingSession()  # the dialog's "Start over (overwrite it)"
    again.start(StartRequest(tiny_config(steps=10, eval_every=0), tiny_dataset, tmp_path, threads=1,
                             overwrite=True, final_eval_examples=0))
    assert again.join(30) and again.phase == Phase.FINISHED, again.error
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 10
    assert again.latest_checkpoint().step == 10


def test_session_shows_a_nan_stop_and_bad_data_as_errors(tmp_path: Path) -> None:
    def nan_train(*args, on_trainer=None, **kwargs):
        raise NanError("NaN/Inf in the loss of sphere 4 at step 17; training stopped, no checkpoint was written")

    session = TrainingSession(train_fn=nan_train)
    session.start(StartRequest(tiny_config(), tmp_path, tmp_path / "run", threads=1))
    assert session.join(5)
    assert session.phase == Phase.FAILED and "sphere 4 at step 17" in session.error
    assert session.error.startswith("training stopped by the engine")

    real = TrainingSession()
    real.start(StartRequest(tiny_config(), tmp_path / "no-such-dataset", tmp_path / "run", threads=1))
    assert real.join(10)
    assert real.phase == Phase.FAILED and "dataset directory not found" in real.error


def test_session_requests_before_the_trainer_exists_are_honoured(tmp_path: Path) -> None:
    attached = []

    class FakeTrainer:
        def stop(self) -> None:
            attached.append("stop")

        def set_threads(self, n: int) -> None:
            attached.append(f"threads {n}")

        def snapshot(self):
            return snapshot(0)

    def slow_train(*args, on_trainer=None, **kwargs):
        time.sleep(0.2)
        on_trainer(FakeTrainer())
        return None

    session = TrainingSession(train_fn=slow_train)
    session.start(StartRequest(tiny_config(), tmp_path, tmp_path, threads=1))
    session.set_threads(3)  # moved while the data loads: applied once the trainer exists
    session.stop()
    assert session.join(5) and attached == ["threads 3", "stop"] and session.phase == Phase.STOPPED


# ---------------------------------------------------------------------- chat
def chat_model(reverse: bool) -> ChatModel:
    from odin.checkpoint import model_from_config
    from odin.tokenizers import CharTokenizer

    config = preset_config("tiny")
    model = model_from_config(config)
    model.init_weights(3)
    return ChatModel(model, config, CharTokenizer(), reverse, "test")


def test_chat_streams_an_answer_from_a_private_copy_of_the_weights() -> None:
    source = chat_model(reverse=True)
    clone = clone_model(source)
    assert np.array_equal(clone.params, source.model.params)
    clone.params[...] = 0.0
    assert np.abs(source.model.params).sum() > 0  # the copy never aliases the live weights
    worker = ChatWorker(max_new_tokens=6)
    assert worker.ask("   ", source) is not None and worker.ask("1+2=", None) is not None
    assert worker.ask("12+34=", source) is None
    worker.wait(10)
    assert worker.drain()
    turn = worker.turns[0]
    assert turn.done and turn.error is None and 0 < len(turn.raw) <= 6
    from odin.data.arithmetic import answer_to_display

    assert turn.answer == answer_to_display(turn.raw, True)
    assert worker.transcript().startswith("> 12+34=")


def test_chat_reads_new_lines_typed_as_backslash_n() -> None:
    # the chat box is one line; a program's lines come as \n (a bad escape is refused)
    worker = ChatWorker(max_new_tokens=4)
    source = chat_model(reverse=False)
    assert "unknown escape \\q" in worker.ask("1\\q", source)
    assert worker.ask("1+2\\n3=", source) is None
    worker.wait(10)
    worker.drain()
    turn = worker.turns[0]
    assert turn.prompt == "1+2\n3=" and turn.done and turn.error is None
    assert worker.transcript().startswith("> 1+2\n3=")


def test_chat_reports_prompts_the_model_cannot_read() -> None:
    worker = ChatWorker()
    worker.ask("héllo ☃", chat_model(reverse=False))
    worker.wait(10)
    worker.drain()
    assert worker.turns[0].done and "not in the char tokenizer vocabulary" in worker.turns[0].error
    assert "(error:" in worker.transcript()


# ---------------------------------------------------------------------- checkpoints, system, entry point
def test_copy_and_place_checkpoints(tmp_path: Path) -> None:
    source = tmp_path / "a" / "checkpoint"
    source.mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights")
    copy_checkpoint(source, tmp_path / "b" / "saved")
    assert (tmp_path / "b" / "saved" / "model.safetensors").read_bytes() == b"weights"
    (source / "model.safetensors").write_bytes(b"newer")
    copy_checkpoint(source, tmp_path / "b" / "saved")  # replaces the older copy
    assert (tmp_path / "b" / "saved" / "model.safetensors").read_bytes() == b"newer"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["saved"]  # no temp folders left
    assert place_for_resume(source, tmp_path / "a") == tmp_path / "a"  # already in place
    assert place_for_resume(tmp_path / "b" / "saved", tmp_path / "c") == tmp_path / "c"
    with pytest.raises(ValueError, match="already holds another checkpoint"):
        place_for_resume(tmp_path / "b" / "saved", tmp_path / "a")
    with pytest.raises(FileNotFoundError):
        copy_checkpoint(tmp_path, tmp_path / "x")


def test_system_sampler_reports_cores_and_memory() -> None:
    from odin_dashboard.viewmodel.system import SystemSampler

    sampler = SystemSampler(interval=1.0)
    view = sampler.sample(now=100.0)
    assert len(view.cores) == (os.cpu_count() or 1) and all(0.0 <= c <= 1.0 for c in view.cores)
    assert view.process_rss > 0 and 0 < view.memory_fraction < 1 and "MiB" in view.memory_text
    assert sampler.sample(now=100.5) is view  # not re-sampled within the interval


def test_view_model_modules_do_not_import_the_gui() -> None:
    code = ("import sys, odin_dashboard.main, odin_dashboard.session, odin_dashboard.chat, "
            "odin_dashboard.checkpoints, odin_dashboard.viewmodel.dashboard, odin_dashboard.viewmodel.forms, "
            "odin_dashboard.viewmodel.pipeline, odin_dashboard.viewmodel.system; "
            "print('dearpygui' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_display_exits_2_and_says_how_to_run_headless() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-m", "odin_dashboard.main", "--exit-after", "1"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "DISPLAY is not set" in out.stderr and "xvfb-run -a" in out.stderr and "odin train" in out.stderr
    env["DISPLAY"] = ":987"  # a display that does not exist: caught before Dear PyGui would abort
    out = subprocess.run([sys.executable, "-m", "odin_dashboard.main"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "cannot open the X display ':987'" in out.stderr


def test_usage_errors_exit_2() -> None:
    from odin_dashboard.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--preset", "nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--screenshot", "x.png"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------- issue 18: responsiveness, run folders, plots
def test_pacer_draws_promptly_while_the_user_types_and_slowly_when_idle() -> None:
    """The cause of seconds of typing lag: with a 100 ms frame (software OpenGL under load)
    the loop waited 0.5 s between frames, and a key is only seen when a frame is drawn."""
    pacer = FramePacer(fps=30)
    for _ in range(200):
        pacer.rendered(0.1)
    assert pacer.interval(now=100.0) == pytest.approx(0.5)  # idle: drawing keeps under 20 % of a core
    pacer.input_seen(100.0)  # a key press (seen through the handler registry)
    assert pacer.interval(now=100.1) == pytest.approx(1 / 30)  # frames back to back while typing
    assert pacer.sleep_before_next(now=100.2, frame_started=100.1) == 0.0  # a 100 ms frame: no sleep at all
    assert pacer.interval(now=101.9) == pytest.approx(1 / 30)
    assert pacer.interval(now=102.5) == pytest.approx(0.5)  # two seconds after the last input: idle again
    # a text field with the keyboard: the first key after a pause waits at most 50 ms for a frame
    assert pacer.interval(now=103.0, editing=True) == pytest.approx(0.05)
    assert pacer.interval(now=200.0, editing=True) == pytest.approx(0.5)  # left focused for minutes: idle
    with pytest.raises(ValueError, match="fps"):
        FramePacer(fps=0)


def test_a_run_folder_that_holds_a_run_is_recognised_and_a_fresh_name_offered(
        tmp_path: Path, tiny_dataset: Path) -> None:
    from odin.train import train

    run = tmp_path / "run"
    assert existing_run(run) is None and fresh_run_dir(run) == run
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    assert existing_run(run) is None  # an empty log is not a run
    train(tiny_config(steps=12, eval_every=0), tiny_dataset, run, threads=1, progress=False, final_eval_splits=())
    found = existing_run(run)
    assert found is not None and found.checkpoint_step == 12 and found.metrics_lines == 12
    assert found.total_steps == 12 and "finished (step 12 of 12)" in found.continue_problem
    assert found.describe() == f"{run} already holds a run (a checkpoint at step 12 and 12 lines of metrics.jsonl)"
    assert fresh_run_dir(run) == tmp_path / "run-2"
    (tmp_path / "run-2").mkdir()
    assert fresh_run_dir(run) == tmp_path / "run-3"  # an existing folder is never reused, even an empty one
    assert fresh_run_dir(tmp_path / "run-3") == tmp_path / "run-3"
    only_log = tmp_path / "log-only"
    only_log.mkdir()
    (only_log / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert existing_run(only_log).continue_problem == "there is no checkpoint to continue"


def test_continue_is_offered_only_for_checkpoints_the_dashboard_can_train(
        tmp_path: Path, tiny_dataset: Path) -> None:
    from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
    from odin.tokenizers import BPETokenizer
    from odin.train import train

    train(tiny_config(steps=40, eval_every=0), tiny_dataset, tmp_path / "stopped", threads=1, progress=False,
          final_eval_splits=(), on_trainer=lambda trainer: trainer.stop())  # stopped early: can continue
    stopped = load_model_checkpoint(tmp_path / "stopped" / "checkpoint", with_optimizer=False)  # as the dashboard
    assert stopped.step < 40 and continue_problem(stopped) is None
    assert not stopped.model.has_training_blocks  # the chat holds the weights alone
    train(tiny_config(steps=8, eval_every=0), tiny_dataset, tmp_path / "done", threads=1, progress=False,
          final_eval_splits=())
    assert "nothing is left to train" in continue_problem(load_model_checkpoint(tmp_path / "done" / "checkpoint"))

    # a pipeline model: BPE tokenizer (the dashboard trains char models on reasoning sets)
    bpe = BPETokenizer.train(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300)
    config = preset_config("tiny", vocab_size=bpe.vocab_size)
    model = model_from_config(config)
    model.init_weights(1)
    save_model_checkpoint(tmp_path / "bpe", model, bpe, config, step=5, trainer_state={"pipeline": {"shard": 1}})
    problem = continue_problem(load_model_checkpoint(tmp_path / "bpe"))
    assert problem is not None and "BPE tokenizer" in problem and "odin-pipeline" in problem
    export = tmp_path / "export"
    save_model_checkpoint(export, model_from_config(preset_config("tiny")), stopped.tokenizer,
                          preset_config("tiny"), step=0, with_optimizer=False)
    assert "cannot be continued exactly" in continue_problem(load_model_checkpoint(export))


def test_continuing_a_checkpoint_keeps_its_own_settings(tiny_dataset: Path) -> None:
    base = tiny_config(steps=300, eval_every=30)
    form = TrainForm(preset="small", data_dir=str(tiny_dataset), run_dir="runs/x", threads=3, lr=0.5,
                     batch_size=7, steps=9, eval_every=1, resume=True)
    config = check_form(form, base).run_config
    assert config.model == base.model and config.train == dataclasses.replace(base.train, threads=3)


def test_sphere_counts_that_differ_read_differently() -> None:
    assert compact_count(2431) == compact_count(2436) == "2.4k"  # why the ring could not tell them apart
    assert distinct_counts([2431, 2436, 2440, 7]) == ["2431", "2436", "2440", "7"]
    assert distinct_counts([12_431_000, 12_436_000]) == ["12.43M", "12.44M"]  # as many digits as it takes
    assert distinct_counts([5_000_000, 5_000_000]) == ["5.0M", "5.0M"]  # equal counts may read the same
    ring = build_ring(420, 440, [type("S", (), {"state": "idle", "microbatches": 2400 + i, "rows": 1})()
                                 for i in range(12)], [0.0] * 12)
    assert len({node.label for node in ring.spheres}) == 12


def test_log_axes_have_sane_limits_when_empty_and_enough_ticks() -> None:
    empty = log_axis([[], [math.nan]])
    assert (empty.low, empty.high) == (0.1, 10.0) and [t[0] for t in empty.ticks] == ["0.1", "1", "10"]
    for values in ([0.31, 0.9], [0.41, 0.43], [2.0, 2.0], [1e-5, 40.0], [0.05, 0.07]):
        axis = log_axis([values, [0.0, -1.0, math.inf]])  # non-positive and infinite values are ignored
        assert axis.low <= min(values) and axis.high >= max(values)
        labels = [label for label, _ in axis.ticks]
        assert len(labels) >= 3 and len(set(labels)) == len(labels), (values, axis)
        assert all(axis.low <= value <= axis.high for _, value in axis.ticks)
    assert [t[0] for t in log_axis([[0.31, 0.9]]).ticks] == ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    vm = DashboardViewModel()
    view = vm.plots()  # no data yet: the gradient plot's axis is 0.1 .. 10, not 1e-306 .. 1
    assert (view.grad_axis.low, view.grad_axis.high) == (0.1, 10.0)


def test_smoothing_and_the_values_under_the_mouse() -> None:
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: no pull towards 0
    smoothed = ema([0.0, 10.0, math.nan, 10.0], 0.5)
    assert smoothed[:2] == pytest.approx([0.0, 20 / 3]) and math.isnan(smoothed[2])
    with pytest.raises(ValueError, match="smoothing"):
        ema([1.0], 1.0)
    vm = DashboardViewModel()
    vm.ingest_records([record(step, loss=10.0 if step % 2 else 0.0) for step in range(1, 41)])
    raw = vm.plots().sphere_loss[0]
    vm.set_smoothing(0.9)
    smooth = vm.plots().sphere_loss[0]
    assert smooth.raw == raw.y and max(smooth.y[10:]) - min(smooth.y[10:]) < 0.5 * (max(raw.y) - min(raw.y))
    text = vm.hover("loss", 20.3).splitlines()  # nearest step 20 (loss 0 + i), highest value first
    assert text[0] == "step 20" and text[1].split() == ["s12", "15.74", "(raw", "11)"] and len(text) == 13
    vm.show_sphere(2)
    assert vm.hover("grad", 1e9).splitlines()[:2][0] == "step 40" and len(vm.hover("grad", 1e9).splitlines()) == 2
    assert hover_text([], 3.0) == ""
