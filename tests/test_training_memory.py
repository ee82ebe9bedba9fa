"""What `odin model info --threads N` says training allocates: the workspace formulas are the C
models' own allocations, the slot buffer count is the trainer's own choice, and the total
matches the peak RSS a real training run adds to its process within 10%."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from odin import native
from odin.blueprint import Blueprint, slot_buffer_count, training_memory
from odin.checkpoint import model_from_config
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.native import ffi, lib
from odin.spheres import SpheresTrainer


def _model(**fields):
    config = RunConfig(model=ModelConfig(**fields), train=TrainConfig(steps=1))
    return config.model, model_from_config(config)


@pytest.mark.parametrize("arch, fields", [
    ("gpt", {"n_layer": 3, "d_model": 40, "n_head": 5, "context": 33, "vocab_size": 50}),
    ("gpt", {"n_layer": 3, "d_model": 40, "n_head": 5, "context": 33, "vocab_size": 50, "positions": "alibi"}),
    ("rwkv", {"n_layer": 3, "d_model": 40, "n_head": 1, "context": 24, "d_ffn": 72, "vocab_size": 50}),
])
def test_workspace_formula_is_what_the_c_model_allocates(arch, fields):
    config, model = _model(arch=arch, **fields)
    for batch, seq in ((1, 1), (5, 24), (3, 7), (2, 17)):
        out = ffi.new(f"odin_{arch}_ws **")
        native.check(getattr(lib, f"odin_{arch}_ws_create")(out, model._h, batch, seq), "ws")
        try:
            allocated = getattr(lib, f"odin_{arch}_ws_bytes")(out[0])
        finally:
            getattr(lib, f"odin_{arch}_ws_free")(out[0])
        assert Blueprint(config).memory_estimate(batch, seq).activations == allocated, (batch, seq)


def test_slot_buffer_count_is_the_trainers_choice():
    # 3.2M parameters: 12 buffers (147 MiB) fit the 256 MiB budget; 7.3M (28 MiB a buffer) do not
    for width, vocab in ((256, 512), (384, 4096)):
        config, model = _model(n_layer=4, d_model=width, n_head=8, context=16, vocab_size=vocab)
        for batch, threads in ((32, 1), (32, 2), (12, 3), (5, 2), (3, 7), (1, 1)):
            trainer = SpheresTrainer(model, batch, 8, threads=threads)
            expected = slot_buffer_count(model.n_params, batch, threads)
            assert trainer.slot_buffers == expected, (width, batch, threads)
            assert training_memory(Blueprint(config), batch, 8, threads).slot_buffers == expected
            trainer.set_threads(threads + 1)  # the count follows a thread change
            trainer.run(np.zeros((1, batch, 9), np.int32))
            assert trainer.slot_buffers == slot_buffer_count(model.n_params, batch, threads + 1)
            del trainer


MEASURE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from odin.blueprint import Blueprint, training_memory
    from odin.checkpoint import model_from_config
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.spheres import SpheresTrainer

    def status(key):  # this process's own figures (ru_maxrss would also count the parent's, copied at fork)
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    fields, batch, seq, threads = json.loads(sys.argv[1])
    config = RunConfig(model=ModelConfig(**fields), train=TrainConfig(steps=1))
    before = status("VmRSS")
    model = model_from_config(config)
    model.init_weights(0)
    trainer = SpheresTrainer(model, batch, seq, threads=threads)
    trainer.configure(lr=1e-4, min_lr=1e-5, warmup_steps=0, total_steps=0)
    tokens = np.random.default_rng(0).integers(0, fields["vocab_size"], (2, batch, seq + 1)).astype(np.int32)
    trainer.run(tokens)
    peak = status("VmHWM")
    print(json.dumps({"added": peak - before, "estimate": training_memory(Blueprint(config.model), batch, seq,
                                                                           threads).total}))
""")


@pytest.mark.parametrize("fields, batch, seq, threads", [
    # 'mini' (issue 17): 8 slots of 12.2M parameters exceed the budget: one buffer per thread
    ({"n_layer": 6, "d_model": 384, "n_head": 6, "context": 128, "vocab_size": 4096}, 8, 128, 2),
    ({"n_layer": 6, "d_model": 384, "n_head": 6, "context": 128, "vocab_size": 4096}, 8, 128, 1),
    # 'small': twelve buffers
    ({"n_layer": 4, "d_model": 256, "n_head": 8, "context": 64, "vocab_size": 512}, 32, 64, 2),
    ({"arch": "rwkv", "n_layer": 4, "d_model": 256, "n_head": 1, "context": 64, "vocab_size": 512}, 32, 64, 2),
])
def test_the_formula_matches_the_peak_rss_training_adds(fields, batch, seq, threads):
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps([fields, batch, seq, threads])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["estimate"] > 200 * 2**20  # large enough that the interpreter's own noise is small
    assert abs(figures["added"] - figures["estimate"]) <= 0.10 * figures["estimate"], figures


def test_model_info_states_training_memory_for_a_thread_count():
    out = subprocess.run([sys.executable, "-m", "odin.cli", "model", "info", "small", "--threads", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "training on the spheres: batch 32 x 128 tokens, 2 threads" in out.stdout
    assert "slot gradient buffers (12)" in out.stdout and "workspaces (2 threads)" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "odin.cli", "model", "info", "small", "--threads", "65"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "--threads must be in 0..64" in bad.stderr
