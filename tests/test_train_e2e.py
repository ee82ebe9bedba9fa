"""End to end: build data, train on the spheres, evaluate, resume exactly, and talk to the
checkpoint with odin-infer."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from odin.checkpoint import load_model_checkpoint
from odin.config import RunConfig
from odin.data.arithmetic import answer_to_display
from odin.data.dataset import build_dataset, load_split
from odin.evaluate import evaluate_examples
from odin.train import train

ONE_DIGIT = RunConfig.from_dict({
    "model": {"n_layer": 2, "d_model": 64, "n_head": 4, "context": 16},
    "train": {"batch_size": 48, "steps": 1500, "lr": 3e-3, "warmup_steps": 30, "weight_decay": 0.1,
              "eval_every": 0, "checkpoint_every": 0, "seed": 1337},
})


@pytest.fixture(scope="module")
def one_digit(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    build_dataset(data, seed=7, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True, n_heldout=0)
    out = tmp_path_factory.mktemp("run")
    result = train(ONE_DIGIT, data, out, threads=2, progress=False, final_eval_splits=())
    return data, out, result


def test_learns_one_digit_addition(one_digit):
    """There are only 100 one-digit sums: 80 train, 20 held out. The model must get >= 90%
    of all of them and most of the 20 it never saw (learning that generalises)."""
    data, out, result = one_digit
    loaded = load_model_checkpoint(result.checkpoint, with_optimizer=False)
    unseen = load_split(data, "val") + load_split(data, "test")
    everything = load_split(data, "train") + unseen
    all_exact = evaluate_examples(loaded.model, loaded.tokenizer, everything, reverse_answer=True).exact
    unseen_exact = evaluate_examples(loaded.model, loaded.tokenizer, unseen, reverse_answer=True).exact
    assert all_exact >= 0.90, f"exact match over all 100 one-digit sums: {all_exact:.2f}"
    assert unseen_exact >= 0.75, f"exact match on the 20 unseen sums: {unseen_exact:.2f}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 1500 and np.mean(losses[-50:]) < 0.25 * np.mean(losses[:50])


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, one_digit):
    data = one_digit[0]
    cfg = RunConfig.from_dict({
        "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16},
        "train": {"batch_size": 20, "steps": 30, "lr": 3e-3, "warmup_steps": 5, "eval_every": 0,
                  "checkpoint_every": 0, "seed": 3},
    })
    straight = train(cfg, data, tmp_path / "a", threads=2, progress=False, final_eval_splits=())

    def stop_midway(trainer):  # what Ctrl-C or the dashboard's stop button does
        def watch():
            while trainer.snapshot().step < 13:
                time.sleep(0.0005)
            trainer.stop()
        threading.Thread(target=watch, daemon=True).start()

    first = train(cfg, data, tmp_path / "b", threads=1, progress=False, final_eval_splits=(), on_trainer=stop_midway)
    assert 13 <= first.steps < 30
    resumed = train(cfg, data, tmp_path / "b", resume=True, threads=2, progress=False, final_eval_splits=())
    a = load_model_checkpoint(straight.checkpoint)
    b = load_model_checkpoint(resumed.checkpoint)
    assert a.step == b.step == 30
    assert np.array_equal(a.model.params, b.model.params)
    assert np.array_equal(a.model.adam_m, b.model.adam_m) and np.array_equal(a.model.adam_v, b.model.adam_v)
    # and the files themselves: equal weights are an equal model.safetensors, byte for byte
    weights_file = "model.safetensors"
    assert (Path(straight.checkpoint) / weights_file).read_bytes() == (Path(resumed.checkpoint) / weights_file).read_bytes()


def test_resume_with_a_different_model_is_refused(tmp_path, one_digit):
    data, out, _ = one_digit
    other = RunConfig.from_dict({**ONE_DIGIT.to_dict(), "model": {**ONE_DIGIT.model.to_dict(), "d_model": 32}})
    with pytest.raises(ValueError, match="different model config"):
        train(other, data, out, resume=True, progress=False, final_eval_splits=())


def test_infer_cli_answers_in_normal_digit_order(one_digit):
    data, _, result = one_digit
    loaded = load_model_checkpoint(result.checkpoint, with_optimizer=False)
    ex = next(e for e in load_split(data, "train") if len(e.answer) == 2)  # a carry: reversal shows
    proc = subprocess.run([sys.executable, "-m", "odin.infer_cli", "-m", str(result.checkpoint), "-p", ex.prompt,
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected_raw = evaluate_examples(loaded.model, loaded.tokenizer, [ex], reverse_answer=True)
    if expected_raw.exact == 1.0:
        assert out["completion"] == answer_to_display(ex.answer, True) == str(eval(ex.prompt[:-1]))
    assert out["stopped_by"] == "end"


def test_nan_stops_training_with_sphere_step_and_intact_checkpoint(tmp_path, one_digit):
    """A NaN appearing in the weights mid-run (what a numerical blow-up looks like) must
    end training with an error naming the sphere and the step, and leave the last
    checkpoint loadable and finite."""
    import odin.native as native

    data = one_digit[0]
    cfg = RunConfig.from_dict({
        "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16},
        "train": {"batch_size": 24, "steps": 100000, "lr": 1e-3, "warmup_steps": 0,
                  "eval_every": 0, "checkpoint_every": 2, "seed": 1},
    })

    def poison_later(trainer):
        def poison():
            while trainer.snapshot().step < 6:
                time.sleep(0.0005)
            trainer.model.named_params()["lnf_w"][:] = np.nan
        threading.Thread(target=poison, daemon=True).start()

    # a sphere notices the NaN in its forward pass, or (if it lands between two C calls)
    # the checkpoint writer refuses to overwrite the good checkpoint with it
    with pytest.raises(native.NanError, match=r"(sphere \d+ failed at step \d+|weights contain NaN).*"
                                               r"checkpoint .* is intact"):
        train(cfg, data, tmp_path, threads=2, progress=False, final_eval_splits=(), on_trainer=poison_later)
    loaded = load_model_checkpoint(tmp_path / "checkpoint")
    # poisoned after step 6 with a checkpoint every 2 steps: the last good one is step 4 or later
    assert loaded.step >= 4 and np.isfinite(loaded.model.params).all()


@pytest.mark.parametrize("positions", ["learned", "alibi"])
def test_final_eval_skips_a_split_longer_than_the_context(tmp_path, positions):
    data = tmp_path / "data"
    build_dataset(data, seed=3, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True,
                  heldout_digits=8, n_heldout=10)
    cfg = RunConfig.from_dict({
        "model": {"n_layer": 1, "d_model": 16, "n_head": 2, "context": 12, "positions": positions},
        "train": {"batch_size": 12, "steps": 3, "eval_every": 0, "checkpoint_every": 0},
    })
    result = train(cfg, data, tmp_path / "run", threads=1, progress=False)
    assert "test" in result.evals and "heldout" not in result.evals
    note = result.skipped["heldout"]
    assert "needs context >= 2" in note
    assert load_model_checkpoint(result.checkpoint).step == 3
    if positions == "learned":
        assert "--context" not in note
    else:  # the note names the command that scores it, and that command works
        needed = int(note.split("--context ")[1].rstrip(")"))
        from odin.evaluate import evaluate_checkpoint

        assert evaluate_checkpoint(result.checkpoint, data, ["heldout"], context=needed)["heldout"].n == 10


def test_length_bucketed_training_resumes_exactly_and_trains_fewer_padded_tokens(tmp_path):
    data = tmp_path / "data"
    build_dataset(data, seed=3, n_examples=400, ops=["add"], max_digits=3, reverse_answer=True, n_heldout=0)
    base = {"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 16},
            "train": {"batch_size": 16, "steps": 30, "lr": 3e-3, "warmup_steps": 5, "eval_every": 0,
                      "checkpoint_every": 0, "seed": 3}}
    bucketed = RunConfig.from_dict({**base, "train": {**base["train"], "length_buckets": 4}})
    plain = RunConfig.from_dict(base)
    straight = train(bucketed, data, tmp_path / "a", threads=2, progress=False, final_eval_splits=())
    unbucketed = train(plain, data, tmp_path / "p", threads=2, progress=False, final_eval_splits=())
    # the same examples, each batch padded only to its own longest one
    assert straight.tokens_per_s * straight.seconds < 0.95 * unbucketed.tokens_per_s * unbucketed.seconds

    def stop_midway(trainer):
        def watch():
            while trainer.snapshot().step < 11:
                time.sleep(0.0005)
            trainer.stop()
        threading.Thread(target=watch, daemon=True).start()

    first = train(bucketed, data, tmp_path / "b", threads=1, progress=False, final_eval_splits=(), on_trainer=stop_midway)
    assert 11 <= first.steps < 30
    resumed = train(bucketed, data, tmp_path / "b", resume=True, threads=2, progress=False, final_eval_splits=())
    a = load_model_checkpoint(straight.checkpoint)
    b = load_model_checkpoint(resumed.checkpoint)
    assert a.step == b.step == 30
    assert np.array_equal(a.model.params, b.model.params)
    assert not np.array_equal(a.model.params, load_model_checkpoint(unbucketed.checkpoint).model.params)
