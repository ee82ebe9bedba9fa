"""Shared by the tests/test_wasm_*.py files: the wasm artifacts and a native caller.

The wasm modules used are web/wasm/odin-*.wasm when they were built from the current
csrc/ (web/wasm/odin-wasm.json records the source hash); otherwise they are rebuilt into
a temporary directory with the ziglang package. Without wasmtime, or with stale artifacts
and no ziglang, the tests skip and say why. ODIN_WASM_DIR=DIR tests the modules in DIR
instead (e.g. a build made with `--cc clang`).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from odin.native import check, ffi, lib

HAVE_WASMTIME = importlib.util.find_spec("wasmtime") is not None
HAVE_ZIG = importlib.util.find_spec("ziglang") is not None

_built: dict[str, Path] = {}
_build_error: list[str] = []


def wasm_path(variant: str, tmp_factory, need_wasmtime: bool = True) -> Path:
    """Path of an up-to-date artifact (pytest.skip when none can be had)."""
    if need_wasmtime and not HAVE_WASMTIME:
        pytest.skip("the wasmtime package is not installed (pip install wasmtime)")
    from odin.web import build

    if variant in _built:
        return _built[variant]
    if os.environ.get("ODIN_WASM_DIR"):
        path = Path(os.environ["ODIN_WASM_DIR"]) / build.artifact_name(variant)
        if not path.is_file():
            pytest.fail(f"ODIN_WASM_DIR: {path} does not exist")
        _built[variant] = path
        return path
    ok, reason = build.artifact_status(build.DEFAULT_OUT, variant)
    if ok:
        _built[variant] = build.DEFAULT_OUT / build.artifact_name(variant)
        return _built[variant]
    if _build_error:
        pytest.skip(_build_error[0])
    if not HAVE_ZIG:
        pytest.skip(f"{reason}; and the ziglang package to rebuild it is not installed")
    out = tmp_factory.mktemp("wasm")
    try:
        build.build(out, build.VARIANTS)
    except build.WasmBuildError as error:  # a build failure is a failure, not a skip
        _build_error.append(str(error))
        raise
    for v in build.VARIANTS:
        _built[v] = out / build.artifact_name(v)
    return _built[variant]


_CTYPES = {np.dtype(np.float32): "float *", np.dtype(np.int32): "int32_t *", np.dtype(np.uint8): "uint8_t *",
           np.dtype(np.uint64): "uint64_t *"}


def native_run(name: str, *args) -> int:
    """Call lib.<name> with numpy arrays passed by pointer (in place), None as NULL."""
    cargs = []
    for a in args:
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous
            cargs.append(ffi.cast(_CTYPES[a.dtype], ffi.from_buffer(a)))
        elif a is None:
            cargs.append(ffi.NULL)
        else:
            cargs.append(a)
    status = getattr(lib, name)(*cargs)
    if name.startswith("odin_") and isinstance(status, int):
        check(status, name)
    return status


_TINY: dict[tuple[str, int], tuple] = {}


def tiny_arith_model(arch: str = "gpt", d_model: int = 48):
    """(model, run_config, tokenizer, examples): a small GPT (or RWKV-4 with arch="rwkv")
    trained natively on 2-digit addition until its answers are confident (~0.5-1 s); built
    once per session, arch and width (64 for quantized weights: rows of whole 32-weight blocks)."""
    if (arch, d_model) in _TINY:
        return _TINY[arch, d_model]
    from odin.checkpoint import model_from_config
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples
    from odin.data.batching import encode_examples
    from odin.tokenizers import CharTokenizer

    tok = CharTokenizer()
    examples = sample_unique_examples(ArithmeticConfig(ops=("add",), max_digits=2), 48, seed=1)
    shape = dict(n_layer=2, d_model=d_model, n_head=4, context=16) if arch == "gpt" else \
        dict(arch="rwkv", n_layer=2, d_model=d_model, n_head=1, context=16)
    config = RunConfig(model=ModelConfig(**shape), train=TrainConfig(batch_size=32, lr=3e-3, weight_decay=0.0))
    model = model_from_config(config)
    model.init_weights(11)
    train_briefly(model, encode_examples(examples, tok), steps=300, T=12, seed=0)
    _TINY[arch, d_model] = (model, config, tok, examples)
    return _TINY[arch, d_model]


def run_node(spec: dict, tmp_path: Path, timeout: float = 60) -> dict:
    """tests/js/node_check.mjs on a spec (written to tmp_path); its last stdout line as JSON."""
    import json
    import shutil
    import subprocess

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    node = shutil.which("node")
    proc = subprocess.run([node, str(Path(__file__).resolve().parent / "js" / "node_check.mjs"), str(path)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"node failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_briefly(model, encoded, steps: int, T: int, seed: int, batch: int = 32, lr: float = 3e-3) -> None:
    """Plain AdamW steps (no weight decay) on random batches of encoded examples: a model
    whose answers are past chance, deterministic from the seed."""
    from odin.data.batching import make_batch

    data_rng = np.random.default_rng(seed)
    for step in range(1, steps + 1):
        tokens, mask = make_batch(encoded, data_rng.integers(0, len(encoded), batch), T)
        model.zero_grad()
        model.forward(tokens[:, :-1], tokens[:, 1:], mask)
        model.backward()
        model.adamw_step(lr=lr, step=step, weight_decay=0.0)
