"""web/odin.js (the browser runtime) under node against the native engine, through
`odin export web`: the same greedy tokens, the same sampled tokens for the same seed and
settings, the same tokenizer output as odin.tokenizers (char and byte-level BPE), the same
batch layout as odin.data.batching and the same training losses.

node (>= 18) runs tests/js/node_check.mjs, which imports web/odin.js and loads the export
from disk. Skipped, with the reason, when node or wasmtime-built artifacts are missing.
"""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from odin.model import Sampler, stream_tokens
from wasm_support import run_node, tiny_arith_model, train_briefly, wasm_path

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")
PACKING = (132 * 256 + 2060 * 256) * 4  # the GEMM packing buffer estimateMemory allows for (its upper bound)


SIZE_CHECKS = [[1, 1], [4, 9], [16, 16]]  # (B, T) of a workspace; B of a generation state


def check_sizes(got: dict) -> None:
    """The heap a workspace / generation state takes = the runtime's formula (estimateMemory's
    parts) plus the C structs and block headers (a few hundred bytes)."""
    assert len(got["sizes"]) == 2 * len(SIZE_CHECKS)
    for r in got["sizes"]:
        assert 0 <= r["heap"] - r["formula"] <= 1024, r



@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from odin.checkpoint import save_model_checkpoint
    from odin.web.export import export_web

    model, config, tok, examples = tiny_arith_model()
    d = tmp_path_factory.mktemp("export")
    settings = {"ops": ["add"], "min_digits": 1, "max_digits": 2, "reverse_answer": False}
    save_model_checkpoint(d / "ckpt", model, tok, config, step=300,
                          trainer_state={"dataset": {"settings": settings}, "reverse_answer": False})
    manifest = export_web(d / "ckpt", d / "web", examples=64, demo_prompts=4)
    assert manifest["task"] == {"kind": "arithmetic", **settings, "prompt_width": 0}
    assert len(manifest["examples"]) == 64 and len(manifest["demo_prompts"]) == 4
    return d / "web"


@pytest.mark.parametrize("variant", ["simd128", "scalar"])
def test_runtime_matches_native(variant, export_dir, tmp_path, tmp_path_factory):
    from odin.data.batching import encode_examples, make_batch

    wasm = wasm_path(variant, tmp_path_factory, need_wasmtime=False)
    model, config, tok, examples = tiny_arith_model()
    prompts = [e.prompt for e in examples[:12]]
    # training on problems the model has not learned (subtraction): gradients well above
    # AdamW's eps, where an update is not sensitive to ~1e-7 relative gradient differences
    from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples

    sub = sample_unique_examples(ArithmeticConfig(ops=("sub",), max_digits=2), 8, seed=2)
    train_examples = [{"prompt": e.prompt, "answer": e.answer} for e in sub]
    opts = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weightDecay": 0.1, "gradClip": 1.0}
    sample = {"prompt": "12+34=", "temperature": 1.3, "top_k": 6, "top_p": 0.95, "seed": 5, "max_new": 12}
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": variant,
            "model_dir": str(export_dir), "prompts": prompts, "max_new": 6, "sample": sample,
            "train_examples": train_examples, "train_steps": 2, "train_options": opts, "size_checks": SIZE_CHECKS}
    got = run_node(spec, tmp_path)

    assert got["isa"] == ("wasm_simd128" if variant == "simd128" else "scalar")
    assert got["n_params"] == model.n_params
    assert got["phases"] == ["manifest", "cache", "download", "verify", "wasm", "init", "ready"]
    assert got["from_cache"] is False  # node has no IndexedDB: always downloads
    # greedy: the same tokens as native
    expected = model.generate_greedy([[tok.bos_id, *tok.encode(p)] for p in prompts], max_new=6, end_id=tok.end_id)
    assert got["greedy"] == expected
    # sampling: same sampler (xorshift64*, same seeding as odin.model.Sampler), same tokens
    sampler = Sampler(temperature=sample["temperature"], top_k=sample["top_k"], top_p=sample["top_p"],
                      seed=sample["seed"])
    want = list(stream_tokens(model, [tok.bos_id, *tok.encode(sample["prompt"])], sample["max_new"], sampler))
    assert got["sampled"] == want
    # batch layout = odin.data.batching.make_batch
    enc = encode_examples(sub, tok)
    T = got["batch"]["T"]
    tokens, mask = make_batch(enc, list(range(len(train_examples))), T)
    assert got["batch"]["tokens"] == tokens.ravel().tolist()
    assert got["batch"]["mask"] == mask.ravel().tolist()
    # two training steps in the page = the same steps natively (tolerances: test_wasm_gpt.py)
    snapshot = (model.params.copy(), model.adam_m.copy(), model.adam_v.copy())
    model.adam_m[...] = 0.0  # the page starts AdamW from zero moments
    model.adam_v[...] = 0.0
    try:
        for step, res in enumerate(got["train"], start=1):
            model.zero_grad()
            loss = model.forward(tokens[:, :-1], tokens[:, 1:], mask)
            model.backward()
            norm = model.adamw_step(lr=1e-3, step=step, weight_decay=0.1, grad_clip=1.0)
            # the loss is lse - logit[target]: near 0 for a confident model the absolute error
            # (~1e-7 x the logits' size) is what stays small, not the relative one
            assert res["loss"] == pytest.approx(loss, rel=1e-5, abs=2e-6)
            assert res["grad_norm"] == pytest.approx(norm, rel=1e-4)
    finally:
        model.params[...], model.adam_m[...], model.adam_v[...] = snapshot
    # memory sized from the model; estimateMemory = gpt.c's allocations (what the heap holds
    # for the workspace and KV cache made, give or take the packing buffer and small structs)
    assert got["memory_bytes"] >= got["planned_bytes"]
    assert got["memory_bytes"] < got["planned_bytes"] + 8 * 2**20
    assert got["estimate_used"] - PACKING <= got["heap_in_use"] <= got["estimate_used"] + 64 * 1024
    assert got["heap_after_free"] <= PACKING + 64 * 1024
    check_sizes(got)


