"""``odin export web CHECKPOINT OUT/ [--quant TYPE]``: a checkpoint as the two files the
browser fetches.

``OUT/weights.bin``  float32 export (format_version 1): every parameter as little-endian
                     float32, in the parameter-block order of the model's C code (the
                     blueprint's order): csrc/gpt.c for arch "gpt" (wte, wpe, h.0.ln1_w ...
                     lnf_b[, wab]), csrc/rwkv.c for arch "rwkv" (emb, ln0_w, ln0_b, h.0.ln1_w
                     ... h.L-1.ffn_value_w, ln_out_w, ln_out_b) — the bytes are copied straight
                     into the wasm model's parameter block.
                     Quantized export (format_version 2, ``--quant q8_0|q4_0|q4_1|q5_0|q5_1``
                     or a quantized checkpoint): two sections, the float32 block of the
                     quantized model (its vectors, position and Abacus tables: what
                     odin_*_params holds) and then its quantized block (llama.cpp's 32-weight
                     blocks of every matrix and of the token embedding: what odin_*_qblock
                     holds), each copied straight into the wasm model made by odin_*_create_q;
``OUT/model.json``   what the bytes mean and everything else the page needs:

    format, format_version     "odin-web", 1 (float32) or 2 (quantized)
    odin_version, created, source {checkpoint, step}
    model                      the checkpoint's [model] config (arch, vocab_size, context,
                               n_layer, n_head, d_model, d_ffn, ln_eps, positions, abacus, ...);
                               arch is always present and d_ffn is the actual MLP / channel-mix
                               width (the config's 0 = "4 x d_model" resolved)
    n_params                   every weight of the model (float32 and quantized alike)
    tensors                    [{name, offset, shape}] offsets in floats; a quantized export adds
                               "type" to each ("f32", "q8_0", ...): an f32 tensor's offset is in
                               floats into the float32 section, a quantized one's in bytes into
                               the quantized section (as odin_*_tensor_info gives them)
    weights                    {file, dtype, byte_order "little", bytes, sha256}; dtype "float32",
                               or "quantized" for the two sections
    quant                      null (float32), or {matrix, embed (the block types of the
                               matrices and of the token embedding / tied head), float_params,
                               float_bytes (the first section), quant_bytes (the second),
                               source: "quantized at export" | "quantized checkpoint"}
    tokenizer                  the checkpoint's tokenizer.json, embedded (char or HF BPE)
    special                    {pad, bos, end} token ids
    abacus                     {digit_first, sep_id, next} when model.abacus > 0, else null (next:
                               answer tokens carry the place they predict, odin/abacus.py)
    train                      optimiser settings of the run (defaults for in-page training)
    task                       {kind: "arithmetic", ops, min_digits, max_digits, reverse_answer,
                               prompt_width (operands are padded to it when asking; 0 = as typed)}
                               when the run trained on an arithmetic dataset, else null
    examples                   up to --examples {prompt, answer} pairs from the run's train
                               split (what "train N steps here" trains on)
    demo_prompts               a few test-split prompts for the demo page

model.json is written last, so a half-written export is never loadable. The sha256 of
weights.bin is also the key under which the browser caches the weights (IndexedDB).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np

from odin.data.arithmetic import prompt_width_of

FORMAT = "odin-web"
FORMAT_VERSION = 1
QUANT_FORMAT_VERSION = 2  # a quantized export: a float32 section, then the quantized blocks
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.bin"
ARITH_OPS = {"add", "sub", "mul", "div"}
WEB_ARCHS = ("gpt", "rwkv")  # what web/odin.js can run (its ARCHS table)


class ExportError(ValueError):
    """The checkpoint cannot be exported for the web runtime."""


def _task(settings: Any) -> Optional[dict]:
    if not isinstance(settings, dict):
        return None
    ops = settings.get("ops")
    if not isinstance(ops, list) or not ops or not set(ops) <= ARITH_OPS or "max_digits" not in settings:
        return None
    return {"kind": "arithmetic", "ops": list(ops), "min_digits": int(settings.get("min_digits", 1)),
            "max_digits": int(settings["max_digits"]), "reverse_answer": bool(settings.get("reverse_answer", False)),
            "prompt_width": prompt_width_of(settings)}


def _examples(trainer_state: dict, task: Optional[dict], n: int, n_demo: int, seed: int,
              data_dir: Optional[Path]) -> tuple[list[dict], list[str]]:
    """(training examples, demo prompts) from the run's dataset, or generated for its task."""
    from odin.data.dataset import load_split

    rng = random.Random(seed)
    directory = data_dir or (Path(trainer_state["data_dir"]) if trainer_state.get("data_dir") else None)
    train, test = [], []
    if directory is not None and (directory / "dataset.json").is_file():
        try:
            train = load_split(directory, "train", verify=False)
            test = load_split(directory, "test", verify=False)
        except (OSError, ValueError):
            train, test = [], []
    if not train and task is not None:
        from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples

        config = ArithmeticConfig(ops=tuple(task["ops"]), min_digits=task["min_digits"],
                                  max_digits=task["max_digits"], reverse_answer=task["reverse_answer"])
        generated = sample_unique_examples(config, n + n_demo, seed=f"odin-web-export:{seed}")
        train, test = generated[:n], generated[n:]
    train_pick = rng.sample(train, min(n, len(train))) if train else []
    demo_pick = rng.sample(test or train, min(n_demo, len(test or train))) if (test or train) else []
    return ([{"prompt": e.prompt, "answer": e.answer} for e in train_pick], [e.prompt for e in demo_pick])


