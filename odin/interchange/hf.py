"""Hugging Face model directories, both ways.

``odin export hf CHECKPOINT DIR`` writes what ``transformers`` loads with
``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``: a GPT
with learned positions as ``gpt2``, an RWKV as ``rwkv`` (RWKV-4), weights in
``model.safetensors`` (head tied, so not stored), ``config.json``, ``generation_config.json``
and the tokenizer files. ``odin import hf DIR OUT`` reads such a directory (``gpt2`` or
``rwkv``, f32 or f16 safetensors) into an ODIN checkpoint holding weights, config and tokenizer
(no optimizer state: a fine-tune starts its moments at zero).

An option that ODIN's model does not have, on either side, is refused with one line naming the
file and the option: the result would otherwise compute something else than the original.
Everything is written to a temporary sibling directory and renamed into place.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from odin.blueprint import Blueprint
from odin.checkpoint_io import load_checkpoint, save_checkpoint
from odin.config import ConfigError, ModelConfig, RunConfig
from odin.fileio import user_mode
from odin.interchange.common import InterchangeError, run_command
from odin.interchange.names import HF_ARCHITECTURE, HF_EMBEDDING, HF_HEAD, HF_MODEL_TYPE, tensor_names
from odin.interchange.tokenizer_json import SPECIAL_ROLES, hf_tokenizer, odin_tokenizer, tokenizer_config
from odin.tokenizers import BPETokenizer, CharTokenizer, TokenizerFileError

HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
# transformers' RWKV applies its final LayerNorm with torch's default eps, whatever the config says
RWKV_LN_OUT_EPS = 1e-5
_GPT2_GELU = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation ODIN uses
# buffers older transformers versions saved with GPT-2 (the causal mask): not weights
_GPT2_BUFFERS = (".attn.bias", ".attn.masked_bias")


# ------------------------------------------------------------------------------ export
def hf_unsupported(model: ModelConfig) -> str | None:
    """Why transformers cannot express ``model`` (None when it can)."""
    if model.arch == "gpt":
        if model.abacus:
            return "Abacus digit-place embeddings ([model].abacus) have no GPT-2 counterpart in transformers"
        if model.positions == "alibi":
            return "ALiBi attention biases ([model].positions = \"alibi\") have no GPT-2 counterpart in transformers"
        if model.positions == "none":
            return ("a GPT without position embeddings ([model].positions = \"none\") has no GPT-2 counterpart "
                    "in transformers")
        return None
    if model.arch == "rwkv":
        if model.ln_eps != RWKV_LN_OUT_EPS:
            return (f"[model].ln_eps = {model.ln_eps:g}: transformers' RWKV uses eps {RWKV_LN_OUT_EPS:g} in its final "
                    f"LayerNorm whatever the config says")
        return None
    return f"no Hugging Face architecture for arch {model.arch!r}"


def hf_config(model: ModelConfig, tokenizer: CharTokenizer | BPETokenizer) -> dict[str, Any]:
    """The ``config.json`` of the HF model that computes what ``model`` does."""
    special = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.end_id, "pad_token_id": tokenizer.pad_id}
    common = {"architectures": [HF_ARCHITECTURE[model.arch]], "model_type": HF_MODEL_TYPE[model.arch],
              "vocab_size": model.vocab_size, "layer_norm_epsilon": model.ln_eps, "tie_word_embeddings": True,
              "dtype": "float32", "use_cache": True, **special}
    if model.arch == "gpt":
        return {**common, "n_positions": model.context, "n_embd": model.d_model, "n_layer": model.n_layer,
                "n_head": model.n_head, "n_inner": None, "activation_function": "gelu_new",
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
                "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
                "add_cross_attention": False}
    return {**common, "context_length": model.context, "hidden_size": model.d_model,
            "num_hidden_layers": model.n_layer, "attention_hidden_size": model.d_model,
            "intermediate_size": model.d_ffn or 4 * model.d_model, "rescale_every": 0}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _fresh_target(target: Path) -> None:
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise InterchangeError(f"{target} already exists; choose a new directory (nothing was written)")


def write_directory_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(staging)`` on a fresh sibling directory of ``target``, then rename it to
    ``target`` (which must not exist, or be empty): a failure leaves nothing behind."""
    _fresh_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(staging, user_mode(0o777))  # mkdtemp makes 0700: follow the umask like mkdir
        fill(staging)
        if target.exists():
            target.rmdir()  # empty (checked above): rename cannot replace it otherwise on every OS
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def export_hf(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the HF directory ``out`` from an ODIN checkpoint directory; returns ``out``."""
    loaded = load_checkpoint(checkpoint)
    config_file = Path(checkpoint) / "config.json"
    model = loaded.run_config().model
    reason = hf_unsupported(model)
    if reason is not None:
        raise InterchangeError(f"{config_file}: cannot export to Hugging Face: {reason}")
    tensors = {name.hf: name.to_hf(loaded.params[name.odin]) for name in tensor_names(model.arch, model.n_layer)}

    def fill(staging: Path) -> None:
        from safetensors.numpy import save_file

        save_file({key: np.ascontiguousarray(value, np.float32) for key, value in tensors.items()},
                  str(staging / HF_WEIGHTS), metadata={"format": "pt"})
        _write_json(staging / "config.json", hf_config(model, loaded.tokenizer))
        _write_json(staging / "generation_config.json", {
            "bos_token_id": loaded.tokenizer.bos_id, "eos_token_id": loaded.tokenizer.end_id,
            "pad_token_id": loaded.tokenizer.pad_id})
        hf_tokenizer(loaded.tokenizer).save(str(staging / "tokenizer.json"))
        _write_json(staging / "tokenizer_config.json",
                    tokenizer_config(model.context if model.arch == "gpt" else None))
        _write_json(staging / "special_tokens_map.json", SPECIAL_ROLES)

    return write_directory_atomically(Path(out), fill)


# ------------------------------------------------------------------------------ import
def _option(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key)
    return default if value is None else value


def _int_option(config: Mapping[str, Any], key: str, where: str, default: Any = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InterchangeError(f"{where}: '{key}' must be an integer, got {value!r}")
    return value


def _refuse_options(config: Mapping[str, Any], where: str, checks: Mapping[str, tuple[Any, Any, str]]) -> None:
    """``checks``: key -> (default, the value ODIN computes, what it would mean)."""
    for key, (default, wanted, meaning) in checks.items():
        value = _option(config, key, default)
        allowed = wanted if isinstance(wanted, tuple) else (wanted,)
        if value not in allowed:
            raise InterchangeError(f"{where}: {key} = {json.dumps(value)} is not supported: {meaning}")


def model_config_from_hf(config: Mapping[str, Any], where: str) -> ModelConfig:
    """The ODIN model config of a HF ``config.json`` (its parsed object)."""
    if not isinstance(config, Mapping):
        raise InterchangeError(f"{where}: expected a JSON object")
    model_type = config.get("model_type")
    if model_type not in ("gpt2", "rwkv"):
        raise InterchangeError(f"{where}: model_type {model_type!r} is not supported (ODIN imports 'gpt2' and 'rwkv')")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise InterchangeError(f"{where}: 'layer_norm_epsilon' must be a number, got {eps!r}")
    try:
        model = _model_config(config, model_type, float(eps), where)
        Blueprint(model)  # the shape rules (e.g. heads dividing the width) with their message
        return model
    except (ConfigError, ValueError) as error:
        if isinstance(error, InterchangeError):
            raise
        raise InterchangeError(f"{where}: {error}") from None


def _model_config(config: Mapping[str, Any], model_type: str, eps: float, where: str) -> ModelConfig:
    """The ModelConfig of a gpt2 / rwkv config.json, refusing options ODIN's model does not have."""
    if model_type == "gpt2":
        d_model = _int_option(config, "n_embd", where)
        _refuse_options(config, where, {
            "activation_function": ("gelu_new", _GPT2_GELU, "ODIN's MLP uses the tanh GELU"),
            "n_inner": (None, (None, 4 * d_model), f"ODIN's MLP is 4 x n_embd = {4 * d_model} wide"),
            "scale_attn_weights": (True, True, "ODIN scales attention scores by 1/sqrt(head size)"),
            "scale_attn_by_inverse_layer_idx": (False, False, "ODIN does not scale attention by layer"),
            "add_cross_attention": (False, False, "ODIN's GPT is decoder-only"),
        })
        return ModelConfig(arch="gpt", n_layer=_int_option(config, "n_layer", where), d_model=d_model,
                           n_head=_int_option(config, "n_head", where),
                           context=_int_option(config, "n_positions", where),
                           vocab_size=_int_option(config, "vocab_size", where), ln_eps=eps)
    d_model = _int_option(config, "hidden_size", where)
    d_ffn = _int_option(config, "intermediate_size", where, 4 * d_model) if config.get(
        "intermediate_size") is not None else 4 * d_model
    _refuse_options(config, where, {
        "attention_hidden_size": (d_model, d_model, f"ODIN's time-mix is hidden_size = {d_model} wide"),
        "layer_norm_epsilon": (1e-5, RWKV_LN_OUT_EPS,
                               "transformers' RWKV uses eps 1e-5 in its final LayerNorm and the config's "
                               "elsewhere; ODIN has one eps for all"),
    })
    return ModelConfig(arch="rwkv", n_layer=_int_option(config, "num_hidden_layers", where), d_model=d_model,
                       n_head=1, context=_int_option(config, "context_length", where, 1024),
                       vocab_size=_int_option(config, "vocab_size", where), ln_eps=eps,
                       d_ffn=0 if d_ffn == 4 * d_model else d_ffn)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InterchangeError(f"{path.name} is missing from {path.parent}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InterchangeError(f"{path}: not valid JSON ({error})") from None


def _weight_files(directory: Path) -> list[Path]:
    single = directory / HF_WEIGHTS
    if single.is_file():
        return [single]
    index_path = directory / HF_WEIGHTS_INDEX
    if index_path.is_file():
        index = _read_json(index_path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise InterchangeError(f"{index_path}: needs a 'weight_map' object of file names")
        return [directory / name for name in sorted(set(weight_map.values()))]
    other = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
    hint = f" ({other[0]} is a pickle file; ODIN reads safetensors only)" if other else ""
    raise InterchangeError(f"{HF_WEIGHTS} is missing from {directory}{hint}")


def _read_weights(directory: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    for path in _weight_files(directory):
        if not path.is_file():
            raise InterchangeError(f"{path.name} is missing from {directory}")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        except Exception as error:  # safetensors raises its own error types; bf16 has no numpy dtype
            raise InterchangeError(f"{path}: unreadable safetensors file or unsupported dtype (ODIN reads f32 "
                                   f"and f16) ({error})") from None
    return tensors


def odin_params(tensors: Mapping[str, np.ndarray], model: ModelConfig, source: Path) -> dict[str, np.ndarray]:
    """ODIN's tensors from HF's (``tensors``), checked name by name and shape by shape."""
    shapes = dict(Blueprint(model).param_shapes())
    names = tensor_names(model.arch, model.n_layer)
    # a GPT2Model saved on its own has no "transformer." prefix
    if model.arch == "gpt" and "wte.weight" in tensors and "transformer.wte.weight" not in tensors:
        tensors = {f"transformer.{key}": value for key, value in tensors.items()}
    expected = {name.hf for name in names}
    head = tensors.get(HF_HEAD[model.arch])
    extra = [key for key in tensors if key not in expected and key != HF_HEAD[model.arch]
             and not key.endswith(_GPT2_BUFFERS)]
    if extra:
        raise InterchangeError(f"{source}: unexpected tensor {extra[0]!r} (not part of a {HF_MODEL_TYPE[model.arch]} "
                               f"model ODIN can hold)")
    params: dict[str, np.ndarray] = {}
    for name in names:
        if name.hf not in tensors:
            raise InterchangeError(f"{source}: missing tensor {name.hf!r}")
        array = tensors[name.hf]
        if array.dtype not in (np.float32, np.float16):
            raise InterchangeError(f"{source}: tensor {name.hf!r} is {array.dtype}; ODIN reads f32 and f16")
        try:
            params[name.odin] = name.to_odin(array.astype(np.float32), shapes[name.odin])
        except ValueError as error:
            raise InterchangeError(f"{source}: {error}") from None
        if not np.isfinite(params[name.odin]).all():
            raise InterchangeError(f"{source}: tensor {name.hf!r} holds NaN or Inf")
    if head is not None and not np.array_equal(head.astype(np.float32), tensors[HF_EMBEDDING[model.arch]]
                                               .astype(np.float32)):
        raise InterchangeError(f"{source}: {HF_HEAD[model.arch]!r} differs from the embedding; ODIN's head is tied "
                               f"to it")
    return params


def import_hf(hf_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the ODIN checkpoint ``out`` from the HF model directory ``hf_dir``; returns ``out``."""
    directory, target = Path(hf_dir), Path(out)
    if not directory.is_dir():
        raise InterchangeError(f"model directory not found: {directory}")
    _fresh_target(target)
    config_path = directory / "config.json"
    hf = _read_json(config_path)
    model = model_config_from_hf(hf, str(config_path))
    tokenizer_path = directory / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise InterchangeError(f"tokenizer.json is missing from {directory} (ODIN reads the fast tokenizer's file)")
    try:
        tokenizer = odin_tokenizer(tokenizer_path.read_text(encoding="utf-8"), str(tokenizer_path))
    except (TokenizerFileError, UnicodeDecodeError) as error:
        raise InterchangeError(str(error)) from None
    if tokenizer.vocab_size > model.vocab_size:
        raise InterchangeError(f"{tokenizer_path}: {tokenizer.vocab_size} tokens, more than config.json's vocab_size "
                               f"{model.vocab_size}")
    params = odin_params(_read_weights(directory), model, directory / HF_WEIGHTS)
    return save_checkpoint(target, params=params, config=RunConfig(model=model), tokenizer=tokenizer)


# ------------------------------------------------------------------------------ command line
def _cmd_export(args: argparse.Namespace) -> int:
    def action() -> str:
        out = export_hf(args.checkpoint, args.out)
        return f"wrote {out} (transformers: AutoModelForCausalLM.from_pretrained({str(out)!r}))"

    return run_command("export hf", action)


def _cmd_import(args: argparse.Namespace) -> int:
    def action() -> str:
        out = import_hf(args.directory, args.out)
        return f"wrote checkpoint {out} (try: odin-infer -m {out} -p '...')"

    return run_command("import hf", action)


def add_export_parser(esub: "argparse._SubParsersAction") -> None:
    p = esub.add_parser("hf", help="a Hugging Face model directory (transformers: gpt2 / rwkv)")
    p.add_argument("checkpoint", help="ODIN checkpoint directory")
    p.add_argument("out", help="new directory to write")
    p.set_defaults(func=_cmd_export)


def add_import_parser(isub: "argparse._SubParsersAction") -> None:
    p = isub.add_parser("hf", help="a Hugging Face gpt2 / rwkv model directory (safetensors)")
    p.add_argument("directory", help="Hugging Face model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("out", help="new ODIN checkpoint directory to write")
    p.set_defaults(func=_cmd_import)


__all__ = ["InterchangeError", "export_hf", "hf_config", "hf_unsupported", "import_hf", "model_config_from_hf",
           "odin_params", "write_directory_atomically"]