def test_generations_at_once_take_turns(export_dir, tmp_path, tmp_path_factory):
    """Two generate() calls at once on one model used to interleave token by token through
    its one KV cache and sampler state, each corrupting the other's answer. They take turns
    now: each gets exactly its tokens alone; a model's weights and buffers cannot change (or
    be freed) under a running generation; prefill and decode are timed apart."""
    wasm = wasm_path("simd128", tmp_path_factory, need_wasmtime=False)
    runs = [{"prompt": "12+34=", "temperature": 1.3, "top_k": 0, "top_p": 1.0, "seed": 5, "max_new": 10},
            {"prompt": "7+8=", "temperature": 0.9, "top_k": 5, "top_p": 0.9, "seed": 9, "max_new": 10}]
    train_examples = [{"prompt": "1+2=", "answer": "3"}, {"prompt": "3+4=", "answer": "7"}]
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": "simd128",
            "model_dir": str(export_dir), "concurrent": runs, "train_examples": train_examples}
    got = run_node(spec, tmp_path)
    assert got["alone"][0] != got["alone"][1]
    assert got["together"] == got["alone"]
    assert got["by_hand"] == got["alone"]
    assert "second_ran_early" not in got  # the second stream waited for the first to end
    for name, message in got["refused"].items():
        assert message is not None and message.startswith("OdinError: ") and "while a generation is running" in message, name
    assert got["after_break"] == got["alone"][1] and got["train_after"] is True
    tok = tiny_arith_model()[2]
    for stats, run, tokens in zip(got["together_stats"], runs, got["together"]):
        assert stats["promptTokens"] == 1 + len(tok.encode(run["prompt"]))
        assert stats["newTokens"] == len(tokens) == run["max_new"]
        assert stats["decodeTokens"] == len(tokens) - 1  # the first token comes out of prefill
        assert stats["prefillMs"] >= 0 and stats["decodeMs"] >= 0
        if stats["decodeMs"] > 0:
            assert stats["decodeTokensPerSecond"] == pytest.approx(stats["decodeTokens"] / (stats["decodeMs"] / 1e3))
        else:
            assert stats["decodeTokensPerSecond"] is None


TEXTS = ["hello world", "  two  spaces ", "tabs\tand\nnewlines\n\n", "Zürich ünïcödé", "emoji 😀👍🏽 done",
         "it's we'll they've I'd", "x=1+2*3; y = f(x) // comment", "<bos>special<end> tokens<pad>", "",
         "数字 123456 ١٢٣", "a" * 40, "MiXeD CaSe 42nd"]