def _embed_type() -> str:
    """The token embedding's (tied head's) type in a quantized export: odin.quant's default
    when it names one, else q8_0 (the embedding is also the output head: 4-bit there costs
    the most accuracy for the least memory)."""
    import odin.quant

    value = getattr(odin.quant, "DEFAULT_EMBED_TYPE", None)
    return value if isinstance(value, str) else "q8_0"


def check_quant(quant: Optional[str]) -> Optional[str]:
    """The --quant value, normalised ("Q8_0" -> "q8_0"); ExportError naming it when it is not a block type."""
    if quant is None:
        return None
    from odin.quant import QUANT_TYPES

    key = str(quant).strip().lower()
    if key not in QUANT_TYPES:
        raise ExportError(f"quant: unknown quantization type {quant!r}: expected one of {', '.join(QUANT_TYPES)}")
    return key


def _check_block_dims(model_cfg: dict, d_ffn: int, quant: str, checkpoint: Any) -> None:
    """Every quantized row (a matrix's or the embedding's) must be whole 32-weight blocks:
    their lengths are d_model and the MLP / channel-mix width."""
    for name, value in (("d_model", int(model_cfg["d_model"])), ("d_ffn", int(d_ffn))):
        if value % 32:
            raise ExportError(f"quant: {checkpoint}: {name} = {value} is not a multiple of 32, and a {quant} block "
                              f"holds 32 weights of one row; export it without --quant (float32)")


def _load_model(checkpoint: Any) -> Any:
    from odin.checkpoint import load_model_checkpoint
    from odin.checkpoint_io import CheckpointError
    from odin.native import OdinError

    try:
        return load_model_checkpoint(checkpoint, with_optimizer=False)
    except (CheckpointError, FileNotFoundError, ValueError, NotImplementedError, OdinError) as error:
        raise ExportError(f"cannot read checkpoint {checkpoint}: {error}") from None


