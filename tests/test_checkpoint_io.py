import json

import numpy as np
import pytest

from odin.checkpoint_io import (
    CheckpointError,
    OptimizerState,
    load_checkpoint,
    pack_parameters,
    read_progress,
    save_checkpoint,
    unpack_parameters,
)
from odin.config import Blueprint, ModelConfig, RunConfig, TrainConfig
from odin.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer()


def _run_config(**model) -> RunConfig:
    settings = dict(n_layer=2, d_model=16, n_head=2, context=8, vocab_size=TOKENIZER.vocab_size)
    settings.update(model)
    return RunConfig(model=ModelConfig(**settings), train=TrainConfig(steps=10))


def _random_tensors(blueprint: Blueprint, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in blueprint.param_shapes()}


def _save(path, config: RunConfig, seed: int = 0, with_optimizer: bool = True):
    blueprint = Blueprint(config.model)
    params = _random_tensors(blueprint, seed)
    optimizer = None
    if with_optimizer:
        optimizer = OptimizerState(
            step=42,
            m=_random_tensors(blueprint, seed + 1),
            v=_random_tensors(blueprint, seed + 2),
            state={"sampler": {"seed": 3, "epoch": 1, "position": 17}, "rng": [1, 2]},
        )
    save_checkpoint(path, params=params, config=config, tokenizer=TOKENIZER, optimizer=optimizer)
    return params, optimizer


def test_round_trip(tmp_path):
    config = _run_config()
    params, optimizer = _save(tmp_path / "ckpt", config)
    loaded = load_checkpoint(tmp_path / "ckpt", expected=Blueprint(config.model), require_optimizer=True)
    assert list(loaded.params) == [name for name, _ in Blueprint(config.model).param_shapes()]
    for name, array in params.items():
        np.testing.assert_array_equal(loaded.params[name], array)
        np.testing.assert_array_equal(loaded.optimizer.m[name], optimizer.m[name])
        np.testing.assert_array_equal(loaded.optimizer.v[name], optimizer.v[name])
    assert loaded.optimizer.step == 42
    assert loaded.optimizer.state == {"sampler": {"seed": 3, "epoch": 1, "position": 17}, "rng": [1, 2]}
    assert loaded.run_config() == config
    assert isinstance(loaded.tokenizer, CharTokenizer)
    assert loaded.tokenizer.vocab == TOKENIZER.vocab


def test_optimizer_is_optional_unless_required(tmp_path):
    _save(tmp_path / "ckpt", _run_config(), with_optimizer=False)
    assert load_checkpoint(tmp_path / "ckpt").optimizer is None
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing"):
        load_checkpoint(tmp_path / "ckpt", require_optimizer=True)


def test_atomic_overwrite_replaces_and_leaves_no_temp(tmp_path):
    config = _run_config()
    _save(tmp_path / "ckpt", config, seed=0)
    params_new, _ = _save(tmp_path / "ckpt", config, seed=100)
    loaded = load_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(loaded.params["wte"], params_new["wte"])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["ckpt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    config = _run_config()
    params_old, _ = _save(tmp_path / "ckpt", config, seed=0)

    class NotJson:
        pass

    blueprint = Blueprint(config.model)
    bad_optimizer = OptimizerState(
        step=1, m=_random_tensors(blueprint, 1), v=_random_tensors(blueprint, 2), state={"x": NotJson()}
    )
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "ckpt", params=_random_tensors(blueprint, 9), config=config,
                        tokenizer=TOKENIZER, optimizer=bad_optimizer)
    wrong = _random_tensors(blueprint, 9)
    wrong["wte"] = wrong["wte"][:-1]
    with pytest.raises(CheckpointError, match=r"tensor 'wte' has shape"):
        save_checkpoint(tmp_path / "ckpt", params=wrong, config=config, tokenizer=TOKENIZER)
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "ckpt").params["wte"], params_old["wte"])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["ckpt"]


def test_corrupt_safetensors_is_checkpoint_error(tmp_path):
    _save(tmp_path / "ckpt", _run_config())
    model_file = tmp_path / "ckpt" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt"):
        load_checkpoint(tmp_path / "ckpt")
    model_file.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nothing")
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        _save(tmp_path / name, _run_config())
        (tmp_path / name / name).unlink()
        with pytest.raises(CheckpointError, match=f"{name} is missing"):
            load_checkpoint(tmp_path / name)