def test_tokenizers_match_python(tmp_path):
    from odin.tokenizers import BPETokenizer, CharTokenizer

    corpus = [t * 3 for t in TEXTS] + ["the quick brown fox jumps over the lazy dog " * 5, "Zürich, 2024: 😀 it's"] * 10
    bpe = BPETokenizer.train(corpus, 320)
    char = CharTokenizer()
    char_texts = ["123+456=", "Hello, World! (x*y) / 7 = z?", "tab\there\n", "×÷ ~^|&"]
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(ROOT / "web" / "wasm"), "variant": "scalar",
            "tokenizer_cases": [{"tokenizer": json.loads(bpe.to_json()), "texts": TEXTS},
                                {"tokenizer": json.loads(char.to_json()), "texts": char_texts}]}
    if not (ROOT / "web" / "wasm" / "odin-scalar.wasm").is_file():
        pytest.skip("web/wasm/odin-scalar.wasm is not built")
    got = run_node(spec, tmp_path)
    for (ids, text, raw), t in zip(got["tokenize"][0], TEXTS):
        assert ids == bpe.encode(t), t
        assert text == bpe.decode(ids), t
        assert raw == bpe.decode(ids, skip_special=False), t
    for (ids, text, _), t in zip(got["tokenize"][1], char_texts):
        assert ids == char.encode(t)
        assert text == t


def test_export_errors(tmp_path):
    from odin.web.export import ExportError, export_web

    with pytest.raises(ExportError, match="cannot read checkpoint"):
        export_web(tmp_path / "missing", tmp_path / "out")


@pytest.mark.parametrize("abacus_answer", ["place", "next"])
def test_abacus_and_no_positions_model(abacus_answer, tmp_path, tmp_path_factory):
    """A model with Abacus digit embeddings and no absolute positions: the runtime computes
    the Abacus ids (prompt and generated digits) as odin/abacus.py and the C decoder do."""
    from odin.checkpoint import model_from_config, save_model_checkpoint
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples
    from odin.data.batching import encode_examples
    from odin.tokenizers import CharTokenizer
    from odin.web.export import export_web

    wasm = wasm_path("simd128", tmp_path_factory, need_wasmtime=False)
    tok = CharTokenizer()
    config = RunConfig(model=ModelConfig(n_layer=2, d_model=48, n_head=4, context=20, abacus=8, positions="none",
                                         abacus_answer=abacus_answer),
                       train=TrainConfig(lr=3e-3, weight_decay=0.0))
    model = model_from_config(config)
    model.init_weights(3)
    examples = sample_unique_examples(ArithmeticConfig(ops=("add",), max_digits=3, reverse_answer=True), 64, seed=4)
    train_briefly(model, encode_examples(examples, tok), steps=150, T=14, seed=1)
    save_model_checkpoint(tmp_path / "ckpt", model, tok, config, step=150, trainer_state={})
    manifest = export_web(tmp_path / "ckpt", tmp_path / "web", examples=0)
    assert manifest["abacus"] == {"digit_first": 3, "sep_id": tok.encode("=")[0], "next": abacus_answer == "next"}
    prompts = [e.prompt for e in examples[:10]] + ["1234+9=", "7+8="]
    train_examples = [{"prompt": e.prompt, "answer": e.answer} for e in examples[10:14]]
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": "simd128",
            "model_dir": str(tmp_path / "web"), "prompts": prompts, "max_new": 7,
            "train_examples": train_examples, "train_steps": 1, "train_options": {"lr": 0.0}}
    got = run_node(spec, tmp_path)
    expected = model.generate_greedy([[tok.bos_id, *tok.encode(p)] for p in prompts], max_new=7, end_id=tok.end_id)
    assert got["greedy"] == expected
    # a run on zero-padded operands (dataset prompt_zeros): the page asks in that form too
    settings = {"ops": ["add"], "max_digits": 3, "reverse_answer": True, "prompt_zeros": 4}
    save_model_checkpoint(tmp_path / "padded", model, tok, config, step=150,
                          trainer_state={"dataset": {"settings": settings}})
    assert export_web(tmp_path / "padded", tmp_path / "web-padded", examples=0)["task"]["prompt_width"] == 4
    short = ["7+8=", "12+345=", "1234+9="]
    padded = run_node({**spec, "model_dir": str(tmp_path / "web-padded"), "prompts": short, "train_examples": None},
                      tmp_path)
    assert padded["greedy"] == model.generate_greedy([[tok.bos_id, *tok.encode(p)] for p in
                                                      ("0007+0008=", "0012+0345=", "1234+0009=")], 7, tok.end_id)
    tokens = np.array(got["batch"]["tokens"], np.int32).reshape(got["batch"]["B"], -1)
    mask = np.array(got["batch"]["mask"], np.uint8).reshape(got["batch"]["B"], -1)
    loss = model.forward(tokens[:, :-1], tokens[:, 1:], mask)  # Abacus ids with offset 0, as in the page
    assert got["train"][0]["loss"] == pytest.approx(loss, rel=1e-5, abs=2e-6)


