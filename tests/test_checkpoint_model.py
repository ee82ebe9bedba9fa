"""odin.checkpoint: a live GPT <-> a checkpoint directory."""
import json
import struct

import numpy as np
import pytest

from odin.checkpoint import (
    CheckpointError,
    load_model_checkpoint,
    model_from_config,
    save_model_checkpoint,
    with_context,
)
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.native import ShapeError
from odin.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer()


def _config(**model) -> RunConfig:
    settings = dict(n_layer=2, d_model=16, n_head=2, context=8)
    settings.update(model)
    return RunConfig(model=ModelConfig(**settings), train=TrainConfig(steps=5))


def _model(config: RunConfig):
    model = model_from_config(config)
    model.init_weights(7)
    # simple, recognisable values in every block
    model.params[...] = (np.arange(model.n_params, dtype=np.float32) % 97) * 1e-3 - 0.05
    model.adam_m[...] = (np.arange(model.n_params, dtype=np.float32) % 13) * 1e-4
    model.adam_v[...] = (np.arange(model.n_params, dtype=np.float32) % 11) * 1e-6
    return model


STATE = {"sampler": {"seed": 3, "epoch": 1, "position": 17}, "rng": [1, 2, 3], "metrics": {"loss": [2.5, 1.25]},
         "reverse_answer": True}


def test_model_from_config_matches_blueprint():
    config = _config()
    model = model_from_config(config)
    assert model.shape.vocab_size == TOKENIZER.vocab_size == config.model.vocab_size
    assert (model.shape.n_layer, model.shape.d_model, model.shape.n_head, model.shape.context) == (2, 16, 2, 8)
    from odin.blueprint import Blueprint

    assert [(n, tuple(s)) for n, _, s in model.tensor_layout] == Blueprint(config.model).param_shapes()


def test_model_from_config_builds_each_arch_with_the_blueprint_layout():
    from odin.blueprint import Blueprint
    from odin.model import GPT
    from odin.rwkv import RWKV

    for arch, cls in (("gpt", GPT), ("rwkv", RWKV)):
        config = _config(arch=arch, n_head=1 if arch == "rwkv" else 2)
        model = model_from_config(config)
        assert type(model) is cls
        assert [(n, tuple(s)) for n, _, s in model.tensor_layout] == Blueprint(config.model).param_shapes()


def test_round_trip_params_moments_state(tmp_path):
    config = _config()
    model = _model(config)
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=123, trainer_state=STATE)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dir left behind

    loaded = load_model_checkpoint(tmp_path / "ckpt")
    assert loaded.step == 123 and loaded.trainer_state == STATE and loaded.has_optimizer
    assert loaded.run_config == config
    assert loaded.reverse_answer is True
    assert loaded.tokenizer.vocab == TOKENIZER.vocab
    np.testing.assert_array_equal(loaded.model.params, model.params)
    np.testing.assert_array_equal(loaded.model.adam_m, model.adam_m)
    np.testing.assert_array_equal(loaded.model.adam_v, model.adam_v)
    for name, view in model.named_params().items():
        np.testing.assert_array_equal(loaded.model.named_params()[name], view)

    # the reloaded model computes exactly what the original does
    tokens = np.array([[1, 3, 4, 5, 6, 7, 8, 2]], np.int32)
    model.forward(tokens)
    loaded.model.forward(tokens)
    np.testing.assert_array_equal(loaded.model.logits(), model.logits())


def test_alibi_model_round_trip(tmp_path):
    """positions = "alibi" builds a model with the attention biases, and a checkpoint of it
    reloads as one: the same logits, unlike the same weights without the biases."""
    config = _config(positions="alibi")
    model = model_from_config(config)
    model.params[...] = np.random.default_rng(0).normal(0, 0.3, model.n_params)
    assert model.shape.alibi and not model.shape.learned_positions
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=1, trainer_state=STATE)
    loaded = load_model_checkpoint(tmp_path / "ckpt")
    assert loaded.run_config.model.positions == "alibi" and loaded.model.shape.alibi
    tokens = np.array([[1, 3, 4, 5, 6, 7, 8, 2]], np.int32)
    model.forward(tokens)
    loaded.model.forward(tokens)
    np.testing.assert_array_equal(loaded.model.logits(), model.logits())
    plain = model_from_config(_config(positions="none"))
    plain.params[...] = model.params
    plain.forward(tokens)
    assert np.abs(plain.logits() - model.logits()).max() > 1e-2 * np.abs(model.logits()).max()


