"""Checkpoint directories: weights, optimizer state, config and tokenizer, saved atomically.

Layout of ``DIR/``:

* ``model.safetensors`` — one float32 tensor per parameter, named as in
  :meth:`odin.blueprint.Blueprint.param_shapes` (``wte``, ``wpe``, ``h.0.ln1_w`` … ``lnf_b``).
  A quantized model's file (:mod:`odin.quant.checkpoint`) holds its block-format tensors as
  uint8 ``[rows, row bytes]`` and records their types in its metadata (``weights``), with the
  step and trainer state it was made at (``step``, ``state``): it has no optimizer file.
* ``optimizer.safetensors`` (optional) — AdamW moments as ``m.<param>`` / ``v.<param>``;
  metadata (one ``odin`` key, sorted JSON) ``step`` (decimal string) and ``state`` (JSON: sampler
  state, RNG state, anything else needed for exact resume).
* ``config.json`` — :meth:`odin.config.RunConfig.to_dict` (a ``"model"`` object is required).
* ``tokenizer.json`` — the run's tokenizer (char or BPE).

A save writes a fresh sibling temp directory, then swaps it in: the old directory is
renamed away, the new one renamed in, the old one deleted. A crash leaves either the old
or the new checkpoint under ``DIR`` — or, in the instant between the two renames, the old
one under ``.DIR.old-*`` (load_checkpoint's error message points at it).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from odin.blueprint import Blueprint
from odin.config import ConfigError, ModelConfig, RunConfig
from odin.fileio import user_mode
from odin.tokenizers import BPETokenizer, CharTokenizer, TokenizerFileError, tokenizer_from_json

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that is missing a piece, corrupt, or does not fit the expected model."""


@dataclass
class OptimizerState:
    step: int
    m: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    state: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable resume state


@dataclass
class Checkpoint:
    path: Path
    params: dict[str, np.ndarray]  # in blueprint (parameter block) order; uint8 [rows, row bytes] where quantized
    config: dict[str, Any]
    tokenizer: CharTokenizer | BPETokenizer
    optimizer: OptimizerState | None
    weights: Any = None  # odin.model.WeightTypes of a quantized checkpoint; None: float32
    progress: tuple[int, dict[str, Any]] | None = None  # a quantized checkpoint's step and trainer state

    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config)

    def blueprint(self) -> Blueprint:
        return Blueprint(ModelConfig.from_dict(self.config["model"]))


def pack_parameters(params: Mapping[str, np.ndarray], blueprint: Blueprint) -> np.ndarray:
    """One contiguous float32 block in parameter-block order (what the C model holds)."""
    _check_tensors(params, blueprint, "parameters")
    return np.concatenate([np.asarray(params[name], dtype=np.float32).ravel() for name, _ in blueprint.param_shapes()])


def unpack_parameters(block: np.ndarray, blueprint: Blueprint) -> dict[str, np.ndarray]:
    """Named views (no copy) into a flat parameter block."""
    if block.ndim != 1 or block.shape[0] != blueprint.n_params:
        raise ValueError(f"parameter block must be 1-D with {blueprint.n_params} floats, got shape {block.shape}")
    return {
        name: block[offset : offset + int(np.prod(shape))].reshape(shape)
        for name, (offset, shape) in blueprint.param_offsets().items()
    }


