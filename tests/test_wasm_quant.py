"""Quantized weights in the browser runtime (issue 20, item 6), under node and from Python:
`odin export web --quant TYPE` writes the quantized blocks (llama.cpp's formats, the bytes
odin.quant makes), web/odin.js makes the quantized C model (odin_*_create_q) from them, plans
its memory from the quantized sizes, answers with the native quantized model's greedy tokens,
gives its logits within the bound below, and refuses to train in one line. Bad input to the
export is one line and writes nothing.

Logits, wasm vs native quantized decoding: the scalar wasm build runs the native scalar code
(no FMA on either side), and its logits are bit-identical to native decoding with the scalar
kernels. The SIMD128 build against the native default kernels: the integer block products
are exact on both sides, but the float work around them (norms, the recurrence, the activation scales) has no
FMA in wasm and sums in another order (~1e-7 relative), and a difference that small can move
one 8-bit activation across a rounding boundary: one step (1/127 of its block's largest
value) in one activation. Measured over 48 prompts per model (GPT and RWKV, d_model 64, every
block type, both builds): ~3e-7 of the largest logit without such a flip, up to 1.8e-3 with
one (in 4 of 20 runs, on one or two prompts). Asserted: every prompt within 5e-3, and most
(the median prompt) within 1e-5.
"""
from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import wasm_support
from wasm_support import tiny_arith_model, train_briefly, wasm_path

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")
WORST_BOUND, MEDIAN_BOUND = 5e-3, 1e-5


