"""Quantized checkpoints: what a quantized model file records, the refusal of every
training entry point, and `odin quantize` (a float32 checkpoint streamed into a quantized one).

A quantized checkpoint is an ordinary checkpoint folder (odin.checkpoint_io) whose
``model.safetensors`` holds each block-format tensor as uint8 ``[rows, row bytes]`` (the
bytes of llama.cpp's blocks, as the model holds them) and every other tensor as float32,
with three more metadata fields, all under the file's SHA-256 content checksum:

* ``weights`` — ``{"embed": TYPE, "matrix": TYPE}`` (odin.model.WeightTypes) as JSON;
* ``step``, ``state`` — the step and trainer state of the checkpoint it was made from
  (what answering reads: reversed answers, prompt padding, the dataset), since a model
  that cannot train has no optimizer file to keep them in.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from odin.checkpoint_io import CONFIG_FILE, MODEL_FILE, CheckpointError, _read_safetensors

WEIGHTS_FIELD = "weights"
MIB = 1 << 20


class QuantizedCheckpointError(CheckpointError):
    """A quantized checkpoint where float32 weights are needed (training, quantizing again)."""


def quantized_fields(weights: Any, progress: tuple[int, Mapping[str, Any]] | None) -> dict[str, str]:
    """The model file's metadata fields of a quantized model."""
    fields = {WEIGHTS_FIELD: json.dumps({"embed": weights.embed, "matrix": weights.matrix}, sort_keys=True)}
    if progress is not None:
        step, state = progress
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        try:
            fields.update(step=str(int(step)), state=json.dumps(dict(state), sort_keys=True))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"trainer state must be JSON-serialisable: {error}") from None
    return fields


def weights_from_fields(fields: Mapping[str, str], path: Path) -> Any:
    """The odin.model.WeightTypes a model file records; None when it records none (float32)."""
    raw = fields.get(WEIGHTS_FIELD)
    if raw is None:
        return None
    from odin.model import WeightTypes
    from odin.quant.formats import QuantError

    try:
        record = json.loads(raw)
        if not isinstance(record, dict) or set(record) != {"embed", "matrix"}:
            raise ValueError("expected {\"embed\": TYPE, \"matrix\": TYPE}")
        return WeightTypes(matrix=str(record["matrix"]), embed=str(record["embed"]))
    except (ValueError, QuantError) as error:
        raise CheckpointError(f"{path}: metadata {WEIGHTS_FIELD!r} is not a record of weight types ({error})") from None


def model_progress(fields: Mapping[str, str], path: Path) -> tuple[int, dict[str, Any]] | None:
    """The step and trainer state a quantized model file keeps (None when it keeps none)."""
    if "step" not in fields:
        return None
    try:
        step, state = int(fields["step"]), json.loads(fields.get("state", "{}"))
    except ValueError as error:
        raise CheckpointError(f"{path}: bad 'step'/'state' metadata ({error})") from None
    if step < 0 or not isinstance(state, dict):
        raise CheckpointError(f"{path}: bad 'step'/'state' metadata (a step >= 0 and a JSON object expected)")
    return step, state


# the fp16 fields of a block (ggml's block_q*: the scale d first; the "_1" types' minimum m
# after it): the only values of a quantized tensor that can be NaN or Inf (codes are integers)
_HALF_FIELDS = {"q8_0": (0,), "q4_0": (0,), "q5_0": (0,), "q4_1": (0, 2), "q5_1": (0, 2)}


def blocks_finite(view: np.ndarray, kind: str) -> bool:
    """Whether every scale (and minimum) of quantized tensor `view` (uint8 [rows, row bytes]) is finite."""
    from odin.quant.formats import row_bytes

    blocks = view.reshape(-1, row_bytes(kind, 32))
    return all(np.isfinite(np.ascontiguousarray(blocks[:, at:at + 2]).view(np.float16)).all()
               for at in _HALF_FIELDS[kind])


def nonfinite_tensor(model: Any) -> str | None:
    """The first tensor of `model` holding NaN or Inf (a float32 one, or a quantized one's
    scales), or None."""
    for name, view in model.named_params().items():
        if not np.isfinite(view).all():
            return name
    for name, (view, kind) in model.named_qtensors().items():
        if not blocks_finite(view, kind):
            return name
    return None


