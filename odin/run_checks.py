"""What a training run checks before its folder is touched: the thread count, a checkpoint it
resumes (complete, written by odin train, at a step inside the run, with the run's own
settings) and a checkpoint whose weights start a new run (tokenizer of the datasets).

Each problem is a ValueError / FileNotFoundError of one line that says what to do.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from odin.checkpoint import LoadedModel, load_model_checkpoint
from odin.config import RunConfig, TrainConfig
from odin.spheres import N_SPHERES, default_threads
from odin.tokenizers import CharTokenizer

MAX_THREADS = 64  # the C trainer's limit (csrc/spheres.c MAX_THREADS)


def resolve_threads(requested: Optional[int]) -> int:
    """The thread count a run uses: 1..MAX_THREADS as asked, or 0/None for automatic
    (min(12, cores this process may use)). The one rule for `odin train`, configs and the
    dashboard; anything else is a ValueError naming the accepted values."""
    if requested is None or (not isinstance(requested, bool) and requested == 0):
        return default_threads()
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) \
            or not 1 <= requested <= MAX_THREADS:
        raise ValueError(f"threads must be 0 (automatic: min({N_SPHERES}, cores)) or 1..{MAX_THREADS}, "
                         f"got {requested!r}")
    return int(requested)


def _differences(given: Mapping[str, Any], saved: Mapping[str, Any], table: str,
                 ignore: tuple[str, ...] = ()) -> list[str]:
    return [f"[{table}].{key} = {given.get(key)!r} (the run has {saved.get(key)!r})"
            for key in sorted(set(given) | set(saved)) if key not in ignore and given.get(key) != saved.get(key)]


def _require_recorded_settings(ckpt_dir: Path) -> None:
    """odin train records every [train] setting in config.json; where some are gone (a damaged
    or hand-edited file), RunConfig would fill them with defaults and the resumed run would
    silently train on other settings (another step count, batch size, schedule)."""
    path = ckpt_dir / "config.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("train")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise ValueError(f"cannot resume: {path} is not readable JSON ({exc})") from None
    missing = [f.name for f in fields(TrainConfig) if not isinstance(recorded, Mapping) or f.name not in recorded]
    if missing:
        raise ValueError(f"cannot resume: {path} does not record the run's [train] settings "
                         f"({', '.join(missing)}); start a new run from its weights with --init-from {ckpt_dir}")


def resume_state(ckpt_dir: Path, run_config: Optional[RunConfig]) -> LoadedModel:
    """The checkpoint a resume continues from, checked: weights and optimizer present, a
    trainer state odin train wrote, and (when a config is given) the run's own settings."""
    from odin.quant.checkpoint import refuse_training

    for candidate in (ckpt_dir, ckpt_dir.parent):  # the run's checkpoint, or the folder named if it is one
        refuse_training(candidate, "cannot resume")
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"cannot resume: no checkpoint in {ckpt_dir} (start the run without --resume)")
    loaded = load_model_checkpoint(ckpt_dir, with_optimizer=True)
    if not loaded.has_optimizer:
        raise ValueError(f"cannot resume: {ckpt_dir / 'optimizer.safetensors'} is missing (the checkpoint holds "
                         f"weights only); start a new run from its weights with --init-from {ckpt_dir}")
    sampler_state = loaded.trainer_state.get("sampler")
    if not isinstance(sampler_state, Mapping):
        made_by = "odin-pipeline" if "pipeline" in loaded.trainer_state else "something other than odin train"
        raise ValueError(f"cannot resume: {ckpt_dir} has no batch sampler position in its trainer state (it was "
                         f"written by {made_by}); start a new run from its weights with --init-from {ckpt_dir}")
    saved = loaded.run_config
    _require_recorded_settings(ckpt_dir)
    if run_config is not None:  # a run's settings are its own: asking for others is refused, not applied
        if run_config.model != saved.model:
            raise ValueError(f"cannot resume: {ckpt_dir} holds a different model config ({saved.model}) than "
                             f"requested ({run_config.model})")
        changed = _differences(run_config.train.to_dict(), saved.train.to_dict(), "train", ignore=("threads",))
        if changed:
            raise ValueError(f"cannot resume with other settings than the run's: {'; '.join(changed)} "
                             f"(a resumed run keeps its own; drop them, or start a new run with --init-from "
                             f"{ckpt_dir})")
    total = saved.train.steps
    if not 0 <= loaded.step < total:
        state = "finished" if loaded.step == total else "past its end"
        raise ValueError(f"cannot resume: {ckpt_dir} is at step {loaded.step} of {total} ({state}); nothing is "
                         f"left to train (start a longer run from its weights with --init-from {ckpt_dir})")
    return loaded