def test_missing_dir_points_at_leftover_of_interrupted_swap(tmp_path):
    _save(tmp_path / "ckpt", _run_config())
    (tmp_path / "ckpt").rename(tmp_path / ".ckpt.old-1-abcd")  # the state between the two renames
    with pytest.raises(CheckpointError, match=r"interrupted save left .*\.ckpt\.old-1-abcd"):
        load_checkpoint(tmp_path / "ckpt")


def test_shape_mismatch_with_expected_blueprint(tmp_path):
    _save(tmp_path / "ckpt", _run_config())
    other = Blueprint(_run_config(d_model=32).model)
    with pytest.raises(CheckpointError, match=r"config.json: the checkpoint's model \(L=2, C=16.*C=32"):
        load_checkpoint(tmp_path / "ckpt", expected=other)


def test_config_disagreeing_with_tensors(tmp_path):
    _save(tmp_path / "ckpt", _run_config())
    config_path = tmp_path / "ckpt" / "config.json"
    data = json.loads(config_path.read_text())
    data["model"]["n_layer"] = 3
    config_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"missing tensor 'h.2.ln1_w'"):
        load_checkpoint(tmp_path / "ckpt")
    data["model"]["n_layers"] = 3
    config_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"config.json: bad model config: unknown key 'n_layers'"):
        load_checkpoint(tmp_path / "ckpt")


def test_pack_unpack_parameter_block():
    blueprint = Blueprint(_run_config().model)
    params = _random_tensors(blueprint, 5)
    block = pack_parameters(params, blueprint)
    assert block.shape == (blueprint.n_params,) and block.dtype == np.float32
    views = unpack_parameters(block, blueprint)
    for name, array in params.items():
        np.testing.assert_array_equal(views[name], array)
    views["lnf_b"][:] = 7.0  # views share memory with the block
    assert block[-1] == 7.0


def _file_bytes(directory) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in sorted(directory.iterdir())}


def test_equal_checkpoints_are_byte_identical_files(tmp_path):
    # the safetensors writer orders a metadata map differently on every save (seen: eight
    # saves, eight different headers); ours is one key, so equal checkpoints are equal files
    config = _run_config()
    _save(tmp_path / "c0", config)
    first = _file_bytes(tmp_path / "c0")
    for index in range(1, 6):
        _save(tmp_path / f"c{index}", config)
        assert _file_bytes(tmp_path / f"c{index}") == first


def test_reads_checkpoints_with_one_metadata_key_per_field(tmp_path):
    # the layout written before metadata was packed into one key
    from safetensors.numpy import save_file

    config = _run_config()
    params, optimizer = _save(tmp_path / "ckpt", config)
    names = [name for name, _ in Blueprint(config.model).param_shapes()]
    save_file({name: params[name] for name in names}, str(tmp_path / "ckpt" / "model.safetensors"),
              metadata={"odin_format": "model", "format_version": "1"})
    moments = {f"m.{name}": optimizer.m[name] for name in names} | {f"v.{name}": optimizer.v[name] for name in names}
    save_file(moments, str(tmp_path / "ckpt" / "optimizer.safetensors"),
              metadata={"odin_format": "optimizer", "format_version": "1", "step": "42",
                        "state": json.dumps(optimizer.state)})
    loaded = load_checkpoint(tmp_path / "ckpt", require_optimizer=True)
    np.testing.assert_array_equal(loaded.params["wte"], params["wte"])
    assert loaded.optimizer.step == 42
    assert loaded.optimizer.state == optimizer.state
    assert read_progress(tmp_path / "ckpt") == (42, optimizer.state)


def test_read_progress_from_the_header(tmp_path):
    _, optimizer = _save(tmp_path / "ckpt", _run_config())
    assert read_progress(tmp_path / "ckpt") == (42, optimizer.state)
    (tmp_path / "ckpt" / "optimizer.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        read_progress(tmp_path / "ckpt")
    _save(tmp_path / "bare", _run_config(), with_optimizer=False)
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing"):
        read_progress(tmp_path / "bare")


@pytest.mark.parametrize("packed, message", [
    ("{not json", "not valid JSON"),
    ('["odin_format", "model"]', "JSON object of strings"),
    ('{"odin_format": "model", "format_version": 1}', "JSON object of strings"),
])
def test_bad_packed_metadata_is_checkpoint_error(tmp_path, packed, message):
    from safetensors.numpy import save_file

    config = _run_config()
    params, _ = _save(tmp_path / "ckpt", config, with_optimizer=False)
    save_file(params, str(tmp_path / "ckpt" / "model.safetensors"), metadata={"odin": packed})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ckpt")