def quant_arith_model(arch: str):
    """tests/wasm_support's small arithmetic model at d_model 64, a whole number of 32-weight
    blocks per row (its default 48 is not)."""
    return tiny_arith_model(arch, d_model=64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from odin.checkpoint import save_model_checkpoint

    d = tmp_path_factory.mktemp("quant-ckpt")
    settings = {"ops": ["add"], "min_digits": 1, "max_digits": 2, "reverse_answer": False}
    for arch in ("gpt", "rwkv"):
        model, config, tok, _ = quant_arith_model(arch)
        save_model_checkpoint(d / arch, model, tok, config, step=300,
                              trainer_state={"dataset": {"settings": settings}, "reverse_answer": False})
    return d


def native_quantized(arch: str, quant: str):
    """The native model with the blocks the export writes: odin.quant's, matrices `quant`, embedding q8_0."""
    from odin.model import WeightTypes
    from odin.quant.convert import quantized_copy

    return quantized_copy(quant_arith_model(arch)[0], WeightTypes(quant, "q8_0"))


def run_node(spec: dict, tmp_path: Path) -> dict:
    return wasm_support.run_node(spec, tmp_path, timeout=120)


@contextmanager
def native_isa(name):
    """Native kernels `name` for the block (None: leave them as they are)."""
    from odin import native

    before = native.current_isa()
    if name:
        native.set_isa(name)
    try:
        yield
    finally:
        native.set_isa(before)


def native_logits(model, ids: list[int]) -> np.ndarray:
    cache = model.new_cache(1)
    logits = None
    for pos, t in enumerate(ids):
        logits = cache.step([t], [pos], None)[0]
    return logits


@pytest.mark.parametrize("arch", ["gpt", "rwkv"])
@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"])
def test_quantized_export_holds_the_blocks(arch, quant, checkpoints, tmp_path):
    """weights.bin = the quantized model's float32 block, then its quantized block, byte for
    byte what odin.quant makes; model.json says what every byte is."""
    from odin.blueprint import Blueprint
    from odin.web.export import export_web, read_export

    manifest = export_web(checkpoints / arch, tmp_path / "web", examples=8, demo_prompts=2, quant=quant)
    again, floats, qblock = read_export(tmp_path / "web")
    assert again == manifest
    native = native_quantized(arch, quant)
    assert manifest["format_version"] == 2 and manifest["weights"]["dtype"] == "quantized"
    assert manifest["quant"] == {"matrix": quant, "embed": "q8_0", "float_params": native.n_params,
                                 "float_bytes": 4 * native.n_params, "quant_bytes": native.qblock.nbytes,
                                 "source": "quantized at export"}
    assert np.array_equal(floats, native.params) and np.array_equal(qblock, native.qblock)
    assert manifest["weights"]["bytes"] == 4 * native.n_params + native.qblock.nbytes
    blueprint = Blueprint(quant_arith_model(arch)[1].model)
    assert manifest["n_params"] == blueprint.n_params  # every weight, as for float32
    layout = {n: ("f32", off) for n, off, _ in native.tensor_layout}
    layout.update({n: (t, off) for n, off, _, t in native.quant_layout})
    assert [(t["name"], tuple(t["shape"])) for t in manifest["tensors"]] == blueprint.param_shapes()
    assert [(t["type"], t["offset"]) for t in manifest["tensors"]] == [layout[t["name"]] for t in manifest["tensors"]]
    embed = "wte" if arch == "gpt" else "emb"
    types = {t["name"]: t["type"] for t in manifest["tensors"]}
    assert types[embed] == "q8_0" and types["h.0.ln1_w"] == "f32"
    assert {types[n] for n in types if n.endswith("_w") and n.startswith("h.") and "ln" not in n
            and "time" not in n} == {quant}


def test_a_quantized_checkpoint_exports_its_blocks(checkpoints, tmp_path):
    """A checkpoint written by `odin quantize` exports its blocks as they are: the same bytes
    as quantizing the float32 checkpoint at export; asking for another type is refused."""
    from odin.web.export import ExportError, export_web

    pytest.importorskip("odin.quant.checkpoint")
    from odin.quant.checkpoint import quantize_checkpoint

    quantize_checkpoint(checkpoints / "rwkv", tmp_path / "q4", "q4_0")
    from_ckpt = export_web(tmp_path / "q4", tmp_path / "web-a", examples=4)
    at_export = export_web(checkpoints / "rwkv", tmp_path / "web-b", examples=4, quant="q4_0")
    assert from_ckpt["quant"] == {**at_export["quant"], "source": "quantized checkpoint"}
    assert from_ckpt["weights"]["sha256"] == at_export["weights"]["sha256"]
    assert from_ckpt["tensors"] == at_export["tensors"] and from_ckpt["source"]["step"] == 300
    assert from_ckpt["task"] == at_export["task"] and from_ckpt["task"]["kind"] == "arithmetic"
    assert export_web(tmp_path / "q4", tmp_path / "web-c", quant="q4_0")["weights"] == from_ckpt["weights"]
    with pytest.raises(ExportError, match=r"^quant: .* is quantized already, as q4_0 \(embedding q8_0\): export it without --quant"):
        export_web(tmp_path / "q4", tmp_path / "web-d", quant="q8_0")
    assert not (tmp_path / "web-d").exists()


def test_float_export_is_unchanged(checkpoints, tmp_path):
    from odin.web.export import export_web, read_export

    model = quant_arith_model("rwkv")[0]
    manifest = export_web(checkpoints / "rwkv", tmp_path / "web", examples=0)
    _, floats, qblock = read_export(tmp_path / "web")
    assert manifest["format_version"] == 1 and manifest["quant"] is None and manifest["weights"]["dtype"] == "float32"
    assert "type" not in manifest["tensors"][0] and qblock.size == 0
    assert np.array_equal(floats, model.params) and manifest["n_params"] == model.n_params


@needs_node
@pytest.mark.parametrize("arch,quant,variant", [
    ("gpt", "q8_0", "simd128"), ("gpt", "q4_0", "simd128"), ("rwkv", "q8_0", "simd128"), ("rwkv", "q4_0", "simd128"),
    ("rwkv", "q5_1", "simd128"), ("gpt", "q4_1", "scalar"), ("rwkv", "q8_0", "scalar"),
])
def test_node_runs_a_quantized_export(arch, quant, variant, checkpoints, tmp_path, tmp_path_factory):
    from odin.web.export import export_web

    wasm = wasm_path(variant, tmp_path_factory, need_wasmtime=False)
    _, _, tok, examples = quant_arith_model(arch)
    manifest = export_web(checkpoints / arch, tmp_path / "web", examples=16, demo_prompts=2, quant=quant)
    native = native_quantized(arch, quant)
    prompts = [[tok.bos_id, *tok.encode(e.prompt)] for e in examples]
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": variant,
            "model_dir": str(tmp_path / "web"), "prompts": [e.prompt for e in examples[:12]], "max_new": 6,
            "logits_prompts": prompts, "try_train": [{"prompt": "1+2=", "answer": "3"}, {"prompt": "3+4=", "answer": "7"}]}
    got = run_node(spec, tmp_path)

    # the scalar build runs the native scalar code (no FMA on either side): the same bits as
    # native decoding with the scalar kernels; the SIMD128 build is compared with the native
    # default kernels (AVX-512 / AVX2 ...)
    with native_isa("scalar" if variant == "scalar" else None):
        # greedy: the native quantized model's tokens (token by token, batch 1: the integer path)
        expected = native.generate_greedy(prompts[:12], max_new=6, end_id=tok.end_id)
        refs = [native_logits(native, ids) for ids in prompts]
    assert sum(1 for g in expected if g and g[-1] == tok.end_id) >= 6  # the model answers and stops
    assert got["greedy"] == expected
    # logits after each of the 48 prompts, within the bound in this module's docstring
    rel = []
    for ref, b64 in zip(refs, got["logits"]):
        wasm_logits = np.frombuffer(base64.b64decode(b64), np.float32)
        if variant == "scalar":
            assert np.array_equal(wasm_logits, ref)
        rel.append(float(np.abs(wasm_logits - ref).max() / np.abs(ref).max()))
    assert max(rel) <= WORST_BOUND and float(np.median(rel)) <= MEDIAN_BOUND, sorted(rel)[-4:]

    # the C model is the quantized one, its memory planned from the quantized sizes
    q = manifest["quant"]
    assert got["quant"] == {"matrix": quant, "embed": "q8_0"} and got["weight_format"] == \
        (quant if quant == "q8_0" else f"{quant} (embedding q8_0)")
    assert got["c_qbytes"] == q["quant_bytes"] == got["weight_sizes"]["quantBytes"]
    assert got["c_float_params"] == q["float_params"] == got["weight_sizes"]["floatParams"]
    assert got["n_weights"] == manifest["n_params"] and got["weight_sizes"]["bytes"] == manifest["weights"]["bytes"]
    assert got["estimate_loaded"] - got["weight_sizes"]["bytes"] == PACKING  # weights, no float32 copy
    assert got["weight_sizes"]["bytes"] < 0.3 * 4 * manifest["n_params"]  # float32 weights: 4 bytes each
    assert 0 < got["planned_bytes"] - got["estimate_loaded"] < 64 * 1024  # + one generation state
    assert got["estimate_used"] - PACKING <= got["heap_in_use"] <= got["estimate_used"] + 64 * 1024
    assert got["memory_bytes"] >= got["planned_bytes"]
    # it answers but does not train: one line, status STATE, no memory taken for it
    assert got["can_train"] is False and got["trained"] is False
    for name, refusal in got["refused_train"].items():
        assert refusal["name"] == "OdinError" and refusal["status"] == 7 and refusal["grew"] == 0, refusal
        assert "\n" not in refusal["message"] and refusal["message"].startswith(f"{name}(): this model's weights are "
                                                                                f"quantized ({quant}")
        assert "cannot train" in refusal["message"] and "without --quant" in refusal["message"]
    assert got["restored"] is True and got["after_refusal"] == expected[0]