def _check_tensors(tensors: Mapping[str, np.ndarray], blueprint: Blueprint, what: str, weights: Any = None) -> None:
    """Names, shapes and dtypes as the blueprint stores them with `weights` (None: float32)."""
    try:
        expected = {spec.name: spec for spec in blueprint.tensor_specs(weights)}
    except ValueError as error:  # a row that is not whole blocks
        raise CheckpointError(f"{what}: {error}") from None
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise CheckpointError(f"{what}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise CheckpointError(f"{what}: unexpected tensor {extra[0]!r} (not in the model layout)")
    rows = dict(blueprint.param_shapes())
    for name, spec in expected.items():
        array = tensors[name]
        blocks = f" ({spec.type} blocks of rows of {rows[name][-1]} weights)" if spec.type != "f32" else ""
        if tuple(array.shape) != spec.shape:
            raise CheckpointError(f"{what}: tensor {name!r} has shape {tuple(array.shape)}, "
                                  f"expected {spec.shape}{blocks}")
        if array.dtype != np.dtype(spec.dtype):
            raise CheckpointError(f"{what}: tensor {name!r} is {array.dtype}, expected {spec.dtype}{blocks}")


def _config_dict(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, RunConfig) else dict(config)


def _blueprint_from_config(config: Mapping[str, Any], source: str) -> Blueprint:
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise CheckpointError(f"{source}: needs a 'model' object with the model config")
    try:
        return Blueprint(ModelConfig.from_dict(config["model"]))
    except (ConfigError, ValueError, TypeError, NotImplementedError) as error:
        raise CheckpointError(f"{source}: bad model config: {error}") from None


# The safetensors library writes its metadata map in a per-process random order (a Rust
# HashMap), so two saves of equal tensors gave files that differed in the header. All of
# our metadata therefore travels as one key holding sorted JSON: equal checkpoints are
# byte-identical files. Files written before this (one key per field) still read.
METADATA_KEY = "odin"
# A flipped bit in the weights loads without a murmur (every float is a valid float), so each
# file carries the SHA-256 of its content in the metadata, checked on every full load. It
# covers the other metadata fields (a flipped digit of "step" counts too) and each tensor's
# name, dtype, shape and bytes, in sorted order: deterministic, so equal checkpoints stay
# byte-identical files. Files written before have no checksum and still load; any field
# besides these (a damaged "sha256" key among them) is an error, never a reason to skip it.
CHECKSUM_FIELD = "sha256"
_FIELDS = {"odin_format", "format_version", "step", "state", "weights", CHECKSUM_FIELD}


def _digest_begin(fields: Mapping[str, str]) -> Any:
    """The content checksum: the metadata, then each tensor (sorted by name): its name, dtype
    and shape, then its bytes."""
    digest = hashlib.sha256()
    covered = {key: value for key, value in fields.items() if key != CHECKSUM_FIELD}
    digest.update(json.dumps(covered, sort_keys=True).encode("utf-8"))
    return digest


def _digest_tensor_header(digest: Any, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    digest.update(json.dumps([name, np.dtype(dtype).str, list(shape)]).encode("utf-8"))


def _content_digest(tensors: Mapping[str, np.ndarray], fields: Mapping[str, str]) -> str:
    digest = _digest_begin(fields)
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        _digest_tensor_header(digest, name, array.dtype, array.shape)
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    contiguous = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
    fields = dict(metadata, **{CHECKSUM_FIELD: _content_digest(contiguous, metadata)})
    packed = {METADATA_KEY: json.dumps(fields, sort_keys=True)}
    save_file(contiguous, str(path), metadata=packed)
    os.chmod(path, user_mode())  # whatever mode the writer chose: follow the umask like open()


def _unpack_metadata(raw: Mapping[str, str], path: Path) -> dict[str, str]:
    if set(raw) != {METADATA_KEY}:
        return dict(raw)  # the older one-key-per-field layout
    try:
        fields = json.loads(raw[METADATA_KEY])
    except ValueError as error:
        raise CheckpointError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON ({error})") from None
    if not isinstance(fields, dict) or not all(isinstance(value, str) for value in fields.values()):
        raise CheckpointError(f"{path}: metadata {METADATA_KEY!r} must be a JSON object of strings")
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise CheckpointError(f"{path}: corrupt metadata (unknown field {unknown[0]!r})")
    return fields


def _verify_checksum(tensors: Mapping[str, np.ndarray], fields: Mapping[str, str], path: Path) -> None:
    _verify_digest(lambda: _content_digest(tensors, fields), fields, path)


def _verify_digest(computed: Any, fields: Mapping[str, str], path: Path) -> None:
    """computed(): the content checksum as read, compared with the one the file stores."""
    stored = fields.get(CHECKSUM_FIELD)
    if stored is None:
        return  # written before checksums
    if computed() != stored:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt (its content is not what was saved)")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    params: Mapping[str, np.ndarray],
    config: RunConfig | Mapping[str, Any],
    tokenizer: CharTokenizer | BPETokenizer,
    optimizer: OptimizerState | None = None,
    weights: Any = None,
    progress: tuple[int, Mapping[str, Any]] | None = None,
) -> Path:
    """Write (or atomically replace) the checkpoint directory ``path``; returns it.

    ``weights`` (odin.model.WeightTypes) of a quantized model: its quantized tensors in
    ``params`` are uint8 [rows, row bytes]; ``progress`` (step, JSON-serialisable trainer
    state) goes into the model file's metadata, as such a checkpoint has no optimizer file."""
    target = Path(path)
    config_data = _config_dict(config)
    blueprint = _blueprint_from_config(config_data, "config")
    _check_tensors(params, blueprint, "params", weights)
    quantized = weights is not None and weights.quantized
    if quantized and optimizer is not None:
        raise CheckpointError(f"a quantized model ({weights.describe()}) has no optimizer state to save")
    if tokenizer.vocab_size > blueprint.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} tokens but [model].vocab_size is {blueprint.vocab_size}"
        )
    if optimizer is not None:
        _check_tensors(optimizer.m, blueprint, "optimizer m")
        _check_tensors(optimizer.v, blueprint, "optimizer v")
        try:
            state_json = json.dumps(optimizer.state, sort_keys=True)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"optimizer state must be JSON-serialisable: {error}") from None
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"checkpoint path {target} exists and is not a directory")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(staging, user_mode(0o777))  # mkdtemp creates 0700; follow the umask like mkdir
        metadata = {"odin_format": "model", "format_version": CHECKPOINT_FORMAT_VERSION}
        if quantized:
            from odin.quant.checkpoint import quantized_fields

            metadata.update(quantized_fields(weights, progress))
        ordered = {name: params[name] for name, _ in blueprint.param_shapes()}
        _write_safetensors(staging / MODEL_FILE, ordered, metadata)
        if optimizer is not None:
            moments = {f"m.{name}": optimizer.m[name] for name in ordered}
            moments.update({f"v.{name}": optimizer.v[name] for name in ordered})
            _write_safetensors(
                staging / OPTIMIZER_FILE,
                moments,
                {
                    "odin_format": "optimizer",
                    "format_version": CHECKPOINT_FORMAT_VERSION,
                    "step": str(int(optimizer.step)),
                    "state": state_json,
                },
            )
        (staging / CONFIG_FILE).write_text(json.dumps(config_data, sort_keys=True, indent=2) + "\n", encoding="utf-8")
        (staging / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
        for written in staging.iterdir():
            os.chmod(written, user_mode())  # one mode for every file of the checkpoint
            _fsync_file(written)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    retired = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, retired)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(retired, target)  # put the previous checkpoint back before failing
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def _unreadable_as_checkpoint_error(path: Path) -> Iterator[None]:
    """safetensors raises its own (non-ValueError) error types: one CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({error})") from None


def _check_model_file(fields: Mapping[str, str], tensors: Mapping[str, Any], blueprint: Blueprint, path: Path,
                      weights: Any = None) -> None:
    """A model file's metadata and its tensors' names, shapes and dtypes against config.json's model."""
    _check_format(fields, "model", path)
    try:
        _check_tensors(tensors, blueprint, str(path), weights)
    except CheckpointError as error:
        raise CheckpointError(f"{error} (config.json describes {_shape_summary(blueprint)})") from None