@pytest.mark.parametrize("positions", ["alibi", "none"])
def test_with_context_runs_a_position_free_model_over_more_positions(tmp_path, positions):
    config = _config(positions=positions)
    model = model_from_config(config)
    model.params[...] = np.random.default_rng(1).normal(0, 0.3, model.n_params)
    model.named_params()["wpe"][...] = 0.0  # held at zero by training
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=1, trainer_state=STATE)
    loaded = load_model_checkpoint(tmp_path / "ckpt")
    wide = with_context(loaded, 20)
    assert wide.model.shape.context == wide.run_config.model.context == 20 and not wide.has_optimizer
    assert wide.trainer_state == STATE and loaded.model.shape.context == 8  # the original is untouched
    tokens = np.array([[1, 3, 4, 5, 6, 7, 8, 2]], np.int32)
    model.forward(tokens)
    wide.model.forward(tokens)
    np.testing.assert_array_equal(wide.model.logits(), model.logits())  # same lengths, same numbers
    long = np.tile(tokens, (1, 2))[:, :15]
    wide.model.forward(long)  # beyond the trained context
    assert np.isfinite(wide.model.logits()).all()
    with pytest.raises(ShapeError):
        model.forward(long)
    assert with_context(loaded, 8) is loaded


def test_with_context_refusals(saved):
    loaded = load_model_checkpoint(saved)  # learned positions
    with pytest.raises(ValueError, match="learned positions for 8 places"):
        with_context(loaded, 16)
    with pytest.raises(ValueError, match="shorter than the model's"):
        with_context(loaded, 4)
    with pytest.raises(ValueError, match="positive integer"):
        with_context(loaded, 0)


def test_load_without_optimizer_keeps_step_and_state(tmp_path):
    config = _config()
    save_model_checkpoint(tmp_path / "ckpt", _model(config), TOKENIZER, config, step=5, trainer_state=STATE)
    loaded = load_model_checkpoint(tmp_path / "ckpt", with_optimizer=False)
    assert not loaded.has_optimizer
    assert not loaded.model.adam_m.any() and not loaded.model.adam_v.any()
    assert loaded.step == 5 and loaded.trainer_state == STATE


def test_weights_only_export(tmp_path):
    config = _config()
    model = _model(config)
    save_model_checkpoint(tmp_path / "w", model, TOKENIZER, config, step=9, with_optimizer=False)
    assert not (tmp_path / "w" / "optimizer.safetensors").exists()
    loaded = load_model_checkpoint(tmp_path / "w")
    assert loaded.step == 0 and loaded.trainer_state == {} and not loaded.has_optimizer
    assert loaded.reverse_answer is False
    np.testing.assert_array_equal(loaded.model.params, model.params)


def test_overwrite_is_atomic_replace(tmp_path):
    config = _config()
    model = _model(config)
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=1, trainer_state={})
    model.params[...] += 1.0
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=2, trainer_state={})
    loaded = load_model_checkpoint(tmp_path / "ckpt")
    assert loaded.step == 2
    np.testing.assert_array_equal(loaded.model.params, model.params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_bad_arguments_on_save(tmp_path):
    config = _config()
    model = _model(config)
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        save_model_checkpoint(tmp_path / "c", model, TOKENIZER, config, step=1, trainer_state={"x": object()})
    with pytest.raises(ValueError, match="step"):
        save_model_checkpoint(tmp_path / "c", model, TOKENIZER, config, step=-1, trainer_state={})
    with pytest.raises(CheckpointError, match="does not match"):
        save_model_checkpoint(tmp_path / "c", model, TOKENIZER, _config(d_model=32), step=1, trainer_state={})
    assert not (tmp_path / "c").exists()


@pytest.fixture
def saved(tmp_path):
    config = _config()
    save_model_checkpoint(tmp_path / "ckpt", _model(config), TOKENIZER, config, step=3, trainer_state=STATE)
    return tmp_path / "ckpt"


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_model_checkpoint(tmp_path / "nope")


def test_truncated_weights_name_the_file(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load_model_checkpoint(saved)


def test_corrupt_header_byte_names_the_file(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8] = ord("#")  # first byte of the JSON header ('{')
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_model_checkpoint(saved)


def test_nan_bytes_in_weights_name_the_file(saved):
    # a NaN that the checksum does not catch: a file written with NaN weights by other means
    from safetensors import safe_open

    from odin.checkpoint_io import CHECKSUM_FIELD, _unpack_metadata, _write_safetensors

    path = saved / "model.safetensors"
    with safe_open(str(path), framework="numpy") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        fields = _unpack_metadata(handle.metadata(), path)
    tensors["wte"][0, 1] = np.nan
    del fields[CHECKSUM_FIELD]
    _write_safetensors(path, tensors, fields)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights contain NaN"):
        load_model_checkpoint(saved)


def test_corrupt_optimizer_names_the_file(saved):
    path = saved / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors"):
        load_model_checkpoint(saved)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_missing_file_is_named(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} is missing"):
        load_model_checkpoint(saved)


def test_config_shape_mismatch(saved):
    config_path = saved / "config.json"
    data = json.loads(config_path.read_text())
    data["model"]["d_model"] = 32
    config_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*tensor 'wte' has shape \(102, 16\), expected \(102, 32\)"):
        load_model_checkpoint(saved)


def test_config_with_unimplemented_arch(saved):
    config_path = saved / "config.json"
    data = json.loads(config_path.read_text())
    data["model"]["arch"] = "rwkv"
    config_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_model_checkpoint(saved)
