"""Decoding on several threads (csrc/pool.c): each matrix-vector product's output columns are
split over the threads, so the logits — and every generated token — are the same for any
thread count, on shapes whose widths are not multiples of anything, for one sequence and a
batch; a bad count is a one-line error; `odin-infer -t N` answers as `-t 1` does."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from odin.model import GPT, GPTShape, Sampler, stream_tokens
from odin.native import OdinError
from odin.rwkv import RWKV, RWKVShape
from odin.validate import ShapeError

SHAPES = [
    GPTShape(vocab_size=1000, context=40, n_layer=2, n_head=4, d_model=256),  # columns split in parts
    GPTShape(vocab_size=33, context=16, n_layer=1, n_head=1, d_model=28),  # too small to split: one thread
    GPTShape(vocab_size=4099, context=24, n_layer=1, n_head=3, d_model=99, alibi=True, learned_positions=False),
    RWKVShape(vocab_size=1001, context=16, n_layer=2, d_model=257),
    RWKVShape(vocab_size=7, context=8, n_layer=1, d_model=7),
]


def _model(shape):
    model = GPT(shape) if isinstance(shape, GPTShape) else RWKV(shape)
    model.init_weights(3)
    return model


def _logits(model, batch: int, threads: int, steps: int = 9) -> np.ndarray:
    cache = model.new_cache(batch, threads)
    V = model.shape.vocab_size
    out = []
    for p in range(steps):
        tokens = [(p * 5 + b * 3) % V for b in range(batch)]
        out.append(cache.step(tokens, [p] * batch).copy())
    return np.stack(out)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{type(s).__name__}-d{s.d_model}-V{s.vocab_size}")
@pytest.mark.parametrize("batch", [1, 3])
def test_logits_are_the_same_for_any_thread_count(shape, batch):
    model = _model(shape)
    one = _logits(model, batch, 1)
    assert np.isfinite(one).all() and one.std() > 0
    for threads in (2, 3, 5):
        assert np.array_equal(_logits(model, batch, threads), one), threads


def test_streamed_tokens_are_the_same_for_any_thread_count():
    model = _model(SHAPES[0])
    runs = [list(stream_tokens(model, [1, 2, 3], 30, Sampler(temperature=0.9, top_k=50, seed=4), threads=t))
            for t in (1, 2, 4)]
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 30


@pytest.mark.parametrize("threads", [0, 65, -1, True])
def test_a_bad_thread_count_is_an_error(threads):
    model = _model(SHAPES[0])
    with pytest.raises((ShapeError, OdinError), match="threads"):
        model.new_cache(1, threads)


def test_odin_infer_answers_the_same_with_any_threads(tmp_path):
    from odin.checkpoint import model_from_config, save_model_checkpoint
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.tokenizers import CharTokenizer

    tokenizer = CharTokenizer()
    config = RunConfig(model=ModelConfig(n_layer=2, d_model=256, n_head=4, context=64,
                                         vocab_size=tokenizer.vocab_size), train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(5)
    save_model_checkpoint(tmp_path / "ckpt", model, tokenizer, config, step=1)
    texts = []
    for threads in ("1", "2", "3"):
        done = subprocess.run(_infer(tmp_path / "ckpt", threads), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        texts.append((answer["completion"], answer["tokens"]))
    assert texts[0] == texts[1] == texts[2] and texts[0][1] > 0


def _infer(checkpoint: Path, threads: str) -> list[str]:
    """The installed odin-infer of this interpreter's environment."""
    script = Path(sys.executable).parent / "odin-infer"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "odin.infer_cli"]
    return [*head, "-m", str(checkpoint), "-p", "12+34=", "-n", "24", "-t", threads, "--temperature", "0.8",
            "-s", "3", "--json"]
