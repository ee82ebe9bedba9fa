"""odin export hf / odin import hf, proven by transformers itself: the exported directory loads
with AutoModelForCausalLM / AutoTokenizer and computes ODIN's logits and greedy text; models
and tokenizers that transformers creates and saves here import into checkpoints that compute
transformers' logits. Nothing is downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from interchange_models import (PROMPTS, make_checkpoint, odin_infer_greedy, odin_logits, one_error_line,
                                relative_difference, require_reader, run)

torch = require_reader("torch", "torch is not installed (.ci/run installs the CPU build)")
transformers = require_reader("transformers", "transformers is not installed (.ci/run installs it)")

TOLERANCE = 1e-4  # relative (max abs difference over the largest logit)


def _hf_model(directory: Path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(directory), output_loading_info=True)
    assert not any(info.values()), info  # no tensor missing, unexpected or mismatched
    return model.eval()


def _hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _hf_greedy(directory: Path, prompt: str, n: int) -> str:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    ids = tokenizer(prompt).input_ids
    with torch.no_grad():
        out = _hf_model(directory).generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def _export(checkpoint: Path, out: Path) -> Path:
    proc = run("odin", "export", "hf", checkpoint, out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("arch,tokenizer", [("gpt", "char"), ("gpt", "bpe"), ("rwkv", "char"), ("rwkv", "bpe")])
def test_export_loads_in_transformers_with_odin_logits_and_tokens(tmp_path, arch, tokenizer):
    checkpoint = make_checkpoint(tmp_path / "ckpt", arch, tokenizer=tokenizer, seed=3)
    out = _export(checkpoint, tmp_path / "hf")
    model = _hf_model(out)
    assert type(model).__name__ == {"gpt": "GPT2LMHeadModel", "rwkv": "RwkvForCausalLM"}[arch]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    from odin.tokenizers import load_tokenizer

    odin_tok = load_tokenizer(checkpoint)
    text = "12+30=42\n the fox" if tokenizer == "bpe" else "12+30=42\n\tx*y"
    ids = hf_tok(text).input_ids
    assert ids == [odin_tok.bos_id, *odin_tok.encode(text)]  # what odin-infer feeds the model
    assert hf_tok.decode(ids, skip_special_tokens=True) == text
    assert (hf_tok.pad_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id) == (
        odin_tok.pad_id, odin_tok.bos_id, odin_tok.end_id)
    assert relative_difference(_hf_logits(model, ids), odin_logits(checkpoint, ids)) < TOLERANCE


@pytest.mark.parametrize("arch", ["gpt", "rwkv"])
def test_trained_model_greedy_text_equals_odin_infer(tmp_path, arch):
    checkpoint = make_checkpoint(tmp_path / "ckpt", arch, train_steps=150, seed=1)
    out = _export(checkpoint, tmp_path / "hf")
    model = _hf_model(out)
    for prompt in PROMPTS:
        odin = odin_infer_greedy(checkpoint, prompt, 16)
        assert odin["stopped_by"] == "end" and odin["completion"], odin  # it learned the lines' shape
        assert _hf_greedy(out, prompt, 16) == odin["completion"], prompt
    from odin.tokenizers import load_tokenizer

    tok = load_tokenizer(checkpoint)
    ids = [tok.bos_id, *tok.encode("12+3=15")]
    assert relative_difference(_hf_logits(model, ids), odin_logits(checkpoint, ids)) < TOLERANCE


@pytest.mark.parametrize("model,fragment", [
    ({"positions": "alibi"}, "ALiBi"),
    ({"positions": "none"}, "without position embeddings"),
    ({"positions": "none", "abacus": 12}, "Abacus"),
])
def test_export_refuses_what_transformers_cannot_express(tmp_path, model, fragment):
    checkpoint = make_checkpoint(tmp_path / "ckpt", "gpt", **model)
    proc = run("odin", "export", "hf", checkpoint, tmp_path / "hf")
    one_error_line(proc, "odin export hf: error:", str(checkpoint / "config.json"), fragment)
    assert not (tmp_path / "hf").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_export_refuses_an_existing_directory_and_a_missing_checkpoint(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "ckpt", "gpt")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    one_error_line(run("odin", "export", "hf", checkpoint, taken), "odin export hf: error:", "already exists")
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    one_error_line(run("odin", "export", "hf", tmp_path / "nope", tmp_path / "hf"), "odin export hf: error:",
                   "checkpoint directory not found")
    (checkpoint / "model.safetensors").write_bytes(b"garbage")
    one_error_line(run("odin", "export", "hf", checkpoint, tmp_path / "hf"), "odin export hf: error:",
                   "model.safetensors")
    assert not (tmp_path / "hf").exists()


# ------------------------------------------------------------------------------ import
def _hf_tokenizer_dir(directory: Path, with_specials: bool = True) -> None:
    """A byte-level BPE tokenizer trained here, saved by transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<pad>", "<bos>", "<end>"] if with_specials else ["<|endoftext|>"]
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(["the quick brown fox jumps over the lazy dog", "12+34=46"] * 20, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=hf, **(
        {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<end>"} if with_specials else {}))
    fast.save_pretrained(str(directory))


def _saved_gpt2(directory: Path, vocab_size: int = 320, **options) -> Path:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=0, **options)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(str(directory))
    _hf_tokenizer_dir(directory)
    return directory


def _saved_rwkv(directory: Path, **options) -> Path:
    torch.manual_seed(0)
    config = transformers.RwkvConfig(vocab_size=320, context_length=24, hidden_size=32, num_hidden_layers=4,
                                     intermediate_size=96, tie_word_embeddings=True, bos_token_id=1,
                                     eos_token_id=2, pad_token_id=0, **options)
    model = transformers.RwkvForCausalLM(config)
    with torch.no_grad():  # transformers' init leaves the time parameters tiny: spread them out
        for name, param in model.named_parameters():
            if "time_" in name or "embeddings" in name:
                param.copy_(torch.randn_like(param) * 0.5)
    model.eval().save_pretrained(str(directory))
    _hf_tokenizer_dir(directory)
    return directory


def _saved_files(directory: Path) -> dict[str, object]:
    from safetensors.numpy import load_file

    files: dict[str, object] = {name: (directory / name).read_text() for name in
                                ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")}
    files.update({f"tensor {key}": value.tobytes() for key, value in load_file(str(directory / "model.safetensors")).items()})
    return files


@pytest.mark.parametrize("arch", ["gpt2", "rwkv"])
def test_import_of_transformers_models_computes_their_logits(tmp_path, arch):
    # rescale_every: transformers' RWKV halves the residual stream every k layers in eval mode,
    # which LayerNorm undoes up to its eps (5e-5 relative here). The stored weights are the
    # model as trained: ODIN imports them and computes that model (rescale_every = 0)
    source = _saved_gpt2(tmp_path / "hf") if arch == "gpt2" else _saved_rwkv(tmp_path / "hf", rescale_every=2)
    proc = run("odin", "import", "hf", source, tmp_path / "ckpt")
    assert proc.returncode == 0, proc.stderr
    ckpt = tmp_path / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    from odin.checkpoint import load_model_checkpoint

    loaded = load_model_checkpoint(ckpt)
    assert loaded.run_config.model.arch == {"gpt2": "gpt", "rwkv": "rwkv"}[arch]
    tok = transformers.AutoTokenizer.from_pretrained(str(source))
    ids = tok("the lazy fox 12+34=").input_ids
    assert ids == loaded.tokenizer.encode("the lazy fox 12+34=")
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(source), **({"rescale_every": 0} if arch == "rwkv" else {})).eval()
    want = _hf_logits(reference, ids)
    assert relative_difference(odin_logits(ckpt, ids), want) < TOLERANCE
    # the commands that take a checkpoint take it
    odin = odin_infer_greedy(ckpt, "the lazy", 5)
    assert odin["tokens"] == 5 and odin["stopped_by"] == "max_tokens"


@pytest.mark.parametrize("arch,tokenizer", [("gpt", "char"), ("gpt", "bpe"), ("rwkv", "char")])
def test_round_trip_export_import_export_is_equal(tmp_path, arch, tokenizer):
    checkpoint = make_checkpoint(tmp_path / "ckpt", arch, tokenizer=tokenizer, seed=5, context=24)
    first = _export(checkpoint, tmp_path / "hf1")
    proc = run("odin", "import", "hf", first, tmp_path / "back")
    assert proc.returncode == 0, proc.stderr
    from odin.checkpoint_io import load_checkpoint

    original, back = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "back")
    # everything but the seed the random weights were drawn with (the weights themselves travel)
    assert {**back.config["model"], "init_seed": 5} == original.config["model"]
    assert type(back.tokenizer) is type(original.tokenizer) and back.tokenizer.to_json() == original.tokenizer.to_json()
    assert all(np.array_equal(back.params[name], original.params[name]) for name in original.params)
    second = _export(tmp_path / "back", tmp_path / "hf2")
    assert _saved_files(second) == _saved_files(first)


def test_imported_checkpoint_scores_as_the_original_in_odin_eval_and_fine_tunes(tmp_path):
    original = make_checkpoint(tmp_path / "ckpt", "gpt", train_steps=150, seed=1)
    _export(original, tmp_path / "hf")
    assert run("odin", "import", "hf", tmp_path / "hf", tmp_path / "back").returncode == 0
    data = tmp_path / "data"
    build = run("odin", "data", "build", "--out", data, "--n", 200, "--max-digits", 2, "--seed", 3, "--no-progress")
    assert build.returncode == 0, build.stderr
    scores = []
    for checkpoint in (original, tmp_path / "back"):
        proc = run("odin", "eval", checkpoint, "--data", data, "--splits", "test", "--json", "--errors", tmp_path)
        assert proc.returncode == 0, proc.stderr
        scores.append({k: v for k, v in json.loads(proc.stdout)["test"].items() if "second" not in k})
    assert scores[0] == scores[1] and scores[0]["n"] > 0
    # and fine-tuning starts from it
    proc = run("odin", "train", "--init-from", tmp_path / "back", "--data", data, "--steps", 3, "--out",
               tmp_path / "run", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 3


def test_imported_model_with_a_padded_vocabulary_fine_tunes(tmp_path):
    # many HF models carry embedding rows beyond their tokenizer (vocab padded to a multiple of 8/64):
    # those rows import, and a run started from them trains with them
    original = make_checkpoint(tmp_path / "ckpt", "gpt", seed=2)
    hf_dir = _export(original, tmp_path / "hf")
    model = _hf_model(hf_dir)
    tokens = model.config.vocab_size
    model.resize_token_embeddings(tokens + 13)
    model.save_pretrained(str(hf_dir))
    assert run("odin", "import", "hf", hf_dir, tmp_path / "back").returncode == 0
    from odin.checkpoint_io import load_checkpoint

    assert load_checkpoint(tmp_path / "back").config["model"]["vocab_size"] == tokens + 13
    data = tmp_path / "data"
    build = run("odin", "data", "build", "--out", data, "--n", 200, "--max-digits", 2, "--seed", 3, "--no-progress")
    assert build.returncode == 0, build.stderr
    proc = run("odin", "train", "--init-from", tmp_path / "back", "--data", data, "--steps", 3, "--out",
               tmp_path / "run", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 3
    assert load_checkpoint(tmp_path / "run" / "checkpoint").config["model"]["vocab_size"] == tokens + 13


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("arch,changes,fragments", [
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, ["scale_attn_by_inverse_layer_idx = true"]),
    ("gpt2", {"activation_function": "relu"}, ["activation_function = \"relu\"", "tanh GELU"]),
    ("gpt2", {"add_cross_attention": True}, ["add_cross_attention"]),
    ("gpt2", {"n_inner": 64}, ["n_inner = 64"]),
    ("gpt2", {"model_type": "llama"}, ["model_type 'llama' is not supported"]),
    ("gpt2", {"n_embd": 64}, ["transformer.wte.weight", "[320, 32]", "[320, 64]"]),
    ("gpt2", {"vocab_size": 100}, ["tokenizer.json", "tokens, more than", "vocab_size 100"]),
    ("gpt2", {"n_layer": "two"}, ["'n_layer' must be an integer"]),
    ("gpt2", {"n_head": 3}, ["n_head", "divisible"]),
    ("rwkv", {"attention_hidden_size": 16}, ["attention_hidden_size = 16"]),
    ("rwkv", {"layer_norm_epsilon": 1e-6}, ["layer_norm_epsilon"]),
])
def test_import_refuses_options_and_mismatches_in_one_line(tmp_path, arch, changes, fragments):
    source = _saved_gpt2(tmp_path / "hf") if arch == "gpt2" else _saved_rwkv(tmp_path / "hf")
    _edit_config(source, **changes)
    proc = run("odin", "import", "hf", source, tmp_path / "ckpt")
    one_error_line(proc, "odin import hf: error:", str(source), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_import_refuses_broken_directories_in_one_line(tmp_path):
    source = _saved_gpt2(tmp_path / "hf")
    out = tmp_path / "ckpt"

    def refused(*fragments: str) -> None:
        one_error_line(run("odin", "import", "hf", source, out), "odin import hf: error:", *fragments)
        assert not out.exists()

    config = (source / "config.json").read_text()
    (source / "config.json").write_text("{\"model_type\": \"gpt2\", ")
    refused(str(source / "config.json"), "not valid JSON")
    (source / "config.json").write_text("[1, 2]")
    refused(str(source / "config.json"), "expected a JSON object")
    (source / "config.json").write_text(config)
    weights = (source / "model.safetensors").read_bytes()
    (source / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    refused(str(source / "model.safetensors"), "unreadable safetensors")
    (source / "model.safetensors").rename(source / "pytorch_model.bin")
    refused("model.safetensors is missing", "pytorch_model.bin is a pickle file")
    (source / "pytorch_model.bin").unlink()
    (source / "tokenizer.json").unlink()
    refused("tokenizer.json is missing")
    one_error_line(run("odin", "import", "hf", tmp_path / "nope", out), "odin import hf: error:",
                   "model directory not found")


def test_import_refuses_an_untied_head_and_a_tokenizer_without_odin_special_tokens(tmp_path):
    untied = tmp_path / "untied"
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=320, n_positions=24, n_embd=32, n_layer=1, n_head=4,
                                     tie_word_embeddings=False)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(untied))
    _hf_tokenizer_dir(untied)
    one_error_line(run("odin", "import", "hf", untied, tmp_path / "a"), "odin import hf: error:",
                   "'lm_head.weight' differs from the embedding")
    plain = _saved_gpt2(tmp_path / "plain")
    _hf_tokenizer_dir(plain, with_specials=False)
    one_error_line(run("odin", "import", "hf", plain, tmp_path / "b"), "odin import hf: error:",
                   str(plain / "tokenizer.json"), "<pad>, <bos>, <end>")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    one_error_line(run("odin", "import", "hf", tmp_path / "plain", taken), "odin import hf: error:", "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "taken", "untied"]
