"""``odin export web CHECKPOINT OUT/``: a checkpoint as the two files the browser fetches.

``OUT/weights.bin``  every parameter as little-endian float32, in the parameter-block order
                     of the model's C code (the blueprint's order): csrc/gpt.c for arch "gpt"
                     (wte, wpe, h.0.ln1_w ... lnf_b[, wab]), csrc/rwkv.c for arch "rwkv"
                     (emb, ln0_w, ln0_b, h.0.ln1_w ... h.L-1.ffn_value_w, ln_out_w, ln_out_b)
                     — the bytes are copied straight into the wasm model's parameter block;
``OUT/model.json``   what the bytes mean and everything else the page needs:

    format, format_version     "odin-web", 1
    odin_version, created, source {checkpoint, step}
    model                      the checkpoint's [model] config (arch, vocab_size, context,
                               n_layer, n_head, d_model, d_ffn, ln_eps, positions, abacus, ...);
                               arch is always present and d_ffn is the actual MLP / channel-mix
                               width (the config's 0 = "4 x d_model" resolved)
    n_params, tensors          [{name, offset, shape}] offsets in floats
    weights                    {file, dtype "float32", byte_order "little", bytes, sha256}
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


def export_web(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, examples: int = 1024,
               demo_prompts: int = 8, seed: int = 0, data_dir: Optional[str | os.PathLike[str]] = None) -> dict:
    """Write OUT/weights.bin and OUT/model.json from a checkpoint directory; returns model.json's dict."""
    from odin.checkpoint_io import CheckpointError, load_checkpoint, pack_parameters
    from odin.tokenizers import CharTokenizer

    try:
        ckpt = load_checkpoint(checkpoint)
        blueprint = ckpt.blueprint()
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        raise ExportError(f"cannot read checkpoint {checkpoint}: {error}") from None
    model_cfg = dict(ckpt.config["model"])
    arch = model_cfg.get("arch", "gpt")
    if arch not in WEB_ARCHS:
        raise ExportError(f"{checkpoint}: [model].arch = {arch!r}; the web runtime runs {', '.join(map(repr, WEB_ARCHS))}")
    model_cfg["arch"] = arch
    model_cfg["d_ffn"] = int(blueprint.d_ff)
    block = pack_parameters(ckpt.params, blueprint)
    if not np.isfinite(block).all():
        raise ExportError(f"{checkpoint}: the weights contain NaN or Inf")
    tokenizer = ckpt.tokenizer
    abacus = None
    if int(model_cfg.get("abacus", 0) or 0):
        if not isinstance(tokenizer, CharTokenizer):
            raise ExportError(f"{checkpoint}: Abacus embeddings need the char tokenizer")
        abacus = {"digit_first": tokenizer.encode("0")[0], "sep_id": tokenizer.encode("=")[0],
                  "next": model_cfg.get("abacus_answer", "place") == "next"}

    optimizer = ckpt.optimizer
    trainer_state = dict(optimizer.state) if optimizer is not None else {}
    step = int(optimizer.step) if optimizer is not None else None
    settings = (trainer_state.get("dataset") or {}).get("settings")
    task = _task(settings)
    train_examples, demo = _examples(trainer_state, task, int(examples), int(demo_prompts), seed,
                                     Path(data_dir) if data_dir else None)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = block.astype("<f4").tobytes()
    tmp = out / (WEIGHTS_FILE + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out / WEIGHTS_FILE)

    offsets, tensors = 0, []
    for name, shape in blueprint.param_shapes():
        tensors.append({"name": name, "offset": offsets, "shape": list(shape)})
        offsets += int(np.prod(shape))
    train_cfg = ckpt.config.get("train", {}) or {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "odin_version": _odin_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"checkpoint": Path(checkpoint).resolve().name, "step": step},
        "model": model_cfg,
        "n_params": int(block.size),
        "tensors": tensors,
        "weights": {"file": WEIGHTS_FILE, "dtype": "float32", "byte_order": "little", "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()},
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


def load_export(out_dir: str | os.PathLike[str]) -> tuple[dict, np.ndarray]:
    """(model.json, weights as float32) of an export, with the sha256 and size checked."""
    out = Path(out_dir)
    manifest = json.loads((out / MODEL_FILE).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{out / MODEL_FILE}: not an ODIN web export (format {manifest.get('format')!r})")
    data = (out / manifest["weights"]["file"]).read_bytes()
    if len(data) != manifest["weights"]["bytes"] or hashlib.sha256(data).hexdigest() != manifest["weights"]["sha256"]:
        raise ExportError(f"{out / manifest['weights']['file']}: size or sha256 does not match {MODEL_FILE}")
    return manifest, np.frombuffer(data, dtype="<f4").astype(np.float32)