def init_weights_from(path: str | Path, tokenizer: CharTokenizer) -> LoadedModel:
    """Weights (no optimizer state) of any ODIN checkpoint, for a new run; its tokenizer must
    be the one the datasets are written in; quantized weights cannot start a run."""
    from odin.quant.checkpoint import refuse_training

    refuse_training(path, "--init-from")
    loaded = load_model_checkpoint(path, with_optimizer=False)
    theirs = loaded.tokenizer
    if not isinstance(theirs, CharTokenizer) or theirs.vocab_size != tokenizer.vocab_size \
            or theirs.decode(list(range(theirs.vocab_size))) != tokenizer.decode(list(range(tokenizer.vocab_size))):
        kind = type(theirs).__name__.replace("Tokenizer", "")
        raise ValueError(f"--init-from {path}: its tokenizer ({kind}, {theirs.vocab_size} tokens) is not the "
                         f"char tokenizer ({tokenizer.vocab_size} tokens) the dataset is written in; a model with "
                         f"another tokenizer trains on text with odin-pipeline")
    return loaded


def check_same_dataset(recorded: Any, manifest: Mapping[str, Any], data_dir: Path, ckpt_dir: Path) -> None:
    if not isinstance(recorded, Mapping):
        return
    here = {"seed": manifest.get("seed"), "settings": manifest.get("settings")}
    if {"seed": recorded.get("seed"), "settings": recorded.get("settings")} != here:
        raise ValueError(f"cannot resume: {data_dir} is not the dataset the run in {ckpt_dir.parent} was trained "
                         f"on (its seed or build settings differ); resume on the run's own dataset")


def _plain(value: Any) -> Any:
    """JSON-shaped (tuples become lists) so a spec and a manifest compare equal."""
    import json

    return json.loads(json.dumps(value))


_REQUESTED = ("n_examples", "n_heldout", "mix")  # recorded under the manifest's "requested"
_ZERO_WHEN_ABSENT = ("prompt_spaces", "prompt_zeros", "answer_width")  # recorded only when set


def dataset_spec_differences(spec: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    """How a built dataset (its manifest) differs from the build spec a preset names: one
    ``key: built X, preset Y`` entry per setting the spec gives that the dataset does not have."""
    found: list[str] = []

    def compare(key: str, built: Any, wanted: Any) -> None:
        if _plain(built) != _plain(wanted):
            found.append(f"{key}: built {_plain(built)!r}, preset {_plain(wanted)!r}")

    settings = manifest.get("settings") if isinstance(manifest.get("settings"), Mapping) else {}
    requested = manifest.get("requested") if isinstance(manifest.get("requested"), Mapping) else {}
    mixed = "tasks" in spec
    compare("generator", manifest.get("generator"), "mixed" if mixed else "arithmetic")
    for key, wanted in spec.items():
        if key == "seed":
            compare(key, manifest.get("seed"), wanted)
        elif key in _REQUESTED:
            compare(key, requested.get(key), wanted)
        elif key == "tasks" and isinstance(wanted, Mapping):
            built_tasks = settings.get("tasks") if isinstance(settings.get("tasks"), Mapping) else {}
            compare("tasks", sorted(built_tasks), sorted(wanted))
            for family, options in wanted.items():
                for option, value in (options or {}).items():
                    compare(f"{family}.{option}", (built_tasks.get(family) or {}).get(option), value)
        elif key == "tasks":
            compare("tasks", sorted(settings.get("tasks") or {}), sorted(wanted))
        elif key in ("jobs", "progress"):  # how it is built, not what
            continue
        else:
            compare(key, settings.get(key, 0 if key in _ZERO_WHEN_ABSENT else None), wanted)
    return found