PACKING = (132 * 256 + 2060 * 256) * 4  # the GEMM packing buffer estimateMemory allows for


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "odin.cli", "export", "web", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_bad_quant_input_is_one_line_and_writes_nothing(checkpoints, tmp_path, tmp_path_factory):
    from odin.checkpoint import save_model_checkpoint
    from odin.web.export import ExportError, export_web

    out = tmp_path / "out"
    # an unknown type
    proc = export_cli(str(checkpoints / "rwkv"), str(out), "--quant", "q3_k")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "q3_k" in proc.stderr and "q8_0, q4_0" in proc.stderr, proc.stderr
    assert not out.exists()
    with pytest.raises(ExportError, match=r"^quant: unknown quantization type 'f16'"):
        export_web(checkpoints / "rwkv", out, quant="f16")
    assert not out.exists()
    # a row that is not whole 32-weight blocks (d_model 48)
    model, config, tok, _ = tiny_arith_model("gpt")
    save_model_checkpoint(tmp_path / "d48", model, tok, config, step=0, trainer_state={})
    proc = export_cli(str(tmp_path / "d48"), str(out), "--quant", "q4_0")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "d_model = 48 is not a multiple of 32" in proc.stderr and "without --quant" in proc.stderr
    assert not out.exists()
    # an upper-case type is the same type
    manifest = export_web(checkpoints / "gpt", out, quant="Q8_0", examples=0)
    assert manifest["quant"]["matrix"] == "q8_0"


@needs_node
@pytest.mark.parametrize("extra", [{"abacus": 8, "positions": "none"}, {"positions": "alibi"}], ids=["abacus", "alibi"])
def test_node_runs_quantized_gpt_variants(extra, tmp_path, tmp_path_factory):
    """A quantized GPT with Abacus digit embeddings (a float32 table beside the blocks) or with
    ALiBi: the page's greedy tokens are the native quantized model's."""
    from odin.checkpoint import model_from_config, save_model_checkpoint
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.data.batching import encode_examples
    from odin.model import WeightTypes
    from odin.quant.convert import quantized_copy
    from odin.web.export import export_web

    wasm = wasm_path("simd128", tmp_path_factory, need_wasmtime=False)
    _, _, tok, examples = quant_arith_model("gpt")
    config = RunConfig(model=ModelConfig(n_layer=2, d_model=64, n_head=4, context=16, **extra),
                       train=TrainConfig(batch_size=32, lr=3e-3, weight_decay=0.0))
    model = model_from_config(config)
    model.init_weights(3)
    train_briefly(model, encode_examples(examples, tok), steps=200, T=12, seed=0)
    save_model_checkpoint(tmp_path / "ckpt", model, tok, config, step=200, trainer_state={})
    manifest = export_web(tmp_path / "ckpt", tmp_path / "web", examples=0, quant="q8_0")
    if "abacus" in extra:
        assert {t["name"]: t["type"] for t in manifest["tensors"]}["wab"] == "f32"
    prompts = [e.prompt for e in examples[:12]]
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": "simd128",
            "model_dir": str(tmp_path / "web"), "prompts": prompts, "max_new": 6}
    got = run_node(spec, tmp_path)
    native = quantized_copy(model, WeightTypes("q8_0", "q8_0"))
    expected = native.generate_greedy([[tok.bos_id, *tok.encode(p)] for p in prompts], max_new=6, end_id=tok.end_id)
    assert sum(1 for g in expected if g and g[-1] == tok.end_id) >= 6
    assert got["greedy"] == expected