def _read_safetensors(path: Path, with_tensors: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's tensors (none without ``with_tensors``: the header alone) and metadata."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing from checkpoint {path.parent}")
    with _unreadable_as_checkpoint_error(path), safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()} if with_tensors else {}
    fields = _unpack_metadata(metadata, path)
    if with_tensors:
        _verify_checksum(tensors, fields, path)
    return tensors, fields


@dataclass(frozen=True)
class _TensorInfo:
    """A stored tensor's shape and dtype, before (or without) reading it."""
    shape: tuple[int, ...]
    dtype: Any


SAFETENSORS_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "F64": np.dtype(np.float64),
                      "BF16": "bfloat16", "U8": np.dtype(np.uint8)}
STREAM_BYTES = 4 << 20  # what streaming a tensor holds at once


def _read_header(path: Path) -> tuple[dict[str, _TensorInfo], dict[str, str]]:
    """A safetensors file's tensors (shape and dtype, nothing read) and metadata."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing from checkpoint {path.parent}")
    with _unreadable_as_checkpoint_error(path), safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
        infos = {}
        for name in handle.keys():
            piece = handle.get_slice(name)
            infos[name] = _TensorInfo(tuple(piece.get_shape()), SAFETENSORS_DTYPES.get(piece.get_dtype(), "?"))
    return infos, _unpack_metadata(metadata, path)


def _stream_safetensors(path: Path, infos: Mapping[str, _TensorInfo], fields: Mapping[str, str], into: Any,
                        ) -> dict[str, np.ndarray]:
    """Read the model file (its header checked: ``infos``, ``fields``) straight into
    ``into(name)``'s arrays (the model's own views), a piece of at most STREAM_BYTES at a
    time, checking the content checksum as it goes: the weights are never held twice. Each
    piece is read through its own opening of the file, so the pages safetensors maps for it
    leave this process's memory with it."""
    from safetensors import safe_open

    digest = _digest_begin(fields)
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(infos):
        target = into(name)
        _digest_tensor_header(digest, name, infos[name].dtype, infos[name].shape)
        rows = target.shape[0] if target.ndim else 1
        per_piece = max(1, STREAM_BYTES // max(1, target.nbytes // max(1, rows)))
        for start in range(0, rows, per_piece):
            stop = min(start + per_piece, rows)  # safetensors refuses a slice past the end
            with _unreadable_as_checkpoint_error(path), safe_open(str(path), framework="numpy") as handle:
                piece = np.ascontiguousarray(handle.get_slice(name)[start:stop])
            target[start:stop] = piece
            digest.update(piece.reshape(-1).view(np.uint8))
        arrays[name] = target
    _verify_digest(digest.hexdigest, fields, path)
    return arrays


def _check_format(metadata: Mapping[str, str], expected_kind: str, path: Path) -> None:
    if metadata.get("odin_format") != expected_kind:
        raise CheckpointError(f"{path}: metadata 'odin_format' is {metadata.get('odin_format')!r}, expected {expected_kind!r}")
    if metadata.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {metadata.get('format_version')!r} "
            f"(this version of odin reads {CHECKPOINT_FORMAT_VERSION})"
        )


