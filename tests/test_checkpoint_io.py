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


# ---------------------------------------------------------------- checksums (issue 18)
def _flip_positions(size: int, header_end: int, rng: np.random.Generator, count: int) -> list[int]:
    """Positions across the whole file: the 8-byte length, the JSON header, the tensor data."""
    header = rng.choice(np.arange(0, header_end), size=min(count, header_end), replace=False)
    data = rng.choice(np.arange(header_end, size), size=count, replace=False)
    return sorted({0, 7, header_end - 1, header_end, size - 1, *header.tolist(), *data.tolist()})


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_every_flipped_bit_is_an_error_never_a_silent_load(tmp_path, name):
    import struct

    _save(tmp_path / "ckpt", _run_config())
    path = tmp_path / "ckpt" / name
    original = path.read_bytes()
    header_end = 8 + struct.unpack("<Q", original[:8])[0]
    rng = np.random.default_rng(18)
    positions = _flip_positions(len(original), header_end, rng, 250)
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / "ckpt", require_optimizer=True)
    path.write_bytes(original)
    load_checkpoint(tmp_path / "ckpt", require_optimizer=True)  # the undamaged file loads


def test_a_flipped_weight_names_the_checksum(tmp_path):
    import struct

    _save(tmp_path / "ckpt", _run_config())
    path = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(path.read_bytes())
    header_end = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    data[header_end + 101] ^= 0x04  # one mantissa bit of one weight: still a valid float
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: checksum mismatch"):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_truncated_files_are_errors(tmp_path, name):
    _save(tmp_path / "ckpt", _run_config())
    path = tmp_path / "ckpt" / name
    original = path.read_bytes()
    for length in (0, 7, 8, 100, len(original) // 2, len(original) - 4, len(original) - 1):
        path.write_bytes(original[:length])
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / "ckpt", require_optimizer=True)


def test_checkpoints_written_before_checksums_still_load(tmp_path):
    # the one-key layout as written before the checksum field existed
    from safetensors.numpy import save_file

    config = _run_config()
    params, optimizer = _save(tmp_path / "ckpt", config)
    names = [name for name, _ in Blueprint(config.model).param_shapes()]
    save_file({name: params[name] for name in names}, str(tmp_path / "ckpt" / "model.safetensors"),
              metadata={"odin": json.dumps({"odin_format": "model", "format_version": "1"}, sort_keys=True)})
    moments = {f"m.{name}": optimizer.m[name] for name in names} | {f"v.{name}": optimizer.v[name] for name in names}
    fields = {"odin_format": "optimizer", "format_version": "1", "step": "42", "state": json.dumps(optimizer.state)}
    save_file(moments, str(tmp_path / "ckpt" / "optimizer.safetensors"),
              metadata={"odin": json.dumps(fields, sort_keys=True)})
    loaded = load_checkpoint(tmp_path / "ckpt", require_optimizer=True)
    np.testing.assert_array_equal(loaded.params["wte"], params["wte"])
    assert loaded.optimizer.step == 42


def test_checksum_is_stored_and_deterministic(tmp_path):
    from safetensors import safe_open

    config = _run_config()
    _save(tmp_path / "a", config)
    _save(tmp_path / "b", config, seed=1)
    sums = []
    for directory in ("a", "b"):
        with safe_open(str(tmp_path / directory / "model.safetensors"), framework="numpy") as handle:
            sums.append(json.loads(handle.metadata()["odin"])["sha256"])
    assert all(len(value) == 64 for value in sums) and sums[0] != sums[1]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_saved_files_follow_the_umask(tmp_path, umask):
    import os
    import stat

    previous = os.umask(umask)
    try:
        _save(tmp_path / "ckpt", _run_config())
    finally:
        os.umask(previous)
    modes = {entry.name: stat.S_IMODE(entry.stat().st_mode) for entry in (tmp_path / "ckpt").iterdir()}
    assert set(modes) == {"model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json"}
    assert modes == {name: 0o666 & ~umask for name in modes}
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o777 & ~umask


def test_atomic_writer_follows_the_umask(tmp_path):
    import os
    import stat

    from odin.fileio import write_text_atomic

    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "tokenizer.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "tokenizer.json").stat().st_mode) == 0o640


def test_a_flipped_step_digit_is_caught(tmp_path):
    # the metadata is covered too: '2' -> '3' is one bit, and would resume at another step
    _save(tmp_path / "ckpt", _run_config())
    path = tmp_path / "ckpt" / "optimizer.safetensors"
    data = path.read_bytes()
    assert data.count(b'\\"step\\": \\"42\\"') == 1
    path.write_bytes(data.replace(b'\\"step\\": \\"42\\"', b'\\"step\\": \\"43\\"'))
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors: checksum mismatch"):
        load_checkpoint(tmp_path / "ckpt", require_optimizer=True)