def _sections(model: Any, blueprint: Any, quant: Optional[str], checkpoint: Any) -> tuple[Any, list, Optional[dict]]:
    """(the model to export, [(name, shape, type, offset)] in blueprint order, the quant record or None)."""
    from odin.model import WeightTypes
    from odin.native import OdinError
    from odin.quant import QuantError
    from odin.quant.convert import quantized_copy

    source = None
    if model.is_quantized:
        have = model.weights.matrix
        if quant is not None and quant != have:
            raise ExportError(f"quant: {checkpoint} is quantized already, as {model.weights.describe()}: export it "
                              f"without --quant (its blocks as they are) or quantize its float32 original as {quant}")
        source = "quantized checkpoint"
    elif quant is not None:
        try:
            model = quantized_copy(model, WeightTypes(matrix=quant, embed=_embed_type()))
        except (QuantError, OdinError, ValueError) as error:
            raise ExportError(f"quant: {checkpoint}: {error}") from None
        source = "quantized at export"
    where: dict[str, tuple[str, int]] = {name: ("f32", off) for name, off, _ in model.tensor_layout}
    where.update({name: (tname, off) for name, off, _, tname in model.quant_layout})
    tensors = []
    for name, shape in blueprint.param_shapes():
        if name not in where:
            raise ExportError(f"{checkpoint}: the model has no tensor {name!r} of the config's layout")
        tensors.append((name, tuple(shape), *where[name]))
    if source is None:
        return model, tensors, None
    record = {"matrix": model.weights.matrix, "embed": model.weights.embed, "float_params": int(model.n_params),
              "float_bytes": 4 * int(model.n_params), "quant_bytes": int(model.qblock.nbytes), "source": source}
    return model, tensors, record


def _write_pieces(path: Path, pieces: list) -> tuple[int, str]:
    """Write the byte pieces to path (a temporary file renamed into place); (bytes, sha256)."""
    digest, n = hashlib.sha256(), 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for piece in pieces:
            view = memoryview(np.ascontiguousarray(piece)).cast("B")
            for i in range(0, len(view), 1 << 24):
                chunk = view[i:i + (1 << 24)]
                f.write(chunk)
                digest.update(chunk)
            n += len(view)
    os.replace(tmp, path)
    return n, digest.hexdigest()


