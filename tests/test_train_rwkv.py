"""RWKV beside GPT in the rest of ODIN: the kissing-spheres trainer (bit-identical for any
thread count, equal to one big batch), checkpoints and exact resume through `train()`,
evaluation, odin-infer and the ~100M preset's training step."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import odin.native as native
from odin.blueprint import Blueprint
from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.config import RunConfig, preset_config
from odin.data.dataset import build_dataset, load_split
from odin.evaluate import evaluate_examples
from odin.model import Sampler, stream_tokens
from odin.rwkv import RWKV, RWKVShape
from odin.spheres import SpheresTrainer
from odin.tokenizers import CharTokenizer
from odin.train import train

SHAPE = RWKVShape(vocab_size=16, context=16, n_layer=2, d_model=24, d_ffn=40, ln_eps=1e-5)
B, T = 30, 12  # 30 rows over 12 slots: slots of 3 and 2 rows


def _data(steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SHAPE.vocab_size, (steps, B, T + 1)).astype(np.int32)
    mask = (rng.random((steps, B, T)) > 0.25).astype(np.uint8)
    return tokens, mask


def _trainer(threads: int, seed: int = 0) -> tuple[RWKV, SpheresTrainer]:
    model = RWKV(SHAPE)
    model.init_weights(seed)
    trainer = SpheresTrainer(model, B, T, threads=threads)
    trainer.configure(lr=3e-3, min_lr=3e-4, warmup_steps=2, total_steps=8, weight_decay=0.1, grad_clip=1.0)
    return model, trainer


def test_spheres_train_rwkv_bit_identically_for_any_thread_count():
    tokens, mask = _data(6)
    results = {}
    for threads in (1, 2, 5):
        model, trainer = _trainer(threads)
        assert trainer.run(tokens, mask) == 6
        results[threads] = model.params.copy()
    for threads, params in results.items():
        assert np.array_equal(params, results[1]), f"{threads} threads differ from 1"
    assert not np.array_equal(results[1], _trainer(1)[0].params)  # training changed the weights


def test_spheres_rwkv_gradient_equals_one_big_batch():
    tokens, mask = _data(1, seed=3)
    model, trainer = _trainer(2)
    reference = RWKV(SHAPE)
    reference.params[...] = model.params
    trainer.configure(lr=1e-3, min_lr=1e-3, warmup_steps=0, total_steps=0, grad_clip=0.0)
    trainer.run(tokens, mask)
    reference.zero_grad()
    loss = reference.forward(tokens[0, :, :-1], tokens[0, :, 1:], mask[0])
    reference.backward()
    np.testing.assert_allclose(model.grads, reference.grads, rtol=1e-4, atol=1e-7)
    assert trainer.snapshot().loss == pytest.approx(loss, rel=1e-5)


def test_spheres_refuse_abacus_ids_for_rwkv():
    tokens, mask = _data(1)
    _, trainer = _trainer(1)
    with pytest.raises(native.OdinError, match="ids"):
        trainer.run(tokens, mask, ids=np.zeros((1, B, T), np.int32))


def test_checkpoint_round_trip_keeps_logits_and_moments(tmp_path):
    config = RunConfig.from_dict({"model": {"arch": "rwkv", "n_layer": 2, "d_model": 32, "n_head": 1,
                                            "context": 16, "d_ffn": 48}})
    model = model_from_config(config)
    assert isinstance(model, RWKV) and model.n_params == Blueprint(config.model).n_params
    model.init_weights(5)
    model.adam_m[...] = np.linspace(-1, 1, model.n_params, dtype=np.float32)
    tokenizer = CharTokenizer()
    save_model_checkpoint(tmp_path / "ckpt", model, tokenizer, config, step=7, trainer_state={"k": 1})
    loaded = load_model_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded.model, RWKV) and loaded.step == 7 and loaded.trainer_state == {"k": 1}
    assert np.array_equal(loaded.model.params, model.params)
    assert np.array_equal(loaded.model.adam_m, model.adam_m)
    tokens = np.arange(24, dtype=np.int32).reshape(2, 12) % config.model.vocab_size
    model.forward(tokens)
    loaded.model.forward(tokens)
    assert np.array_equal(model.logits(), loaded.model.logits())


RWKV_ONE_DIGIT = RunConfig.from_dict({
    "model": {"arch": "rwkv", "n_layer": 2, "d_model": 64, "n_head": 1, "context": 16},
    "train": {"batch_size": 48, "steps": 1200, "lr": 3e-3, "warmup_steps": 30, "weight_decay": 0.1,
              "eval_every": 0, "checkpoint_every": 0, "seed": 1337},
})


@pytest.fixture(scope="module")
def one_digit(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    build_dataset(data, seed=7, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True, n_heldout=0)
    out = tmp_path_factory.mktemp("run")
    result = train(RWKV_ONE_DIGIT, data, out, threads=2, progress=False, final_eval_splits=())
    return data, out, result


def test_rwkv_learns_one_digit_addition(one_digit):
    data, out, result = one_digit
    loaded = load_model_checkpoint(result.checkpoint)
    assert isinstance(loaded.model, RWKV) and loaded.step == 1200
    everything = load_split(data, "train") + load_split(data, "val") + load_split(data, "test")
    scored = evaluate_examples(loaded.model, loaded.tokenizer, everything, reverse_answer=True)
    assert scored.exact >= 0.9, f"exact match {scored.exact:.3f} on all 100 one-digit sums"


def test_rwkv_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, one_digit):
    data = one_digit[0]
    cfg = RunConfig.from_dict({
        "model": {"arch": "rwkv", "n_layer": 1, "d_model": 32, "n_head": 1, "context": 16},
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


def test_rwkv_streams_tokens_past_its_training_context(one_digit):
    """The recurrent form has no position table: generation may run past `context`."""
    loaded = load_model_checkpoint(one_digit[2].checkpoint)
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("1+2=")]
    tokens = list(stream_tokens(loaded.model, prompt, 3 * loaded.model.shape.context, Sampler(temperature=1.0, seed=3)))
    assert len(tokens) == 3 * loaded.model.shape.context


def test_odin_infer_answers_with_an_rwkv_checkpoint(one_digit):
    result = one_digit[2]
    loaded = load_model_checkpoint(result.checkpoint, with_optimizer=False)
    proc = subprocess.run([sys.executable, "-m", "odin.infer_cli", "-m", str(result.checkpoint), "-p", "8+5=",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    generated = loaded.model.generate_greedy([[loaded.tokenizer.bos_id, *loaded.tokenizer.encode("8+5=")]], 4,
                                             loaded.tokenizer.end_id)[0]
    raw = loaded.tokenizer.decode([t for t in generated if t != loaded.tokenizer.end_id])
    assert out["completion"] == raw[::-1]  # odin-infer shows the reversed answer in reading order
    assert out["stopped_by"] == "end"


def test_100m_rwkv_preset_runs_a_training_step():
    cfg = preset_config("odin-100m-rwkv")
    bp = Blueprint(cfg.model)
    assert 85e6 <= bp.n_params <= 130e6
    model = model_from_config(cfg)
    assert model.n_params == bp.n_params
    model.init_weights(0)
    rng = np.random.default_rng(0)
    batch, seq = 2, 32
    tokens = rng.integers(0, cfg.model.vocab_size, (batch, seq + 1)).astype(np.int32)
    started = time.perf_counter()
    model.zero_grad()
    loss0 = model.forward(tokens[:, :-1], tokens[:, 1:])
    model.backward()
    norm = model.adamw_step(lr=1e-3, step=1, weight_decay=0.1)
    seconds = time.perf_counter() - started
    loss1 = model.forward(tokens[:, :-1], tokens[:, 1:])
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nodin-100m-rwkv: {model.n_params:,} params, step B={batch} T={seq}: {seconds:.2f} s, "
          f"loss {loss0:.3f} -> {loss1:.3f}, |g| {norm:.3f}, peak RSS {peak_gib:.2f} GiB")
    assert abs(loss0 - np.log(cfg.model.vocab_size)) < 1.0  # untrained: near uniform over 32k tokens
    assert np.isfinite(norm) and norm > 0
    assert loss1 < loss0


def test_dashboard_model_picker_offers_and_sizes_rwkv_presets(tmp_path):
    from odin_dashboard.viewmodel.forms import TrainForm, check_form, form_with_preset, preset_names

    assert {"rwkv-tiny", "arith-3digit-rwkv", "odin-100m-rwkv"} <= set(preset_names())
    build_dataset(tmp_path / "data", seed=1, n_examples=60, ops=["add"], max_digits=1, reverse_answer=True,
                  n_heldout=0)
    form = form_with_preset(TrainForm(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run")), "rwkv-tiny")
    check = check_form(form)
    assert check.ok, check.problems
    assert "RWKV-4" in check.model_summary and check.run_config.model.arch == "rwkv"
    params = Blueprint(check.run_config.model).n_params
    assert f"{params / 1e6:.2f}M params" in check.model_summary


def test_pipeline_trains_an_rwkv_model_from_its_model_setting(tmp_path):
    """pipeline.toml's [model] preset may name an RWKV preset: shards train it, checkpoints hold it."""
    from pipeline_helpers import checkpoint_state, config_text, run_once, write_docs

    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(model={"preset": "rwkv-tiny", "n_layer": 1, "d_model": 32, "n_head": 1,
                                         "context": 32}), encoding="utf-8")
    write_docs(folder / "inbox", 10)
    proc = run_once(folder, config)
    assert proc.returncode == 0, proc.stderr
    step, state = checkpoint_state(folder)
    assert step > 0
    loaded = load_model_checkpoint(folder / "checkpoints" / "latest")
    assert isinstance(loaded.model, RWKV) and loaded.run_config.model.arch == "rwkv"
    assert loaded.model.shape.vocab_size == loaded.tokenizer.vocab_size
