"""Small ODIN checkpoints for the interchange tests (Hugging Face, ONNX): random or briefly
trained, with the char or a BPE tokenizer trained here; and the installed commands."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from odin.checkpoint import model_from_config, save_model_checkpoint
from odin.config import ModelConfig, RunConfig
from odin.tokenizers import BPETokenizer, CharTokenizer

BIN = Path(sys.executable).parent


def in_ci() -> bool:
    """CI=true (set by .ci/run and by CI services): every reader must be there."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_reader(module: str, reason: str) -> Any:
    """The module that proves a format. Missing on a developer's machine: the tests skip and
    say why; missing in CI: an import error that fails the run (a reader left out of .ci/run
    must never turn the format's tests into skips that read as green)."""
    if in_ci():
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)

# arithmetic lines: what the briefly trained models learn to continue
TRAIN_LINES = [f"{a}+{b}={a + b}" for a in range(0, 40, 3) for b in range(0, 40, 7)]
PROMPTS = ["12+3=", "7+21=", "30+9=", "3+6="]


def bpe_tokenizer() -> BPETokenizer:
    texts = TRAIN_LINES * 4 + ["the quick brown fox jumps over the lazy dog"] * 8
    return BPETokenizer.train(texts, vocab_size=300)


def make_checkpoint(path: Path, arch: str = "gpt", *, tokenizer: str = "char", train_steps: int = 0,
                    seed: int = 0, **model: Any) -> Path:
    """A checkpoint of a small ``arch`` model at ``path``: random weights (``train_steps`` 0)
    or that many AdamW steps on :data:`TRAIN_LINES`."""
    tok = bpe_tokenizer() if tokenizer == "bpe" else CharTokenizer()
    shape = {"n_layer": 2, "d_model": 32, "n_head": 4 if arch == "gpt" else 1, "context": 32, **model}
    config = RunConfig(model=ModelConfig(arch=arch, vocab_size=tok.vocab_size, init_seed=seed, **shape))
    net = model_from_config(config)
    net.init_weights(seed)
    if not train_steps:
        # noise on every tensor: a random model then matches no library's own initialisation
        # (a tensor left out of a conversion would otherwise go unnoticed), and RWKV's tiny
        # initial embedding (every logit ~1e-3) gets a spread
        noise = np.random.default_rng(seed)
        for name, array in net.named_params().items():
            if name != "wpe" or model.get("positions", "learned") == "learned":
                scale = 0.5 if name == "emb" else 0.1
                array += noise.normal(0.0, scale, array.shape).astype(np.float32)
    if train_steps:
        rows = [[tok.bos_id, *tok.encode(line), tok.end_id] for line in TRAIN_LINES]
        width = max(map(len, rows))
        tokens = np.full((len(rows), width), tok.pad_id, np.int32)
        mask = np.zeros((len(rows), width - 1), np.uint8)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = row
            mask[i, :len(row) - 1] = 1
        for step in range(1, train_steps + 1):
            net.zero_grad()
            net.forward(tokens[:, :-1], tokens[:, 1:], mask)
            net.backward()
            net.adamw_step(lr=3e-3, step=step)
    return save_model_checkpoint(path, net, tok, config, step=train_steps)


def run(command: str, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    """An installed entry point (odin, odin-infer) of this virtualenv, as a user runs it."""
    return subprocess.run([str(BIN / command), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, prefix: str, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| over max |want|: the logits' difference relative to their scale."""
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def odin_logits(checkpoint: Path, ids: list[int]) -> np.ndarray:
    from odin.checkpoint import load_model_checkpoint

    model = load_model_checkpoint(checkpoint, with_optimizer=False).model
    model.forward(np.array([ids], np.int32))
    return model.logits()[0]


def odin_infer_greedy(checkpoint: Path, prompt: str, n: int) -> dict[str, Any]:
    import json

    proc = run("odin-infer", "-m", checkpoint, "-p", prompt, "-n", n, "--json", "--raw")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