def stored_weights(checkpoint: str | os.PathLike[str]) -> Any:
    """The weight types checkpoint folder `checkpoint` records (its model file's header alone
    is read); None for a float32 checkpoint or when there is no model file to read."""
    path = Path(checkpoint) / MODEL_FILE
    if not path.is_file():
        return None
    return weights_from_fields(_read_safetensors(path, with_tensors=False)[1], path)


def _source_hint(checkpoint: Path) -> str:
    """' (PATH)': the float32 checkpoint a quantized one records it was made from, if it does."""
    try:
        progress = model_progress(_read_safetensors(checkpoint / MODEL_FILE, with_tensors=False)[1], checkpoint)
    except CheckpointError:
        return ""
    source = progress[1].get("quantized_from") if progress else None
    return f" ({source})" if isinstance(source, str) and source else ""


def training_refusal(checkpoint: Path, weights: Any) -> str:
    return (f"{checkpoint}: this checkpoint's weights are quantized as {weights.describe()}: it can answer but not "
            f"train; train the float32 checkpoint it was made from{_source_hint(checkpoint)}")


def refuse_unless(allowed: bool, weights: Any, checkpoint: Path) -> None:
    """load_checkpoint's rule: a quantized checkpoint is read only by a caller that asks for it."""
    if weights is not None and weights.quantized and not allowed:
        raise QuantizedCheckpointError(f"{checkpoint}: this checkpoint's weights are quantized as "
                                       f"{weights.describe()}; this needs float32 weights: use the float32 "
                                       f"checkpoint it was made from"
                                       f"{_source_hint(checkpoint)}")


def refuse_training(checkpoint: str | os.PathLike[str], what: str = "") -> None:
    """Raise QuantizedCheckpointError when `checkpoint` (a folder) holds quantized weights:
    every command that would train from a checkpoint calls this before anything else."""
    path = Path(checkpoint)
    weights = stored_weights(path)
    if weights is not None and weights.quantized:
        raise QuantizedCheckpointError(f"{what + ': ' if what else ''}{training_refusal(path, weights)}")


# ------------------------------------------------------------------ odin quantize
@dataclass(frozen=True)
class QuantizeResult:
    source: Path  # the float32 checkpoint folder
    path: Path  # the quantized one written
    weights: Any  # odin.model.WeightTypes
    bytes_before: int  # the float32 model.safetensors
    bytes_after: int  # the quantized one

    def summary(self) -> str:
        ratio = self.bytes_before / max(1, self.bytes_after)
        return (f"quantized {self.source} to {self.weights.describe()}: {self.bytes_before / MIB:.2f} MiB -> "
                f"{self.bytes_after / MIB:.2f} MiB ({ratio:.2f}x smaller) in {self.path}")


def check_types(matrix: str, embed: str) -> Any:
    """The WeightTypes `odin quantize --type MATRIX --embed EMBED` asks for (the matrices take a
    block type; the embedding a block type or f32); QuantError naming a bad one."""
    from odin.model import WeightTypes
    from odin.quant.formats import QUANT_TYPES, QuantError, type_id

    for flag, value in (("--type", matrix), ("--embed", embed)):
        try:
            type_id(value)
        except QuantError as error:  # an unknown name: the types there are
            raise QuantError(f"{flag}: {error}") from None
    matrix, embed = matrix.strip().lower(), embed.strip().lower()
    if matrix not in QUANT_TYPES:
        raise QuantError(f"--type {matrix} is not a block format: the matrices take one of {', '.join(QUANT_TYPES)}")
    return WeightTypes(matrix=matrix, embed=embed)


def refuse_out(out: Path, source: Path, overwrite: bool) -> None:
    """OUT must not exist, or (with overwrite) be a checkpoint folder other than the source."""
    if out.resolve() == source.resolve():
        raise ValueError(f"{out} is the checkpoint being quantized: write the quantized one to another folder")
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise ValueError(f"{out} already exists; replace it with --overwrite, or choose another OUT")
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder: --overwrite replaces a checkpoint folder only")
    if not ((out / MODEL_FILE).exists() or (out / CONFIG_FILE).exists() or not any(out.iterdir())):
        raise ValueError(f"{out} is a folder that holds no checkpoint: --overwrite replaces a checkpoint folder "
                         f"only; choose another OUT")


