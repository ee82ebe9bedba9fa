"""Model-level checkpoints: a live model (:class:`odin.model.GPT` or :class:`odin.rwkv.RWKV`) <->
a checkpoint directory.

The file format and its validation live in :mod:`odin.checkpoint_io`; this module adds
what needs the native model:

* :func:`model_from_config` — a fresh GPT shaped by a :class:`~odin.config.RunConfig`;
* :func:`save_model_checkpoint` — weights from ``model.named_params()``, AdamW moments from
  ``model.named_moments()``, the step and a JSON-serialisable ``trainer_state`` (sampler
  state, RNG, metrics, ``reverse_answer``…) in the optimizer metadata; atomic. A quantized
  model (odin.quant.checkpoint) saves its block tensors too, and no optimizer file;
* :func:`load_model_checkpoint` — a GPT with the weights (and moments) copied into its
  native block, plus tokenizer, config, step and trainer state; a quantized checkpoint
  gives a quantized model (it answers, it does not train);
* :func:`with_context` — a loaded position-free model (GPT without learned positions, or
  RWKV) over a longer context, for evaluating on longer examples than it was trained on.

Every problem with a checkpoint on disk is a :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from odin.blueprint import Blueprint
from odin.checkpoint_io import CheckpointError, OptimizerState, load_checkpoint, save_checkpoint
from odin.config import ModelConfig, RunConfig
from odin.model import F32, GPT, GPTShape
from odin.tokenizers import BPETokenizer, CharTokenizer

__all__ = [
    "CheckpointError", "IMPLEMENTED_ARCHS", "LoadedModel", "checkpoint_reverse_answer",
    "load_model_checkpoint", "model_from_config", "save_model_checkpoint", "stored_tensors", "with_context",
]

IMPLEMENTED_ARCHS: tuple[str, ...] = ("gpt", "rwkv")

if TYPE_CHECKING:
    from odin.rwkv import RWKV

    Model = GPT | RWKV


@dataclass
class LoadedModel:
    model: "Model"
    tokenizer: CharTokenizer | BPETokenizer
    run_config: RunConfig
    step: int = 0
    trainer_state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    has_optimizer: bool = False  # True when the moments were loaded into the model
    optimizer_saved: bool = False  # the checkpoint holds moments and progress (loaded or not)

    @property
    def reverse_answer(self) -> bool:
        return checkpoint_reverse_answer(self.trainer_state)

    @property
    def prompt_width(self) -> int:
        """Digits arithmetic operands are padded to when asking this model (its dataset's
        ``prompt_zeros``; 0 = ask as typed). See odin.data.arithmetic.padded_operands."""
        from odin.data.arithmetic import prompt_width_of

        dataset = self.trainer_state.get("dataset")
        return prompt_width_of(dataset.get("settings") if isinstance(dataset, Mapping) else None)


def checkpoint_reverse_answer(trainer_state: Mapping[str, Any]) -> bool:
    """Whether the run was trained on digit-reversed answers.

    Read from ``trainer_state["reverse_answer"]`` (what the trainer is expected to record),
    falling back to ``trainer_state["dataset"]["settings"]["reverse_answer"]`` (a copy of
    the dataset manifest's settings); ``False`` when neither is present.
    """
    value = trainer_state.get("reverse_answer")
    if value is None:
        dataset = trainer_state.get("dataset")
        if isinstance(dataset, Mapping):
            settings = dataset.get("settings", dataset)
            if isinstance(settings, Mapping):
                value = settings.get("reverse_answer")
    return bool(value)


def _model_config(run_config: RunConfig | ModelConfig) -> ModelConfig:
    if isinstance(run_config, RunConfig):
        return run_config.model
    if isinstance(run_config, ModelConfig):
        return run_config
    raise TypeError(f"expected a RunConfig or ModelConfig, got {type(run_config).__name__}")


def model_from_config(run_config: RunConfig | ModelConfig, weights: Any = None) -> "Model":
    """A new (uninitialised: call ``init_weights``) model of the configured shape and arch;
    ``weights`` (odin.model.WeightTypes; None: float32) what its tensors are stored as."""
    config = _model_config(run_config)
    if config.arch not in IMPLEMENTED_ARCHS:
        raise NotImplementedError(
            f"[model].arch = {config.arch!r} has no native implementation yet; "
            f"implemented archs: {', '.join(IMPLEMENTED_ARCHS)}"
        )
    Blueprint(config)  # validates the shape with a helpful message
    if config.arch == "rwkv":
        from odin.rwkv import RWKV, RWKVShape

        return RWKV(RWKVShape(vocab_size=config.vocab_size, context=config.context, n_layer=config.n_layer,
                              d_model=config.d_model, d_ffn=config.d_ffn or 4 * config.d_model,
                              ln_eps=config.ln_eps), weights or F32)
    digit_first = sep_id = -1
    if config.abacus:  # Abacus ids are defined over the char tokenizer's digits and "="
        tok = CharTokenizer()
        digit_first, sep_id = tok.encode("0")[0], tok.encode("=")[0]
        if tok.encode("0123456789") != list(range(digit_first, digit_first + 10)):
            raise ValueError("Abacus embeddings need the ten digits as consecutive token ids")
    return GPT(GPTShape(
        vocab_size=config.vocab_size, context=config.context, n_layer=config.n_layer,
        n_head=config.n_head, d_model=config.d_model, ln_eps=config.ln_eps,
        n_abacus=config.abacus, digit_first=digit_first, sep_id=sep_id,
        abacus_next=config.abacus_answer == "next",
        learned_positions=config.positions == "learned",
        alibi=config.positions == "alibi",
    ), weights or F32)


def _check_layout(model: "Model", blueprint: Blueprint, where: str) -> None:
    """The native tensor layout must be the blueprint's: the same names, shapes and order of
    float32 tensors and of quantized ones (stored as [rows, row bytes])."""
    try:
        specs = blueprint.tensor_specs(model.weights)
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from None
    pairs = (([(name, tuple(shape)) for name, _, shape in model.tensor_layout],
              [(s.name, s.shape) for s in specs if s.type == "f32"]),
             ([(name, tuple(view.shape)) for name, (view, _) in model.named_qtensors().items()],
              [(s.name, s.shape) for s in specs if s.type != "f32"]))
    for native, expected in pairs:
        for (n_name, n_shape), (b_name, b_shape) in zip(native, expected):
            if (n_name, n_shape) != (b_name, b_shape):
                raise CheckpointError(f"{where}: model tensor {n_name!r} {n_shape} does not match the config's "
                                      f"{b_name!r} {b_shape}")
        if len(native) != len(expected):
            raise CheckpointError(f"{where}: model has {len(model.tensor_layout) + len(model.quant_layout)} "
                                  f"tensors, the config describes {len(specs)}")


def stored_tensors(model: "Model", refusal: str) -> dict[str, np.ndarray]:
    """Every tensor of `model` as a checkpoint stores it: float32 copies (the native block may
    change under a training thread while the file is written), checked finite (a broken model
    must not replace a good checkpoint: NanError(`refusal`)), and a quantized model's blocks
    as its uint8 views (such a model never trains)."""
    params = {name: array.copy() for name, array in model.named_params().items()}
    # checked on the copies (what gets written), never on the live block another thread may change
    if not all(np.isfinite(array).all() for array in params.values()) or not _blocks_finite(model):
        from odin.native import NanError

        raise NanError(refusal)
    params.update({name: view for name, (view, _) in model.named_qtensors().items()})
    return params


def save_model_checkpoint(
    path: str | os.PathLike[str],
    model: "Model",
    tokenizer: CharTokenizer | BPETokenizer,
    run_config: RunConfig,
    *,
    step: int,
    trainer_state: Mapping[str, Any] | None = None,
    with_optimizer: bool = True,
) -> Path:
    """Write ``path`` (atomically replacing an older checkpoint there); returns it.

    ``trainer_state`` must be JSON-serialisable. With ``with_optimizer=False`` only
    weights, config and tokenizer are written (an inference export; no exact resume,
    and step/trainer_state are not stored). A quantized model (``model.is_quantized``) has
    no optimizer: its block tensors are written as uint8 [rows, row bytes], its weight
    types, ``step`` and ``trainer_state`` into the model file (odin.quant.checkpoint), and
    ``with_optimizer`` is not used.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    blueprint = Blueprint(_model_config(run_config))
    _check_layout(model, blueprint, "save_model_checkpoint")
    params = stored_tensors(model, f"refusing to write {path}: the weights contain NaN or Inf (step {step})")
    if model.is_quantized:
        return save_checkpoint(path, params=params, config=run_config, tokenizer=tokenizer, weights=model.weights,
                               progress=(int(step), dict(trainer_state or {})))
    optimizer = None
    if with_optimizer:
        m, v = model.named_moments()
        optimizer = OptimizerState(
            step=int(step),
            m={name: array.copy() for name, array in m.items()},
            v={name: array.copy() for name, array in v.items()},
            state=dict(trainer_state or {}),
        )
    return save_checkpoint(path, params=params, config=run_config, tokenizer=tokenizer, optimizer=optimizer)


def _all_finite(block: np.ndarray, piece: int = 1 << 22) -> bool:
    """np.isfinite piece by piece: a whole-block check would hold a byte per weight."""
    return all(np.isfinite(block[i:i + piece]).all() for i in range(0, block.size, piece))


def _blocks_finite(model: "Model") -> bool:
    """A quantized model's scales, all finite (a file written by other means may hold NaN there)."""
    if not model.is_quantized:
        return True
    from odin.quant.checkpoint import blocks_finite

    return all(blocks_finite(view, kind) for view, kind in model.named_qtensors().values())


def load_model_checkpoint(path: str | os.PathLike[str], *, with_optimizer: bool = True) -> LoadedModel:
    """Load a checkpoint into a new native model.

    With ``with_optimizer`` the AdamW moments are copied into the model too (zeros when
    the checkpoint has no optimizer file). ``step`` and ``trainer_state`` come from the
    optimizer metadata whenever the file exists (0 and ``{}`` otherwise). A quantized
    checkpoint gives a quantized model (``model.weights``), with the step and trainer state
    its model file keeps; it has no moments, and its model refuses to train.
    """
    config_file = Path(path) / "config.json"
    made: dict[str, Any] = {}

    def into_new_model(config: dict, weights: Any) -> Any:
        """The model config.json describes, of the weight types the model file records; its
        views receive the weights as they are read."""
        try:
            made["run_config"] = RunConfig.from_dict(config)
            made["model"] = model_from_config(made["run_config"], weights)
        except NotImplementedError as error:
            raise CheckpointError(f"{config_file}: {error}") from None
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{config_file}: {error}") from None
        _check_layout(made["model"], Blueprint(made["run_config"].model), str(config_file))
        views = made["model"].named_params()
        views.update({name: view for name, (view, _) in made["model"].named_qtensors().items()})
        return views.__getitem__

    # the weights go straight into the model; the moments are read only when they are wanted
    checkpoint = load_checkpoint(path, params_into=into_new_model, optimizer_tensors=with_optimizer, quantized=True)
    model, run_config = made["model"], made["run_config"]
    if not _all_finite(model.params) or not _blocks_finite(model):
        raise CheckpointError(f"{Path(path) / 'model.safetensors'}: weights contain NaN or Inf")
    step, state, has_optimizer = 0, {}, False  # a new model's training blocks start at zero when first used
    if checkpoint.progress is not None:  # a quantized checkpoint's, from its model file
        step, state = checkpoint.progress
    if checkpoint.optimizer is not None:
        step, state = checkpoint.optimizer.step, dict(checkpoint.optimizer.state)
        if with_optimizer:
            m, v = model.named_moments()
            for name in m:
                m[name][...] = checkpoint.optimizer.m[name]
                v[name][...] = checkpoint.optimizer.v[name]
            has_optimizer = True
    return LoadedModel(model=model, tokenizer=checkpoint.tokenizer, run_config=run_config, step=step,
                       trainer_state=state, path=Path(path), has_optimizer=has_optimizer,
                       optimizer_saved=checkpoint.optimizer is not None)


def with_context(loaded: LoadedModel, context: int) -> LoadedModel:
    """``loaded``'s weights in a model over ``context`` positions, for a model in which no
    weight depends on absolute position: a GPT with ``positions = "none"`` or ``"alibi"``
    (its position table is held at zero) or an RWKV. On the lengths it was trained on it
    computes exactly what the original does; beyond them is the length generalisation being
    measured. Weights only (no AdamW moments): for evaluation and generation."""
    config = loaded.run_config.model
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive integer, got {context!r}")
    if context < config.context:
        raise ValueError(f"context {context} is shorter than the model's ({config.context})")
    if config.arch == "gpt" and config.positions == "learned":
        raise ValueError(f"the model has learned positions for {config.context} places and none beyond; only a "
                         f"model trained with [model].positions = \"none\" or \"alibi\" (or an RWKV) runs over a "
                         f"longer context")
    if context == config.context:
        return loaded
    wider = dataclasses.replace(loaded.run_config, model=dataclasses.replace(config, context=context))
    model = model_from_config(wider, loaded.model.weights)
    source = loaded.model.named_params()
    for name, view in model.named_params().items():
        if name == "wpe":  # all zeros in a position-free GPT; the new rows stay zero
            view[...] = 0.0
            view[:config.context] = source[name]
        else:
            view[...] = source[name]
    blocks = loaded.model.named_qtensors()  # a quantized model's: no tensor of them depends on the context
    for name, (view, _) in model.named_qtensors().items():
        view[...] = blocks[name][0]
    return dataclasses.replace(loaded, model=model, run_config=wider, has_optimizer=False)