def test_alibi_model(tmp_path, tmp_path_factory):
    """A model with ALiBi attention biases and no learned positions: the page sets the same
    biases (odin_gpt_set_alibi), so greedy tokens and a training loss match the native model."""
    from odin.checkpoint import model_from_config, save_model_checkpoint
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples
    from odin.data.batching import encode_examples
    from odin.tokenizers import CharTokenizer
    from odin.web.export import export_web

    wasm = wasm_path("simd128", tmp_path_factory, need_wasmtime=False)
    tok = CharTokenizer()
    config = RunConfig(model=ModelConfig(n_layer=2, d_model=48, n_head=4, context=20, positions="alibi"),
                       train=TrainConfig(lr=3e-3, weight_decay=0.0))
    model = model_from_config(config)
    model.init_weights(5)
    examples = sample_unique_examples(ArithmeticConfig(ops=("add",), max_digits=2), 64, seed=6)
    train_briefly(model, encode_examples(examples, tok), steps=100, T=10, seed=2)
    save_model_checkpoint(tmp_path / "ckpt", model, tok, config, step=100, trainer_state={})
    export_web(tmp_path / "ckpt", tmp_path / "web", examples=0)
    prompts = [e.prompt for e in examples[:10]]
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": "simd128",
            "model_dir": str(tmp_path / "web"), "prompts": prompts, "max_new": 5,
            "train_examples": [{"prompt": e.prompt, "answer": e.answer} for e in examples[10:14]],
            "train_steps": 1, "train_options": {"lr": 0.0}}
    got = run_node(spec, tmp_path)
    expected = model.generate_greedy([[tok.bos_id, *tok.encode(p)] for p in prompts], max_new=5, end_id=tok.end_id)
    assert got["greedy"] == expected
    tokens = np.array(got["batch"]["tokens"], np.int32).reshape(got["batch"]["B"], -1)
    mask = np.array(got["batch"]["mask"], np.uint8).reshape(got["batch"]["B"], -1)
    assert got["train"][0]["loss"] == pytest.approx(model.forward(tokens[:, :-1], tokens[:, 1:], mask),
                                                    rel=1e-5, abs=2e-6)


@pytest.fixture(scope="module")
def rwkv_export_dir(tmp_path_factory):
    from odin.checkpoint import save_model_checkpoint
    from odin.web.export import export_web

    model, config, tok, examples = tiny_arith_model("rwkv")
    d = tmp_path_factory.mktemp("rwkv-export")
    settings = {"ops": ["add"], "min_digits": 1, "max_digits": 2, "reverse_answer": False}
    save_model_checkpoint(d / "ckpt", model, tok, config, step=300,
                          trainer_state={"dataset": {"settings": settings}, "reverse_answer": False})
    manifest = export_web(d / "ckpt", d / "web", examples=64, demo_prompts=4)
    assert manifest["model"]["arch"] == "rwkv" and manifest["model"]["d_ffn"] == 4 * manifest["model"]["d_model"]
    return d / "web"