def _optimizer_progress(metadata: Mapping[str, str], path: Path) -> tuple[int, dict[str, Any]]:
    _check_format(metadata, "optimizer", path)
    try:
        step = int(metadata["step"])
        state = json.loads(metadata.get("state", "{}"))
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: bad 'step'/'state' metadata ({error})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state' metadata must be a JSON object")
    return step, state


def read_progress(path: str | os.PathLike[str]) -> tuple[int, dict[str, Any]]:
    """The step and trainer state saved in checkpoint directory ``path``, read from the
    optimizer file's header alone (no tensor is loaded: cheap enough to poll)."""
    optimizer_path = Path(path) / OPTIMIZER_FILE
    _, metadata = _read_safetensors(optimizer_path, with_tensors=False)
    return _optimizer_progress(metadata, optimizer_path)


def _load_optimizer(path: Path, blueprint: Blueprint) -> OptimizerState:
    tensors, metadata = _read_safetensors(path)
    step, state = _optimizer_progress(metadata, path)
    names = [name for name, _ in blueprint.param_shapes()]
    unexpected = [key for key in tensors if not (key[:2] in ("m.", "v.") and key[2:] in names)]
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]!r}")
    moments = {
        prefix: {name: tensors[f"{prefix}.{name}"] for name in names if f"{prefix}.{name}" in tensors}
        for prefix in ("m", "v")
    }
    for prefix, arrays in moments.items():
        _check_tensors(arrays, blueprint, f"{path} ({prefix})")
    return OptimizerState(step=step, m=moments["m"], v=moments["v"], state=state)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected: Blueprint | None = None,
    require_optimizer: bool = False,
    params_into: Any = None,
    optimizer_tensors: bool = True,
    quantized: bool = False,
) -> Checkpoint:
    """Read and validate a checkpoint directory; any problem is a :class:`CheckpointError`.

    ``params_into(config, weights)`` (given the checked config.json and the weight types the
    model file records, None for float32) returns ``name -> array``: the weights are then
    read straight into those arrays (a model's views), never held twice. Without
    ``optimizer_tensors`` the optimizer file gives its step and state, not the moments.
    A quantized checkpoint is refused (odin.quant.checkpoint.QuantizedCheckpointError)
    unless ``quantized``: then its block tensors come as uint8 [rows, row bytes]."""
    directory = Path(path)
    if not directory.is_dir():
        leftovers = sorted(directory.parent.glob(f".{directory.name}.old-*"))
        hint = f"; an interrupted save left {leftovers[0]} — rename it to {directory.name} to recover" if leftovers else ""
        raise CheckpointError(f"checkpoint directory not found: {directory}{hint}")

    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{CONFIG_FILE} is missing from checkpoint {directory}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error})") from None
    blueprint = _blueprint_from_config(config, str(config_path))
    if expected is not None and expected.param_shapes() != blueprint.param_shapes():
        raise CheckpointError(
            f"{config_path}: the checkpoint's model ({_shape_summary(blueprint)}) does not match "
            f"the expected one ({_shape_summary(expected)})"
        )

    tokenizer_path = directory / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise CheckpointError(f"{TOKENIZER_FILE} is missing from checkpoint {directory}")
    try:
        tokenizer = tokenizer_from_json(tokenizer_path.read_text(encoding="utf-8"), str(tokenizer_path))
    except (TokenizerFileError, UnicodeDecodeError) as error:
        raise CheckpointError(str(error)) from None
    if tokenizer.vocab_size > blueprint.vocab_size:
        raise CheckpointError(
            f"{tokenizer_path}: {tokenizer.vocab_size} tokens, more than the model's vocab_size {blueprint.vocab_size}"
        )

    model_path = directory / MODEL_FILE
    from odin.quant.checkpoint import model_progress, refuse_unless, weights_from_fields

    infos, fields = _read_header(model_path)
    weights = weights_from_fields(fields, model_path)
    refuse_unless(quantized, weights, directory)
    _check_model_file(fields, infos, blueprint, model_path, weights)
    if params_into is not None:
        tensors = _stream_safetensors(model_path, infos, fields, params_into(config, weights))
    else:  # checked above: its header describes the tensors read
        tensors, _ = _read_safetensors(model_path)
    params = {name: tensors[name] for name, _ in blueprint.param_shapes()}

    optimizer_path = directory / OPTIMIZER_FILE
    optimizer = None
    if optimizer_path.exists() or require_optimizer:
        if optimizer_tensors:
            optimizer = _load_optimizer(optimizer_path, blueprint)
        else:
            step, state = _optimizer_progress(_read_safetensors(optimizer_path, with_tensors=False)[1], optimizer_path)
            optimizer = OptimizerState(step=step, m={}, v={}, state=state)
    return Checkpoint(path=directory, params=params, config=config, tokenizer=tokenizer, optimizer=optimizer,
                      weights=weights, progress=model_progress(fields, model_path))


def _shape_summary(blueprint: Blueprint) -> str:
    return (
        f"L={blueprint.n_layer}, C={blueprint.d_model}, heads={blueprint.n_head}, "
        f"context={blueprint.context}, vocab={blueprint.vocab_size}"
    )