class _QuantizingSink:
    """What the checkpoint reader streams a float32 matrix into: each piece of rows is checked
    (finite) and quantized straight into the quantized model's bytes."""

    def __init__(self, view: np.ndarray, kind: str, cols: int, name: str, path: Path) -> None:
        self.view, self.kind, self.name, self.path = view, kind, name, path
        self.shape, self.ndim, self.dtype = (view.shape[0], cols), 2, np.dtype(np.float32)
        self.nbytes = view.shape[0] * cols * 4

    def __setitem__(self, rows: slice, piece: np.ndarray) -> None:
        from odin.quant.formats import quantize

        if not np.isfinite(piece).all():
            raise CheckpointError(f"{self.path}: tensor {self.name!r} contains NaN or Inf")
        self.view[rows] = quantize(piece, self.kind)


def quantize_checkpoint(source: str | os.PathLike[str], out: str | os.PathLike[str], matrix: str,
                        embed: str | None = None, *, overwrite: bool = False) -> QuantizeResult:
    """Write the float32 checkpoint `source` (a checkpoint, run or pipeline folder) as a
    quantized checkpoint folder `out`: matrices of type `matrix`, the token embedding (tied
    head) of `embed` (default odin.quant.DEFAULT_EMBED_TYPE), other tensors float32; config
    and tokenizer as the source has them. The source is streamed a piece at a time into the
    quantized model (its checksum checked), so memory holds the quantized model and one
    piece; everything is checked before `out` is touched, which is written beside and renamed
    into place (odin.checkpoint_io.save_checkpoint)."""
    from odin.checkpoint import model_from_config, stored_tensors
    from odin.checkpoint_io import load_checkpoint, save_checkpoint
    from odin.checkpoint_locate import locate_checkpoint
    from odin.config import RunConfig
    from odin.quant.formats import DEFAULT_EMBED_TYPE

    weights = check_types(matrix, DEFAULT_EMBED_TYPE if embed is None else embed)
    src, target = locate_checkpoint(source), Path(out)
    refuse_out(target, src, overwrite)
    made: dict[str, Any] = {}

    def into_quantized_model(config: dict, stored: Any) -> Any:
        if stored is not None and stored.quantized:
            raise QuantizedCheckpointError(f"{src}: this checkpoint is quantized already, as {stored.describe()}: "
                                           f"quantize the float32 checkpoint it was made from{_source_hint(src)}")
        try:
            run_config = RunConfig.from_dict(config)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{src / CONFIG_FILE}: {error}") from None
        from odin.blueprint import Blueprint

        Blueprint(run_config.model).tensor_specs(weights)  # every quantized row whole blocks, before any work
        model = made["model"] = model_from_config(run_config, weights)
        sinks: dict[str, Any] = dict(model.named_params())
        for name, (view, kind) in model.named_qtensors().items():
            cols = next(c for n, _, (_, c), _ in model.quant_layout if n == name)
            sinks[name] = _QuantizingSink(view, kind, cols, name, src / MODEL_FILE)
        return sinks.__getitem__

    checkpoint = load_checkpoint(src, params_into=into_quantized_model, optimizer_tensors=False, quantized=True)
    model = made["model"]
    bad = nonfinite_tensor(model)  # the matrices were checked as they were read; the rest here
    if bad is not None:
        raise CheckpointError(f"{src / MODEL_FILE}: tensor {bad!r} contains NaN or Inf")
    step, state = (checkpoint.optimizer.step, dict(checkpoint.optimizer.state)) if checkpoint.optimizer else (0, {})
    state.pop("sampler", None)  # where a resumed run would continue: a quantized model does not train
    state["quantized_from"] = str(src.resolve())
    params = stored_tensors(model, f"refusing to write {target}: the weights contain NaN or Inf")
    save_checkpoint(target, params=params, config=checkpoint.config, tokenizer=checkpoint.tokenizer,
                    weights=weights, progress=(step, state))
    return QuantizeResult(source=src, path=target, weights=weights, bytes_before=(src / MODEL_FILE).stat().st_size,
                          bytes_after=(target / MODEL_FILE).stat().st_size)
