"""A model that only answers holds its weights alone (issue 20, item 1): no gradients, no AdamW
moments, and loading streams the weights into the model instead of holding them twice. What
`odin model info` states (weights + one sequence's generation state) is what `odin-infer`
adds to its process, measured as peak RSS; the moments of a checkpoint's optimizer file are
never read."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from odin.blueprint import Blueprint, answering_memory
from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.spheres import SpheresTrainer
from odin.tokenizers import CharTokenizer

MIB = 2**20


def _config(**fields) -> RunConfig:
    return RunConfig(model=ModelConfig(**fields), train=TrainConfig(steps=1))


def test_a_model_trains_only_once_asked_and_training_blocks_start_at_zero():
    model = model_from_config(_config(n_layer=1, d_model=32, n_head=2, context=8, vocab_size=20))
    model.init_weights(0)
    assert not model.has_training_blocks  # made, initialised: no gradients or moments yet
    trainer = SpheresTrainer(model, 4, 8, threads=1)  # a trainer needs them
    assert model.has_training_blocks
    assert not model.grads.any() and not model.adam_m.any() and not model.adam_v.any()
    trainer.configure(lr=1e-3, min_lr=1e-3, warmup_steps=0, total_steps=0)
    trainer.run(np.random.default_rng(0).integers(0, 20, (1, 4, 9)).astype(np.int32))
    assert model.adam_v.any()


def test_loading_for_answers_reads_no_moments_and_loading_to_resume_reads_them(tmp_path):
    config = _config(n_layer=1, d_model=32, n_head=2, context=8, vocab_size=CharTokenizer().vocab_size)
    model = model_from_config(config)
    model.init_weights(3)
    model.adam_m[...] = 0.25
    model.adam_v[...] = 0.5
    save_model_checkpoint(tmp_path / "ckpt", model, CharTokenizer(), config, step=7, trainer_state={"x": 1})
    answering = load_model_checkpoint(tmp_path / "ckpt", with_optimizer=False)
    assert not answering.model.has_training_blocks
    assert np.array_equal(answering.model.params, model.params)
    assert (answering.step, answering.trainer_state) == (7, {"x": 1})  # progress still read, from the header
    resuming = load_model_checkpoint(tmp_path / "ckpt", with_optimizer=True)
    assert np.array_equal(resuming.model.params, model.params)
    assert (resuming.model.adam_m == 0.25).all() and (resuming.model.adam_v == 0.5).all()


MEASURE = textwrap.dedent("""
    import json, sys
    def status(key):  # this process's own figures (ru_maxrss would also count the parent's, copied at fork)
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024
    import odin.infer_cli, odin.checkpoint, odin.model, odin.rwkv, odin.tokenizers, safetensors, tokenizers
    before = status("VmRSS")
    code = odin.infer_cli.main(["-m", sys.argv[1], "-p", "12+34=", "-n", "3"])
    print(json.dumps({"code": code, "added": status("VmHWM") - before}), file=sys.stderr)
""")


@pytest.mark.parametrize("arch, fields", [
    ("gpt", {"n_layer": 4, "d_model": 512, "n_head": 8, "context": 256, "vocab_size": 8000}),
    ("rwkv", {"n_layer": 4, "d_model": 512, "n_head": 1, "context": 256, "vocab_size": 8000}),
])
def test_odin_infer_adds_what_model_info_states(tmp_path, arch, fields):
    # a checkpoint with its optimizer file (twice the weights) beside: none of it may be read
    config = _config(arch=arch, **fields)
    model = model_from_config(config)
    model.init_weights(0)
    save_model_checkpoint(tmp_path / "ckpt", model, CharTokenizer(), config, step=1)
    stated = answering_memory(Blueprint(config.model))
    del model
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "ckpt")], capture_output=True, text=True,
                          timeout=300)
    measured = json.loads(done.stderr.strip().splitlines()[-1])
    assert measured["code"] == 0, done.stderr
    # the weights once, the state, and ~14 MiB besides (a 4 MiB piece being read, its mapped
    # pages, the finiteness check's piece, the GEMM packing buffers); before this, odin-infer
    # held the weights about six times (a copy, 4 blocks, the moments read)
    assert 0.95 * stated.total <= measured["added"] <= 1.02 * stated.total + 24 * MIB, (measured, stated)
