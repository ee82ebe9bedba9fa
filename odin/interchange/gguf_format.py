"""GGUF, llama.cpp's file format: ``odin export gguf`` and ``odin import gguf``.

ODIN's GPT is GPT-2 (learned positions, pre-LayerNorm, tanh GELU, fused QKV, LM head tied to
the token embedding), so a checkpoint maps tensor for tensor onto llama.cpp's ``gpt2``
architecture; the names come from the ``gguf`` package (gguf-py, llama.cpp's own writer and
reader) and the tokenizer goes through :mod:`odin.interchange.gguf_vocab`. Without an
``output.weight`` llama.cpp ties the head to ``token_embd``, as ODIN does.

Quantized models go out as the bytes ODIN computes with: its block formats are ggml's (q8_0,
q4_0, q4_1, q5_0, q5_1), so each quantized tensor is written raw with its GGML type, and a
quantized file comes back as a quantized checkpoint holding the same blocks; which tensor has
which type, both ways, is :mod:`odin.interchange.gguf_types`.

What llama.cpp's gpt2 cannot run is refused with the reason: ALiBi biases and Abacus digit
embeddings (no such inputs in its gpt2 graph) and RWKV (llama.cpp has RWKV-6/7, whose blocks
differ from RWKV-4's). A GPT with ``positions = "none"`` exports as is: its position table
is all zeros, which is exact over its trained context.

The ``gguf`` package is an optional dependency (``pip install 'odin[interchange]'``); it is
imported only when a GGUF command runs.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odin.checkpoint import load_model_checkpoint
from odin.checkpoint_io import save_checkpoint
from odin.config import ConfigError, ModelConfig, RunConfig
from odin.errors import ShapeError
from odin.interchange.common import InterchangeError, run_command, write_file_atomically
from odin.interchange.gguf_types import (
    EXPORT_TYPES, PlanError, can_dequantize, file_type, ggml_type, import_plan, read_blocks,
    read_float, type_label,
)
from odin.interchange.gguf_vocab import GGUFVocab, VocabError, tokenizer_from_vocab, vocab_from_tokenizer
from odin.quant import DEFAULT_EMBED_TYPE, QUANT_TYPES, QuantError, dequantize

ARCH = "gpt2"
F16_MAX = float(np.finfo(np.float16).max)
GGUF_MAGIC = b"GGUF"
PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for the GPT-2 word-splitting regex


class GGUFError(InterchangeError):
    """A model that cannot be written as GGUF, or a GGUF file ODIN cannot read (the message
    names the file and the reason)."""


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise GGUFError("the gguf package is not installed (pip install 'odin[interchange]')") from None
    return gguf


# ------------------------------------------------------------------ the name map
def tensor_names(n_layer: int) -> dict[str, str]:
    """ODIN parameter name -> GGUF tensor name, for a GPT of ``n_layer`` layers."""
    gguf = _gguf()
    T, names = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    layer_map = {
        "ln1_w": (T.ATTN_NORM, "weight"), "ln1_b": (T.ATTN_NORM, "bias"),
        "qkv_w": (T.ATTN_QKV, "weight"), "qkv_b": (T.ATTN_QKV, "bias"),
        "attproj_w": (T.ATTN_OUT, "weight"), "attproj_b": (T.ATTN_OUT, "bias"),
        "ln2_w": (T.FFN_NORM, "weight"), "ln2_b": (T.FFN_NORM, "bias"),
        "fc_w": (T.FFN_UP, "weight"), "fc_b": (T.FFN_UP, "bias"),
        "fcproj_w": (T.FFN_DOWN, "weight"), "fcproj_b": (T.FFN_DOWN, "bias"),
    }
    mapping = {
        "wte": f"{names[T.TOKEN_EMBD]}.weight",
        "wpe": f"{names[T.POS_EMBD]}.weight",
    }
    for layer in range(n_layer):
        for odin_name, (tensor, suffix) in layer_map.items():
            mapping[f"h.{layer}.{odin_name}"] = f"{names[tensor].format(bid=layer)}.{suffix}"
    mapping["lnf_w"] = f"{names[T.OUTPUT_NORM]}.weight"
    mapping["lnf_b"] = f"{names[T.OUTPUT_NORM]}.bias"
    return mapping


def _output_name() -> str:
    gguf = _gguf()
    return f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT]}.weight"


# ------------------------------------------------------------------ export
def _refusal(config: ModelConfig) -> str | None:
    if config.arch == "rwkv":
        return ("an RWKV-4 model has no llama.cpp architecture (llama.cpp runs RWKV-6 and RWKV-7, whose "
                "blocks differ); export it with 'odin export hf' or 'odin export onnx'")
    if config.arch != "gpt":
        return f"arch {config.arch!r} has no GGUF mapping"
    if config.positions == "alibi":
        return "the model uses ALiBi attention biases, which llama.cpp's gpt2 architecture does not have"
    if config.abacus:
        return "the model uses Abacus digit-position embeddings, which llama.cpp's gpt2 architecture does not have"
    return None


def export_gguf(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                dtype: str | None = None) -> dict[str, Any]:
    """Write ``checkpoint`` as a GGUF file ``out``. ``dtype``: f32 or f16 for the matrices of a
    float32 checkpoint (norms and biases stay f32, as llama.cpp's converters keep them), or a
    block type (q8_0, q4_0, q4_1, q5_0, q5_1): the checkpoint quantized as ``odin quantize``
    does (matrices that type, the token embedding ODIN's embedding type); None is what the
    checkpoint holds (a quantized checkpoint's own blocks, byte for byte; another type for it
    is refused). Written to a temp file beside ``out`` and renamed over it. Returns a summary
    (parameters, bytes, type)."""
    if dtype is not None:
        if not isinstance(dtype, str) or dtype.strip().lower() not in EXPORT_TYPES:
            raise GGUFError(f"--type must be one of {', '.join(EXPORT_TYPES)}, got {dtype!r}")
        dtype = dtype.strip().lower()
    gguf = _gguf()
    loaded = load_model_checkpoint(checkpoint, with_optimizer=False)
    config = loaded.run_config.model
    refusal = _refusal(config)
    if refusal:
        raise GGUFError(f"{checkpoint}: {refusal}")
    model = _model_to_write(loaded.model, checkpoint, dtype)
    dtype = dtype or model.weights.matrix
    try:
        vocab = vocab_from_tokenizer(loaded.tokenizer, config.vocab_size)
    except VocabError as error:
        raise GGUFError(f"{Path(checkpoint) / 'tokenizer.json'}: {error}") from None
    params, blocks = model.named_params(), model.named_qtensors()
    for name, array in params.items():
        if not np.isfinite(array).all():
            raise GGUFError(f"{Path(checkpoint) / 'model.safetensors'}: tensor {name!r} holds NaN or Inf")
        if dtype == "f16" and array.ndim == 2 and np.abs(array).max(initial=0.0) > F16_MAX:
            raise GGUFError(f"{checkpoint}: tensor {name!r} has values beyond f16's range (+-{F16_MAX:g}); "
                            f"export it with --type f32")
    for name, (data, kind) in blocks.items():  # a scale that is NaN or Inf would make llama.cpp's output NaN
        if not np.isfinite(dequantize(data, kind, _columns(model, name))).all():
            raise GGUFError(f"{Path(checkpoint) / 'model.safetensors'}: tensor {name!r} ({kind}) holds NaN or Inf")
    matrix, embed = ("f16", "f16") if dtype == "f16" else (model.weights.matrix, model.weights.embed)
    target = Path(out)

    def write(staging: Path) -> None:
        writer = gguf.GGUFWriter(str(staging), ARCH)
        _write_metadata(writer, gguf, config, vocab, file_type(gguf, matrix, embed), Path(checkpoint).name,
                        quantized=bool(blocks))
        for odin_name, gguf_name in tensor_names(config.n_layer).items():
            if odin_name in blocks:  # ODIN's blocks are ggml's: the bytes go in as they are
                data, kind = blocks[odin_name]
                writer.add_tensor(gguf_name, np.ascontiguousarray(data), raw_dtype=ggml_type(gguf, kind))
                continue
            array = np.ascontiguousarray(params[odin_name], dtype=np.float32)
            writer.add_tensor(gguf_name, array.astype(np.float16) if dtype == "f16" and array.ndim == 2 else array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    write_file_atomically(target, write, GGUFError, ".gguf")
    n_params = sum(int(array.size) for array in params.values()) + sum(
        rows * cols for _, _, (rows, cols), _ in model.quant_layout)
    kind = "f16" if dtype == "f16" else model.weights.describe()
    return {"path": target, "n_params": n_params, "bytes": target.stat().st_size, "type": kind}


def _model_to_write(model: Any, checkpoint: str | os.PathLike[str], dtype: str | None) -> Any:
    """The model whose tensors go into the file: a quantized checkpoint's own (only for its own
    type), or a float32 one quantized here when ``dtype`` is a block type."""
    weights = model.weights
    if weights.quantized:
        if dtype not in (None, weights.matrix):
            raise GGUFError(f"{checkpoint}: the checkpoint is quantized ({weights.describe()}) and exports as its own "
                            f"blocks (--type {weights.matrix}); for --type {dtype} export its float32 original")
        return model
    if dtype not in QUANT_TYPES:
        return model
    from odin.model import WeightTypes
    from odin.quant.convert import quantized_copy

    try:
        return quantized_copy(model, WeightTypes(matrix=dtype, embed=DEFAULT_EMBED_TYPE))
    except (QuantError, ShapeError) as error:  # a row that is not whole blocks of 32
        raise GGUFError(f"{checkpoint}: cannot quantize to {dtype}: {error}") from None


def _columns(model: Any, name: str) -> int:
    return next(cols for qname, _, (_, cols), _ in model.quant_layout if qname == name)


def _write_metadata(writer: Any, gguf: Any, config: ModelConfig, vocab: GGUFVocab, ftype: Any, name: str,
                    quantized: bool) -> None:
    writer.add_name(name or "odin")
    writer.add_context_length(config.context)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(4 * config.d_model)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.ln_eps)
    writer.add_file_type(ftype)
    if quantized:  # as llama.cpp's converters and llama-quantize mark block-quantized files
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    ids = {token: index for index, token in enumerate(vocab.tokens)}
    writer.add_bos_token_id(ids["<bos>"])
    writer.add_eos_token_id(ids["<end>"])
    writer.add_pad_token_id(ids["<pad>"])
    writer.add_add_bos_token(True)  # ODIN feeds <bos> before every prompt
    writer.add_add_eos_token(False)


# ------------------------------------------------------------------ import
@dataclass
class _Fields:
    """Typed access to a reader's key/value metadata; every problem names the file and key."""

    reader: Any
    path: Path

    def get(self, key: str, kind: type, required: bool = True) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if required:
                raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
            return None
        try:
            value = field.contents()
        except (UnicodeDecodeError, ValueError, IndexError) as error:  # decoded lazily, on first use
            raise GGUFError(f"{self.path}: metadata key {key!r} is corrupt ({error})") from None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if kind is list and isinstance(value, list):
            return value
        raise GGUFError(f"{self.path}: metadata key {key!r} holds {type(value).__name__} {_short(value)}, "
                        f"expected {kind.__name__}")

    def positive(self, key: str) -> int:
        value = self.get(key, int)
        if value < 1:
            raise GGUFError(f"{self.path}: metadata key {key!r} is {value}, expected a positive integer")
        return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _open_reader(path: Path) -> Any:
    gguf = _gguf()
    if not path.is_file():
        raise GGUFError(f"{path}: no such file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as error:  # the reader raises ValueError, IndexError, KeyError... on damage
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GGUFError(f"{path}: corrupt or truncated GGUF file ({reason})") from None


def _decimal(value: float) -> float:
    """A float32 read back as the shortest decimal that gives it (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def read_gguf(path: str | os.PathLike[str]) -> tuple[RunConfig, dict[str, np.ndarray], GGUFVocab, Any]:
    """The ODIN config, parameters, vocabulary and weight types (odin.model.WeightTypes) of a
    gpt2-architecture GGUF file: float32 tensors, and uint8 [rows, row bytes] for the tensors
    kept in a block format (see odin.interchange.gguf_types.import_plan)."""
    gguf = _gguf()
    source = Path(path)
    reader = _open_reader(source)
    fields = _Fields(reader, source)
    arch = fields.get("general.architecture", str)
    if arch != ARCH:
        raise GGUFError(f"{source}: architecture {arch!r} is not supported (ODIN reads llama.cpp's {ARCH!r}: "
                        f"GPT-2 blocks with learned positions)")
    n_layer = fields.positive(f"{ARCH}.block_count")
    d_model = fields.positive(f"{ARCH}.embedding_length")
    n_head = fields.positive(f"{ARCH}.attention.head_count")
    context = fields.positive(f"{ARCH}.context_length")
    d_ff = fields.positive(f"{ARCH}.feed_forward_length")
    ln_eps = _decimal(fields.get(f"{ARCH}.attention.layer_norm_epsilon", float))
    if d_ff != 4 * d_model:
        raise GGUFError(f"{source}: feed_forward_length {d_ff} is not 4 x embedding_length ({4 * d_model}); "
                        f"ODIN's GPT MLP is 4 x d_model wide")
    vocab = _read_vocab(fields)
    try:
        config = RunConfig(model=ModelConfig(arch="gpt", n_layer=n_layer, d_model=d_model, n_head=n_head,
                                             context=context, vocab_size=len(vocab.tokens), ln_eps=ln_eps))
        from odin.blueprint import Blueprint

        shapes = dict(Blueprint(config.model).param_shapes())
    except (ConfigError, ValueError) as error:
        raise GGUFError(f"{source}: a model ODIN cannot build: {error}") from None
    params, weights = _read_tensors(reader, gguf, source, n_layer, shapes)
    return config, params, vocab, weights


def _read_vocab(fields: _Fields) -> GGUFVocab:
    model = fields.get("tokenizer.ggml.model", str)
    if model != "gpt2":
        raise GGUFError(f"{fields.path}: tokenizer.ggml.model is {model!r}; ODIN reads byte-level BPE ('gpt2')")
    pre = fields.get("tokenizer.ggml.pre", str, required=False) or "default"
    if pre != PRE_TOKENIZER:
        raise GGUFError(f"{fields.path}: tokenizer.ggml.pre is {pre!r}; ODIN's byte-level BPE splits words with "
                        f"GPT-2's regex ({PRE_TOKENIZER!r})")
    tokens = fields.get("tokenizer.ggml.tokens", list)
    types = fields.get("tokenizer.ggml.token_type", list, required=False) or [1] * len(tokens)
    merges = fields.get("tokenizer.ggml.merges", list, required=False) or []
    if len(types) != len(tokens):
        raise GGUFError(f"{fields.path}: {len(tokens)} tokens but {len(types)} token types")
    return GGUFVocab(tokens=list(tokens), token_types=[int(kind) for kind in types], merges=list(merges))


def _read_tensors(reader: Any, gguf: Any, source: Path, n_layer: int,
                  shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, np.ndarray], Any]:
    from odin.model import WeightTypes

    by_name = {tensor.name: tensor for tensor in reader.tensors}
    names = tensor_names(n_layer)
    known = set(names.values()) | {_output_name()}
    extra = sorted(set(by_name) - known)
    if extra:
        raise GGUFError(f"{source}: unexpected tensor {extra[0]!r} for a {n_layer}-layer gpt2 model")
    for odin_name, gguf_name in [*names.items(), ("output", _output_name())]:
        tensor = by_name.get(gguf_name)
        if tensor is None:
            if odin_name == "output":
                continue
            raise GGUFError(f"{source}: tensor {gguf_name!r} is missing")
        expected = shapes["wte" if odin_name == "output" else odin_name]
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists the fastest axis first
        if odin_name in ("wte", "output") and len(shape) == 2 and shape[0] != expected[0]:
            raise GGUFError(f"{source}: the vocabulary has {expected[0]} tokens but {gguf_name!r} has {shape[0]} rows")
        if shape != expected:
            raise GGUFError(f"{source}: tensor {gguf_name!r} has shape {list(shape)}, expected {list(expected)} "
                            f"from the metadata")
    try:
        plan = import_plan(gguf, {odin_name: (gguf_name, int(by_name[gguf_name].tensor_type))
                                  for odin_name, gguf_name in names.items()})
        params: dict[str, np.ndarray] = {}
        for odin_name, gguf_name in names.items():
            tensor, keep = by_name[gguf_name], plan.tensors[odin_name].keep
            params[odin_name] = (read_blocks(tensor, keep, shapes[odin_name]) if keep
                                 else read_float(gguf, tensor, shapes[odin_name]))
        head = by_name.get(_output_name())
        if head is not None and not _same_tensor(gguf, head, by_name[names["wte"]], shapes["wte"]):
            raise GGUFError(f"{source}: the output head differs from token_embd; ODIN ties the head to the embedding")
    except (PlanError, QuantError) as error:
        raise GGUFError(f"{source}: {error}") from None
    for name, array in params.items():
        keep = plan.tensors[name].keep
        values = dequantize(array, keep, shapes[name][1]) if keep else array
        if not np.isfinite(values).all():
            raise GGUFError(f"{source}: tensor {names[name]!r} holds NaN or Inf")
    return params, WeightTypes(matrix=plan.matrix, embed=plan.embed)


def _same_tensor(gguf: Any, a: Any, b: Any, shape: tuple[int, ...]) -> bool:
    """Two reader tensors hold the same values: the same bytes of one type, or equal floats."""
    if a.tensor_type == b.tensor_type:
        return np.array_equal(np.asarray(a.data).view(np.uint8), np.asarray(b.data).view(np.uint8))
    for tensor in (a, b):
        if not can_dequantize(gguf, tensor.tensor_type):
            raise PlanError(f"tensor {tensor.name!r} is {type_label(gguf, tensor.tensor_type)}, which ODIN cannot read")
    return np.array_equal(read_float(gguf, a, shape), read_float(gguf, b, shape))


def import_gguf(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Turn a gpt2-architecture GGUF file into the ODIN checkpoint directory ``out`` (which
    must not exist yet); written in a temp directory and renamed into place."""
    target = Path(out)
    if target.exists():
        raise GGUFError(f"{target} already exists; give a new directory for the checkpoint")
    config, params, vocab, weights = read_gguf(path)
    try:
        tokenizer = tokenizer_from_vocab(vocab)
    except VocabError as error:
        raise GGUFError(f"{path}: {error}") from None
    if tokenizer.vocab_size > config.model.vocab_size:
        raise GGUFError(f"{path}: {tokenizer.vocab_size} tokens but token_embd has {config.model.vocab_size} rows")
    if weights.quantized:  # the blocks as the file holds them, the types in the model file's metadata
        save_checkpoint(target, params=params, config=config, tokenizer=tokenizer, weights=weights)
    else:
        save_checkpoint(target, params=params, config=config, tokenizer=tokenizer)
    from odin.blueprint import Blueprint

    return {"path": target, "n_params": Blueprint(config.model).n_params, "weights": weights,
            "tokenizer": type(tokenizer).__name__, "config": config.model}


# ------------------------------------------------------------------ command line
def _cmd_export(args: argparse.Namespace) -> int:
    def action() -> str:
        summary = export_gguf(args.checkpoint, args.file, args.type)
        return (f"exported {summary['n_params']:,} parameters ({summary['bytes'] / 2**20:.2f} MiB, "
                f"{summary['type']}) to {summary['path']} (llama.cpp architecture {ARCH})")

    return run_command("export gguf", action)


def _cmd_import(args: argparse.Namespace) -> int:
    def action() -> str:
        summary = import_gguf(args.file, args.out)
        model = summary["config"]
        return (f"imported {summary['n_params']:,} parameters ({model.n_layer} layers, d_model {model.d_model}, "
                f"{model.n_head} heads, context {model.context}, vocab {model.vocab_size}, "
                f"{summary['weights'].describe()}, {summary['tokenizer']}) into {summary['path']}")

    return run_command("import gguf", action)


def add_export_parser(export_subparsers: "argparse._SubParsersAction") -> None:
    parser = export_subparsers.add_parser(
        "gguf", help="a GGUF file for llama.cpp (gpt2 architecture, GPT with learned positions)",
        description="Write a checkpoint as a GGUF file of llama.cpp's gpt2 architecture, tokenizer included.")
    parser.add_argument("checkpoint", type=Path, help="ODIN checkpoint directory")
    parser.add_argument("file", type=Path, help="the .gguf file to write")
    parser.add_argument("--type", default=None, metavar="|".join(EXPORT_TYPES),
                        help="storage of the weight matrices: f32, f16, or a llama.cpp block type (quantized as "
                             "odin quantize does: the token embedding q8_0; norms, biases and positions stay f32); "
                             "default: what the checkpoint holds (a quantized checkpoint's own blocks, unchanged)")
    parser.set_defaults(func=_cmd_export)


def add_import_parser(import_subparsers: "argparse._SubParsersAction") -> None:
    parser = import_subparsers.add_parser(
        "gguf", help="a gpt2-architecture GGUF file (f32 or f16) as an ODIN checkpoint",
        description="Read a GGUF file of llama.cpp's gpt2 architecture into a new ODIN checkpoint directory.")
    parser.add_argument("file", type=Path, help="the .gguf file to read")
    parser.add_argument("out", type=Path, help="checkpoint directory to create")
    parser.set_defaults(func=_cmd_import)