@pytest.mark.parametrize("variant", ["simd128", "scalar"])
def test_rwkv_runtime_matches_native(variant, rwkv_export_dir, tmp_path, tmp_path_factory):
    """An RWKV-4 export in web/odin.js: greedy and seeded sampled tokens = native (sampling
    3x past the training context: no length limit), two training steps = native, the
    runtime's RWKV-4 initialisation = odin.rwkv's formulas and a model learning from it,
    a constant-size recurrent state, memory as planned, and free() giving it back."""
    from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples
    from odin.data.batching import encode_examples, make_batch
    from odin.rwkv import RWKV

    wasm = wasm_path(variant, tmp_path_factory, need_wasmtime=False)
    model, config, tok, examples = tiny_arith_model("rwkv")
    ctx = config.model.context
    prompts = [e.prompt for e in examples[:12]]
    sub = sample_unique_examples(ArithmeticConfig(ops=("sub",), max_digits=2), 8, seed=2)
    train_examples = [{"prompt": e.prompt, "answer": e.answer} for e in sub]
    opts = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weightDecay": 0.1, "gradClip": 1.0}
    sample = {"prompt": "12+34=", "temperature": 1.3, "top_k": 6, "top_p": 0.95, "seed": 5, "max_new": 3 * ctx}
    spec = {"runtime": str(ROOT / "web" / "odin.js"), "wasm_dir": str(wasm.parent), "variant": variant,
            "model_dir": str(rwkv_export_dir), "prompts": prompts, "max_new": 6, "sample": sample,
            "train_examples": train_examples, "train_steps": 2, "train_options": opts,
            "randomize": {"seed": 3, "steps": 40, "batch_size": 8, "lr": 3e-3}, "size_checks": SIZE_CHECKS}
    got = run_node(spec, tmp_path)

    assert got["arch"] == "rwkv" and got["describe"].startswith("RWKV-4") and got["max_length"] is None
    assert got["n_params"] == model.n_params
    expected = model.generate_greedy([[tok.bos_id, *tok.encode(p)] for p in prompts], max_new=6, end_id=tok.end_id)
    assert got["greedy"] == expected
    assert sum(1 for g in expected if g[-1] == tok.end_id) >= len(expected) // 2  # a trained model, not noise
    sampler = Sampler(temperature=sample["temperature"], top_k=sample["top_k"], top_p=sample["top_p"],
                      seed=sample["seed"])
    want = list(stream_tokens(model, [tok.bos_id, *tok.encode(sample["prompt"])], sample["max_new"], sampler))
    assert len(want) == 3 * ctx and got["sampled"] == want
    # two steps in the page = the same steps natively, from zero AdamW moments
    enc = encode_examples(sub, tok)
    tokens, mask = make_batch(enc, list(range(len(train_examples))), got["batch"]["T"])
    assert got["batch"]["tokens"] == tokens.ravel().tolist()
    snapshot = (model.params.copy(), model.adam_m.copy(), model.adam_v.copy())
    model.adam_m[...] = 0.0
    model.adam_v[...] = 0.0
    try:
        for step, res in enumerate(got["train"], start=1):
            model.zero_grad()
            loss = model.forward(tokens[:, :-1], tokens[:, 1:], mask)
            model.backward()
            norm = model.adamw_step(lr=1e-3, step=step, weight_decay=0.1, grad_clip=1.0)
            assert res["loss"] == pytest.approx(loss, rel=1e-5, abs=2e-6)
            assert res["grad_norm"] == pytest.approx(norm, rel=1e-4)
    finally:
        model.params[...], model.adam_m[...], model.adam_v[...] = snapshot
    # randomizeWeights: the curves of odin.rwkv.RWKV.init_weights exactly, the random tensors
    # with its distributions; the first loss is ~ln(V) (tiny emb) and training lowers it
    ref = RWKV(model.shape)
    ref.init_weights(0)
    mine = np.frombuffer(base64.b64decode(got["random_params"]), np.float32)
    L = model.shape.n_layer
    for name, off, shp in ref.tensor_layout:
        n = int(np.prod(shp))
        a, b = mine[off:off + n], ref.params[off:off + n]
        base = name.rsplit(".", 1)[-1]
        if base == "emb":
            assert np.abs(a).max() <= 1e-4 and a.std() == pytest.approx(1e-4 / np.sqrt(3), rel=0.05)
        elif base.endswith("_w") and len(shp) == 2:
            std = 0.02 / np.sqrt(2 * L) if base in ("att_output_w", "ffn_value_w") else 0.02
            assert a.std() == pytest.approx(std, rel=0.05) and abs(a.mean()) < 0.1 * std, name
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
    losses = got["random_losses"]
    assert losses[0] == pytest.approx(np.log(model.shape.vocab_size), abs=0.05)
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses
    # constant-size recurrent state; memory sized from the model; free() returns it
    assert got["state_bytes"] == L * 5 * model.shape.d_model * 4
    assert got["memory_bytes"] >= got["planned_bytes"]
    assert got["heap_in_use"] <= got["planned_bytes"] + 64 * 1024
    assert got["estimate_used"] - PACKING <= got["heap_in_use"] <= got["estimate_used"] + 64 * 1024  # rwkv.c's sizes
    assert got["heap_after_free"] <= PACKING + 64 * 1024  # the GEMM packing buffer stays
    check_sizes(got)
