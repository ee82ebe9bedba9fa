"""odin export onnx, proven by onnxruntime: whole-sequence logits, token-by-token decoding with
the past keys/values (GPT) or the recurrent state (RWKV) fed back, and greedy tokens equal to
the installed odin-infer's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from interchange_models import (PROMPTS, make_checkpoint, odin_infer_greedy, odin_logits, one_error_line,
                                relative_difference, require_reader, run)
from odin.tokenizers import load_tokenizer

ort = require_reader("onnxruntime", "onnxruntime is not installed (.ci/run installs it)")
require_reader("onnx", "onnx, the exporter's writer, is not installed (pip install 'odin[interchange]')")

TOLERANCE = 1e-4  # relative (max abs difference over the largest logit)


class OnnxModel:
    """An exported file in onnxruntime, with its cache or state carried between calls."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i.shape for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.rwkv = "state_num" in self.inputs

    def empty_memory(self, batch: int) -> dict[str, np.ndarray]:
        memory = {}
        for name, shape in self.inputs.items():
            if name == "input_ids":
                continue
            dims = [batch if d == "batch" else 0 if d == "past" else d for d in shape]
            memory[name] = np.full(dims, -1e38 if name == "state_max" else 0.0, np.float32)
        return memory

    def __call__(self, ids: list[list[int]], memory: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """Logits [batch, len, vocab] for the next tokens ``ids`` and the memory after them."""
        out = dict(zip(self.output_names, self.session.run(None, {"input_ids": np.array(ids, np.int64), **memory})))
        rename = (lambda n: n[len("new_"):]) if self.rwkv else (lambda n: n.replace("present_", "past_"))
        return out["logits"], {rename(name): value for name, value in out.items() if name != "logits"}


def _export(checkpoint: Path, out: Path) -> OnnxModel:
    proc = run("odin", "export", "onnx", checkpoint, out)
    assert proc.returncode == 0, proc.stderr
    return OnnxModel(out)


@pytest.mark.parametrize("arch,model", [("gpt", {}), ("gpt", {"positions": "none"}), ("rwkv", {})])
def test_logits_whole_and_token_by_token_equal_odin(tmp_path, arch, model):
    checkpoint = make_checkpoint(tmp_path / "ckpt", arch, seed=7, **model)
    onnx_model = _export(checkpoint, tmp_path / "model.onnx")
    tok = load_tokenizer(checkpoint)
    ids = [tok.bos_id, *tok.encode("12+34=46 and 7*8=56")]
    want = odin_logits(checkpoint, ids)
    whole, _ = onnx_model([ids], onnx_model.empty_memory(1))
    assert relative_difference(whole[0], want) < TOLERANCE
    # a prompt of 5 in one call, then one token per call with the cache / state fed back
    logits, memory = onnx_model([ids[:5]], onnx_model.empty_memory(1))
    pieces = [logits[0]]
    for token in ids[5:]:
        logits, memory = onnx_model([[token]], memory)
        pieces.append(logits[0])
    assert relative_difference(np.concatenate(pieces), want) < TOLERANCE
    # a batch of two sequences in one call computes each one's logits
    other = [tok.bos_id, *tok.encode("99-1=98 and 2+2=004")]
    assert len(other) == len(ids)
    both, _ = onnx_model([ids, other], onnx_model.empty_memory(2))
    assert relative_difference(both[1], odin_logits(checkpoint, other)) < TOLERANCE


@pytest.mark.parametrize("arch", ["gpt", "rwkv"])
def test_greedy_tokens_equal_odin_infer(tmp_path, arch):
    checkpoint = make_checkpoint(tmp_path / "ckpt", arch, train_steps=150, seed=1)
    onnx_model = _export(checkpoint, tmp_path / "model.onnx")
    tok = load_tokenizer(checkpoint)
    for prompt in PROMPTS:
        odin = odin_infer_greedy(checkpoint, prompt, 16)
        assert odin["stopped_by"] == "end", odin
        logits, memory = onnx_model([[tok.bos_id, *tok.encode(prompt)]], onnx_model.empty_memory(1))
        generated: list[int] = []
        while len(generated) < 16:
            generated.append(int(np.argmax(logits[0, -1])))
            if generated[-1] == tok.end_id:
                break
            logits, memory = onnx_model([[generated[-1]]], memory)
        assert len(generated) == odin["tokens"] and tok.decode(generated) == odin["completion"], prompt


@pytest.mark.parametrize("model,fragment", [({"positions": "alibi"}, "ALiBi"),
                                            ({"positions": "none", "abacus": 12}, "Abacus")])
def test_refuses_what_the_graph_cannot_express(tmp_path, model, fragment):
    checkpoint = make_checkpoint(tmp_path / "ckpt", "gpt", **model)
    proc = run("odin", "export", "onnx", checkpoint, tmp_path / "model.onnx")
    one_error_line(proc, "odin export onnx: error:", str(checkpoint / "config.json"), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_bad_checkpoints_are_one_line_and_write_nothing(tmp_path):
    one_error_line(run("odin", "export", "onnx", tmp_path / "nope", tmp_path / "m.onnx"), "odin export onnx: error:",
                   "checkpoint directory not found")
    checkpoint = make_checkpoint(tmp_path / "ckpt", "rwkv")
    (checkpoint / "config.json").write_text('{"model": {"arch": "mamba"}}')
    one_error_line(run("odin", "export", "onnx", checkpoint, tmp_path / "m.onnx"), "odin export onnx: error:",
                   "config.json", "arch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
