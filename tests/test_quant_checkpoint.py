"""Quantized checkpoints (issue 20, item 2): a quantized GPT or RWKV saved and loaded byte for
byte (uint8 [rows, row bytes] tensors in model.safetensors, the weight types in its metadata,
under the content checksum), the blueprint's view of stored tensors, odin.quant.checkpoint's
quantize_checkpoint streaming a float32 checkpoint into a quantized one, and the refusals of
the library's training entry points and of the dashboard's "continue it"."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from odin.blueprint import Blueprint, answering_memory, describe
from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint, with_context
from odin.checkpoint_io import CheckpointError, load_checkpoint
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.model import WeightTypes
from odin.quant import DEFAULT_EMBED_TYPE, QUANT_TYPES
from odin.quant.checkpoint import QuantizedCheckpointError, quantize_checkpoint, refuse_training, stored_weights
from odin.quant.convert import quantized_copy
from odin.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer()
STATE = {"reverse_answer": True, "data_dir": "/somewhere/data", "sampler": {"position": 3}}


def _config(arch: str = "gpt", **fields) -> RunConfig:
    model = dict(arch=arch, n_layer=2, d_model=64, n_head=2 if arch == "gpt" else 1, context=16,
                 vocab_size=TOKENIZER.vocab_size)
    if arch == "rwkv":
        model["d_ffn"] = 96  # a channel-mix width other than 4 x d_model: its own row length
    model.update(fields)
    return RunConfig(model=ModelConfig(**model), train=TrainConfig(steps=10))


def _float_checkpoint(path, config: RunConfig, seed: int = 1):
    model = model_from_config(config)
    model.init_weights(seed)
    if config.model.arch == "rwkv":  # init gives emb U(-1e-4, 1e-4): spread it so its blocks differ
        model.named_params()["emb"][...] = np.random.default_rng(seed).normal(0, 0.5, model.named_params()["emb"].shape)
    save_model_checkpoint(path, model, TOKENIZER, config, step=7, trainer_state=STATE)
    return model


def _logits(model, tokens: np.ndarray) -> np.ndarray:
    model.forward(tokens)
    return model.logits()


TOKENS = np.random.default_rng(0).integers(0, TOKENIZER.vocab_size, (2, 12)).astype(np.int32)
ARCH_TYPES = [("gpt", "q8_0", "q8_0"), ("gpt", "q4_0", "q8_0"), ("gpt", "q5_1", "f32"), ("rwkv", "q4_1", "q8_0"),
              ("rwkv", "q5_0", "q5_0")]


@pytest.mark.parametrize("arch, matrix, embed", ARCH_TYPES)
def test_a_quantized_model_saves_and_loads_byte_for_byte(tmp_path, arch, matrix, embed):
    config = _config(arch)
    model = model_from_config(config)
    model.init_weights(3)
    quantized = quantized_copy(model, WeightTypes(matrix, embed))
    save_model_checkpoint(tmp_path / "q", quantized, TOKENIZER, config, step=5, trainer_state={"reverse_answer": True})
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]

    loaded = load_model_checkpoint(tmp_path / "q")
    assert loaded.model.weights == WeightTypes(matrix, embed) and loaded.model.is_quantized
    assert np.array_equal(loaded.model.qblock, quantized.qblock)
    assert np.array_equal(loaded.model.params, quantized.params)
    assert (loaded.step, loaded.trainer_state) == (5, {"reverse_answer": True}) and loaded.reverse_answer
    assert not loaded.has_optimizer and not loaded.optimizer_saved and not loaded.model.has_training_blocks
    assert np.array_equal(_logits(loaded.model, TOKENS), _logits(quantized, TOKENS))

    from safetensors import safe_open

    with safe_open(str(tmp_path / "q" / "model.safetensors"), framework="numpy") as handle:
        fields = json.loads(handle.metadata()["odin"])
        stored = {name: handle.get_tensor(name) for name in handle.keys()}
    assert json.loads(fields["weights"]) == {"matrix": matrix, "embed": embed}
    for name, (view, kind) in quantized.named_qtensors().items():
        assert stored[name].dtype == np.uint8 and np.array_equal(stored[name], view), name
    for name, view in quantized.named_params().items():
        assert stored[name].dtype == np.float32 and np.array_equal(stored[name], view), name
    assert stored_weights(tmp_path / "q") == WeightTypes(matrix, embed)


def test_saving_twice_gives_the_same_file(tmp_path):
    config = _config()
    quantized = quantized_copy(_float_checkpoint(tmp_path / "f", config), WeightTypes("q4_0", "q8_0"))
    for name in ("a", "b"):
        save_model_checkpoint(tmp_path / name, quantized, TOKENIZER, config, step=1)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("where", ["quantized tensor", "float32 tensor", "weight types"])
def test_every_flipped_bit_of_a_quantized_checkpoint_is_an_error(tmp_path, where):
    config = _config()
    quantized = quantized_copy(_float_checkpoint(tmp_path / "f", config), WeightTypes("q4_0", "q8_0"))
    save_model_checkpoint(tmp_path / "q", quantized, TOKENIZER, config, step=1)
    path = tmp_path / "q" / "model.safetensors"
    data = bytearray(path.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    header = json.loads(data[8:header_end])
    if where == "weight types":  # "q4_0" -> "q4_1" in the metadata: the file still parses
        at = data.index(b"q4_0", 8, header_end)
        data[at + 3] ^= ord("0") ^ ord("1")
    else:
        name = "h.1.fc_w" if where == "quantized tensor" else "h.1.fc_b"
        begin, end = header[name]["data_offsets"]
        data[header_end + (begin + end) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: (checksum mismatch|tensor 'h\.\d\.\w+' has shape)"):
        load_model_checkpoint(tmp_path / "q", with_optimizer=False)


@pytest.mark.parametrize("kind, field", [("q8_0", 0), ("q4_0", 0), ("q4_1", 2), ("q5_0", 0), ("q5_1", 2)])
def test_a_nan_scale_is_neither_saved_nor_loaded(tmp_path, kind, field):
    """A NaN or Inf scale (or minimum: field 2 of the "_1" blocks) that the checksum does not
    catch, because it was written so: refused on save and on load, like a NaN weight."""
    from odin.checkpoint_io import save_checkpoint
    from odin.native import NanError
    from odin.quant import row_bytes

    config = _config()
    quantized = quantized_copy(_float_checkpoint(tmp_path / "f", config), WeightTypes(kind, kind))
    view, _ = quantized.named_qtensors()["h.1.attproj_w"]
    view.reshape(-1, row_bytes(kind, 32))[5, field:field + 2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    with pytest.raises(NanError, match="the weights contain NaN or Inf"):
        save_model_checkpoint(tmp_path / "q", quantized, TOKENIZER, config, step=1)
    assert not (tmp_path / "q").exists()
    params = dict(quantized.named_params()) | {name: v for name, (v, _) in quantized.named_qtensors().items()}
    save_checkpoint(tmp_path / "q", params=params, config=config, tokenizer=TOKENIZER, weights=quantized.weights)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights contain NaN or Inf"):
        load_model_checkpoint(tmp_path / "q")


def test_a_quantized_file_that_does_not_fit_its_config_is_one_line(tmp_path):
    config = _config()
    quantized = quantized_copy(_float_checkpoint(tmp_path / "f", config), WeightTypes("q8_0", "q8_0"))
    save_model_checkpoint(tmp_path / "q", quantized, TOKENIZER, config, step=1)
    wider = json.loads((tmp_path / "q" / "config.json").read_text())
    wider["model"]["d_model"] = 96
    (tmp_path / "q" / "config.json").write_text(json.dumps(wider))
    with pytest.raises(CheckpointError) as caught:
        load_model_checkpoint(tmp_path / "q")
    message = str(caught.value)
    assert "\n" not in message and "expected (" in message and "q8_0 blocks of rows of 96 weights" in message


def test_the_blueprint_stores_what_the_native_model_holds():
    for config in (_config("gpt", abacus=4), _config("rwkv")):
        blueprint = Blueprint(config.model)
        for matrix in QUANT_TYPES:
            for embed in ("f32", "q8_0", matrix):
                weights = WeightTypes(matrix, embed)
                model = model_from_config(config, weights)
                specs = blueprint.tensor_specs(weights)
                native = {name: (view.shape, kind) for name, (view, kind) in model.named_qtensors().items()}
                assert {s.name: (s.shape, s.type) for s in specs if s.type != "f32"} == native
                assert [(s.name, s.shape) for s in specs if s.type == "f32"] == \
                    [(name, tuple(shape)) for name, _, shape in model.tensor_layout]
                memory = answering_memory(blueprint, weights)  # what odin model info states
                assert memory.weights == model.qblock.nbytes + model.params.nbytes
        assert [s[:3] for s in blueprint.tensor_specs()] == [(n, s, "float32") for n, s in blueprint.param_shapes()]


def test_model_info_of_a_quantized_model_counts_its_bytes_and_no_training():
    blueprint = Blueprint(_config().model)
    text = describe(blueprint, 2, 8, 2, WeightTypes("q4_0", "q8_0"))
    weights = answering_memory(blueprint, WeightTypes("q4_0", "q8_0")).weights
    assert f"q4_0 matrices, embedding (the tied head) q8_0, other tensors float32: {weights:,} B" in text
    assert re.search(rf"weights \(no gradients, no AdamW moments\)\s+q4_0 \(embedding q8_0\)\s+{weights:,} B", text)
    assert "AdamW moments m, v" not in text and "training: none" in text
    assert "weights     float32, every tensor" in describe(blueprint, 2, 8, 2)


def test_a_row_that_is_not_whole_blocks_names_the_tensor_and_32():
    blueprint = Blueprint(_config(d_model=48).model)
    with pytest.raises(ValueError, match=r"h\.0\.qkv_w as q4_0: its rows hold 48 weights \(d_model = 48\).* 32"):
        blueprint.tensor_specs(WeightTypes("q4_0", "f32"))
    rwkv = Blueprint(_config("rwkv", d_ffn=80).model)
    with pytest.raises(ValueError, match=r"h\.0\.ffn_value_w as q8_0: its rows hold 80 weights \(d_ffn = 80\)"):
        rwkv.tensor_specs(WeightTypes("q8_0", "q8_0"))


def test_load_checkpoint_gives_quantized_tensors_only_when_asked(tmp_path):
    config = _config()
    quantized = quantized_copy(_float_checkpoint(tmp_path / "f", config), WeightTypes("q5_0", "q8_0"))
    save_model_checkpoint(tmp_path / "q", quantized, TOKENIZER, config, step=4, trainer_state={"x": 1})
    with pytest.raises(QuantizedCheckpointError, match=r"quantized as q5_0 \(embedding q8_0\); this needs float32"):
        load_checkpoint(tmp_path / "q")  # the float32 readers (exports) get one line, not a KeyError
    checkpoint = load_checkpoint(tmp_path / "q", quantized=True)
    assert checkpoint.weights == WeightTypes("q5_0", "q8_0") and checkpoint.progress == (4, {"x": 1})
    assert checkpoint.optimizer is None
    blocks = quantized.named_qtensors()
    for name, array in checkpoint.params.items():
        expected = blocks[name][0] if name in blocks else quantized.named_params()[name]
        assert array.dtype == expected.dtype and np.array_equal(array, expected), name


@pytest.mark.parametrize("arch, positions", [("gpt", "alibi"), ("rwkv", "learned")])
def test_a_quantized_position_free_model_runs_over_a_longer_context(tmp_path, arch, positions):
    config = _config(arch, positions=positions)
    quantized = quantized_copy(_float_checkpoint(tmp_path / "f", config), WeightTypes("q8_0", "q8_0"))
    save_model_checkpoint(tmp_path / "q", quantized, TOKENIZER, config, step=1)
    loaded = load_model_checkpoint(tmp_path / "q", with_optimizer=False)
    longer = with_context(loaded, 32)
    assert longer.model.weights == quantized.weights and longer.run_config.model.context == 32
    assert np.array_equal(_logits(longer.model, TOKENS), _logits(quantized, TOKENS))


# ------------------------------------------------------------------ quantize_checkpoint
@pytest.mark.parametrize("arch", ["gpt", "rwkv"])
def test_quantizing_a_checkpoint_streams_what_the_in_memory_quantization_gives(tmp_path, arch):
    config = _config(arch)
    original = _float_checkpoint(tmp_path / "f", config)
    result = quantize_checkpoint(tmp_path / "f", tmp_path / "q", "q4_1")
    assert result.weights == WeightTypes("q4_1", DEFAULT_EMBED_TYPE) and result.path == tmp_path / "q"
    assert result.bytes_before == (tmp_path / "f" / "model.safetensors").stat().st_size
    assert result.bytes_after == (tmp_path / "q" / "model.safetensors").stat().st_size < result.bytes_before / 3
    assert "q4_1 (embedding q8_0)" in result.summary() and " MiB -> " in result.summary()
    expected = quantized_copy(original, WeightTypes("q4_1", DEFAULT_EMBED_TYPE))
    loaded = load_model_checkpoint(tmp_path / "q")
    assert np.array_equal(loaded.model.qblock, expected.qblock) and np.array_equal(loaded.model.params, expected.params)
    # the answering state comes along; where a run would resume does not; the source is named
    assert loaded.step == 7
    assert loaded.trainer_state == {"reverse_answer": True, "data_dir": "/somewhere/data",
                                    "quantized_from": str((tmp_path / "f").resolve())}
    for name in ("config.json", "tokenizer.json"):
        assert (tmp_path / "q" / name).read_text() == (tmp_path / "f" / name).read_text()


def test_quantize_finds_the_checkpoint_of_a_run_folder(tmp_path):
    _float_checkpoint(tmp_path / "run" / "checkpoint", _config())
    result = quantize_checkpoint(tmp_path / "run", tmp_path / "q", "q8_0", "f32")
    assert result.source == tmp_path / "run" / "checkpoint"
    assert stored_weights(result.path) == WeightTypes("q8_0", "f32")


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", ["unknown type", "f32 matrices", "quantized already", "rows of 48", "NaN weights",
                                  "NaN vector", "damaged", "out exists", "out is the source",
                                  "out is not a checkpoint"])
def test_quantize_refuses_bad_input_and_writes_nothing(tmp_path, case):
    config = _config(d_model=48) if case == "rows of 48" else _config()
    model = _float_checkpoint(tmp_path / "f", config)
    source, out, kwargs = tmp_path / "f", tmp_path / "q", {"matrix": "q4_0"}
    if case == "unknown type":
        kwargs = {"matrix": "q4_0", "embed": "q3_k"}
    elif case == "f32 matrices":
        kwargs = {"matrix": "f32"}
    elif case == "quantized already":
        quantize_checkpoint(source, tmp_path / "q8", "q8_0")
        source = tmp_path / "q8"
    elif case in ("NaN weights", "NaN vector"):  # written by other means: the checkpoint writer refuses NaN
        if case == "NaN weights":
            model.named_params()["h.1.fc_w"][3, 5] = np.nan
        else:
            model.named_params()["h.0.ln1_w"][7] = np.inf
        from odin.checkpoint_io import save_checkpoint

        save_checkpoint(source, params=model.named_params(), config=config, tokenizer=TOKENIZER)
    elif case == "damaged":
        data = bytearray((source / "model.safetensors").read_bytes())
        data[-1000] ^= 0x01
        (source / "model.safetensors").write_bytes(bytes(data))
    elif case == "out exists":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "out is the source":
        out = source
        kwargs["overwrite"] = True
    elif case == "out is not a checkpoint":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        kwargs["overwrite"] = True
    before = _listing(tmp_path)
    messages = {
        "unknown type": r"--embed: unknown quantization type 'q3_k': expected one of q8_0, q4_0, q4_1, q5_0, q5_1",
        "f32 matrices": r"--type f32 is not a block format",
        "quantized already": r"quantized already, as q8_0: quantize the float32 checkpoint it was made from \(.*/f\)",
        "rows of 48": r"cannot store wte as q8_0: its rows hold 48 weights \(d_model = 48\) and a q8_0 block holds 32",
        "NaN weights": r"tensor 'h\.1\.fc_w' contains NaN or Inf",
        "NaN vector": r"model\.safetensors: tensor 'h\.0\.ln1_w' contains NaN or Inf",
        "damaged": r"checksum mismatch",
        "out exists": r"already exists; replace it with --overwrite",
        "out is the source": r"is the checkpoint being quantized",
        "out is not a checkpoint": r"holds no checkpoint: --overwrite replaces a checkpoint folder only",
    }
    with pytest.raises(ValueError, match=messages[case]):
        quantize_checkpoint(source, out, **kwargs)
    assert _listing(tmp_path) == before  # nothing written, nothing left half-written beside OUT


def test_overwrite_replaces_a_quantized_checkpoint(tmp_path):
    _float_checkpoint(tmp_path / "f", _config())
    quantize_checkpoint(tmp_path / "f", tmp_path / "q", "q8_0")
    quantize_checkpoint(tmp_path / "f", tmp_path / "q", "q4_0", overwrite=True)
    assert stored_weights(tmp_path / "q") == WeightTypes("q4_0", DEFAULT_EMBED_TYPE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "q"]


# ------------------------------------------------------------------ training refuses
def test_every_library_training_entry_point_refuses_quantized_weights(tmp_path):
    from odin.run_checks import init_weights_from, resume_state

    config = _config()
    _float_checkpoint(tmp_path / "f", config)
    quantize_checkpoint(tmp_path / "f", tmp_path / "run" / "checkpoint", "q4_0")
    said = r"quantized as q4_0 \(embedding q8_0\): it can answer but not train; train the float32 checkpoint it " \
           r"was made from \(.*/f\)"
    with pytest.raises(QuantizedCheckpointError, match="cannot resume: .*" + said):
        resume_state(tmp_path / "run" / "checkpoint", None)
    with pytest.raises(QuantizedCheckpointError, match="cannot resume: .*" + said):  # --out naming the checkpoint
        resume_state(tmp_path / "run" / "checkpoint" / "checkpoint", None)
    with pytest.raises(QuantizedCheckpointError, match="--init-from: .*" + said):
        init_weights_from(tmp_path / "run" / "checkpoint", TOKENIZER)
    refuse_training(tmp_path / "f")  # a float32 checkpoint trains
    # and the C model itself refuses whatever gets past these
    from odin.native import ArgumentError
    from odin.spheres import SpheresTrainer

    with pytest.raises(ArgumentError, match="quantized"):
        SpheresTrainer(load_model_checkpoint(tmp_path / "run" / "checkpoint").model, 4, 8, threads=1)


def test_the_dashboard_chats_with_a_quantized_checkpoint_but_does_not_continue_it(tmp_path):
    from odin.model import Sampler, stream_tokens
    from odin_dashboard.chat import ChatModel, clone_model
    from odin_dashboard.viewmodel.runfolder import continue_problem

    _float_checkpoint(tmp_path / "f", _config())
    quantize_checkpoint(tmp_path / "f", tmp_path / "q", "q4_0")
    loaded = load_model_checkpoint(tmp_path / "q", with_optimizer=False)
    assert "quantized as q4_0 (embedding q8_0): it answers but cannot train" in continue_problem(loaded)
    chat = ChatModel(loaded.model, loaded.run_config, loaded.tokenizer, loaded.reverse_answer, "test")
    clone = clone_model(chat)
    assert clone.weights == loaded.model.weights and np.array_equal(clone.qblock, loaded.model.qblock)
    prompt = [TOKENIZER.bos_id, *TOKENIZER.encode("12+34=")]
    answers = [list(stream_tokens(m, prompt, 8, Sampler())) for m in (clone, loaded.model)]
    assert answers[0] == answers[1]