def export_web(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, examples: int = 1024,
               demo_prompts: int = 8, seed: int = 0, data_dir: Optional[str | os.PathLike[str]] = None,
               quant: Optional[str] = None) -> dict:
    """Write OUT/weights.bin and OUT/model.json from a checkpoint directory; returns model.json's dict.

    quant: None (float32; a quantized checkpoint keeps its blocks) or a block type ("q8_0",
    "q4_0", "q4_1", "q5_0", "q5_1"): the matrices in that type, the token embedding (tied
    head) in odin.quant's default embedding type, vectors float32. Nothing is written when
    the checkpoint cannot be exported (an unknown type, a row length that is not whole
    32-weight blocks, a checkpoint quantized to another type)."""
    from odin.blueprint import Blueprint
    from odin.config import ModelConfig
    from odin.tokenizers import CharTokenizer

    quant = check_quant(quant)
    config_file = Path(checkpoint) / "config.json"
    loaded = _load_model(checkpoint)
    try:
        raw_config = json.loads(config_file.read_text(encoding="utf-8"))
        model_cfg = dict(raw_config["model"])
        blueprint = Blueprint(ModelConfig.from_dict(model_cfg))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"cannot read checkpoint {checkpoint}: {config_file}: {error}") from None
    arch = model_cfg.get("arch", "gpt")
    if arch not in WEB_ARCHS:
        raise ExportError(f"{checkpoint}: [model].arch = {arch!r}; the web runtime runs {', '.join(map(repr, WEB_ARCHS))}")
    model_cfg["arch"] = arch
    model_cfg["d_ffn"] = int(blueprint.d_ff)
    if quant is not None and not loaded.model.is_quantized:
        _check_block_dims(model_cfg, blueprint.d_ff, quant, checkpoint)
    from_quantized = loaded.model.is_quantized
    model, tensors, quant_record = _sections(loaded.model, blueprint, quant, checkpoint)
    loaded.model = None  # the float32 original, when a quantized copy was made: free it now
    tokenizer = loaded.tokenizer
    abacus = None
    if int(model_cfg.get("abacus", 0) or 0):
        if not isinstance(tokenizer, CharTokenizer):
            raise ExportError(f"{checkpoint}: Abacus embeddings need the char tokenizer")
        abacus = {"digit_first": tokenizer.encode("0")[0], "sep_id": tokenizer.encode("=")[0],
                  "next": model_cfg.get("abacus_answer", "place") == "next"}

    trainer_state = dict(loaded.trainer_state)
    # a quantized checkpoint keeps the step it was made at in its model file (it has no optimizer file)
    step = int(loaded.step) if loaded.optimizer_saved or from_quantized else None
    settings = (trainer_state.get("dataset") or {}).get("settings")
    task = _task(settings)
    train_examples, demo = _examples(trainer_state, task, int(examples), int(demo_prompts), seed,
                                     Path(data_dir) if data_dir else None)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pieces = [model.params.astype("<f4", copy=False)]
    if quant_record is not None:
        pieces.append(model.qblock)
    n_bytes, sha256 = _write_pieces(out / WEIGHTS_FILE, pieces)

    if quant_record is None:
        manifest_tensors = [{"name": n, "offset": off, "shape": list(shape)} for n, shape, _, off in tensors]
    else:
        manifest_tensors = [{"name": n, "offset": off, "shape": list(shape), "type": t} for n, shape, t, off in tensors]
    train_cfg = raw_config.get("train", {}) or {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if quant_record is None else QUANT_FORMAT_VERSION,
        "odin_version": _odin_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"checkpoint": Path(checkpoint).resolve().name, "step": step},
        "model": model_cfg,
        "n_params": int(blueprint.n_params),
        "tensors": manifest_tensors,
        "weights": {"file": WEIGHTS_FILE, "dtype": "float32" if quant_record is None else "quantized",
                    "byte_order": "little", "bytes": n_bytes, "sha256": sha256},
        "quant": quant_record,
        "tokenizer": json.loads(tokenizer.to_json()),
        "special": {"pad": tokenizer.pad_id, "bos": tokenizer.bos_id, "end": tokenizer.end_id},
        "abacus": abacus,
        "train": {k: train_cfg[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip",
                                            "batch_size", "loss_on") if k in train_cfg},
        "task": task,
        "examples": train_examples,
        "demo_prompts": demo,
    }
    tmp = out / (MODEL_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MODEL_FILE)
    return manifest


def _odin_version() -> str:
    try:
        from odin.native import version

        return version()
    except Exception:  # the export does not need the native library
        from odin import __version__

        return str(__version__)


def read_export(out_dir: str | os.PathLike[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    """(model.json, the float32 section, the quantized section as uint8 — empty for a float32
    export) of an export, with the sha256 and the sizes checked."""
    out = Path(out_dir)
    manifest = json.loads((out / MODEL_FILE).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{out / MODEL_FILE}: not an ODIN web export (format {manifest.get('format')!r})")
    data = (out / manifest["weights"]["file"]).read_bytes()
    if len(data) != manifest["weights"]["bytes"] or hashlib.sha256(data).hexdigest() != manifest["weights"]["sha256"]:
        raise ExportError(f"{out / manifest['weights']['file']}: size or sha256 does not match {MODEL_FILE}")
    quant = manifest.get("quant")
    if not quant:
        return manifest, np.frombuffer(data, dtype="<f4").astype(np.float32), np.zeros(0, np.uint8)
    fb, qb = int(quant["float_bytes"]), int(quant["quant_bytes"])
    if fb + qb != len(data):
        raise ExportError(f"{out / manifest['weights']['file']}: {len(data)} bytes, model.json's sections {fb} + {qb}")
    return (manifest, np.frombuffer(data[:fb], dtype="<f4").astype(np.float32),
            np.frombuffer(data[fb:], dtype=np.uint8).copy())


def load_export(out_dir: str | os.PathLike[str]) -> tuple[dict, np.ndarray]:
    """(model.json, weights as float32) of an export, with the sha256 and size checked; for a
    quantized export the float32 section (read_export has both sections)."""
    manifest, floats, _ = read_export(out_dir)
    return manifest, floats
