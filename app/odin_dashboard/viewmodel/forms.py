"""The training form (preset, dataset, threads, lr, batch, steps) and what it implies:
the RunConfig to train, whether the dataset folder holds a dataset, a model summary,
and the problems that keep Start disabled. No GUI import."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from odin.blueprint import Blueprint, format_bytes
from odin.config import PRESETS, ConfigError, RunConfig, preset_config, preset_data_spec
from odin.data.arithmetic import prompt_width_of
from odin.spheres import N_SPHERES, default_threads
from odin.tokenizers import CHAR_VOCAB_SIZE

DEFAULT_PRESET = "arith-3digit"
DEFAULT_DATA_DIR = "data/arith-3digit"
DEFAULT_RUN_DIR = "runs/dashboard"
MAX_THREADS = 64  # the C trainer's limit


@dataclass
class TrainForm:
    preset: str = DEFAULT_PRESET
    data_dir: str = DEFAULT_DATA_DIR
    run_dir: str = DEFAULT_RUN_DIR
    threads: int = field(default_factory=default_threads)
    lr: float = 2e-3
    batch_size: int = 128
    steps: int = 4000
    eval_every: int = 1000
    resume: bool = False  # continue from run_dir/checkpoint


def preset_names() -> list[str]:
    return list(PRESETS)


def form_with_preset(form: TrainForm, preset: str) -> TrainForm:
    """The form with the preset's training defaults (lr, batch, steps, eval interval) and,
    for a preset that names its dataset, that dataset's folder (data/<preset>, as `odin train`)."""
    train = preset_config(preset, vocab_size=CHAR_VOCAB_SIZE).train
    data_dir = f"data/{preset}" if preset_data_spec(preset) is not None else form.data_dir
    return dataclasses.replace(form, preset=preset, data_dir=data_dir, lr=train.lr, batch_size=train.batch_size,
                               steps=train.steps, eval_every=train.eval_every)


def dataset_build_spec(preset: str) -> dict[str, Any]:
    """What *Build* writes into an empty dataset folder: the preset's own dataset, or the
    default recipe's (3-digit addition, reversed answers) for presets that name none."""
    return preset_data_spec(preset) or preset_data_spec(DEFAULT_PRESET) or {}


def describe_build_spec(spec: dict[str, Any]) -> str:
    if "tasks" in spec:
        return f"a mixed reasoning set ({', '.join(map(str, spec['tasks']))})"
    ops = ",".join(spec.get("ops", ["?"]))
    reverse = ", reversed answers" if spec.get("reverse_answer") else ""
    return f"{spec.get('n_examples', '?'):,} {ops} problems up to {spec.get('max_digits', '?')} digits{reverse}"


def is_default_data_dir(form: TrainForm) -> bool:
    """Whether the data folder is where `odin train` would build the preset's dataset
    (data/<preset>, or the default recipe's folder), so --autostart may build it too."""
    folder = Path(form.data_dir)
    return folder in (Path(f"data/{form.preset}"), Path(DEFAULT_DATA_DIR))


def build_dataset_for(folder: str | Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Build the dataset `spec` describes in `folder` (runs in a background task)."""
    from odin.data import dataset

    if "tasks" in spec:
        return dataset.build_mixed_dataset(folder, **spec)
    return dataset.build_dataset(folder, **spec)


def run_config_from_form(form: TrainForm, base: Optional[RunConfig] = None) -> RunConfig:
    """The preset + the form's overrides; or, when continuing a loaded checkpoint (`base`,
    its config), that run's own settings with only the thread count from the form: a
    resumed run keeps its schedule (odin train refuses other settings on --resume). The
    reasoning sets use the char tokenizer, so a preset's vocabulary is always the char
    vocabulary (odin-100m's 32k BPE vocab does not apply here)."""
    if base is not None:
        return dataclasses.replace(base, train=dataclasses.replace(base.train, threads=int(form.threads)))
    base = preset_config(form.preset, vocab_size=CHAR_VOCAB_SIZE)
    train = dataclasses.replace(base.train, lr=float(form.lr), batch_size=int(form.batch_size),
                                steps=int(form.steps), eval_every=int(form.eval_every),
                                threads=int(form.threads))
    return dataclasses.replace(base, train=train)


@dataclass(frozen=True)
class DatasetStatus:
    ready: bool
    can_build: bool  # the folder has no dataset; offer to build one there
    message: str
    reverse_answer: bool = False
    examples: int = 0
    prompt_width: int = 0  # the set's prompt_zeros: chat prompts get their operands padded to it


def dataset_status(path: str | Path) -> DatasetStatus:
    folder = Path(path).expanduser()
    if not str(path).strip():
        return DatasetStatus(False, False, "choose a dataset folder")
    manifest_path = folder / "dataset.json"
    if not folder.exists():
        return DatasetStatus(False, True, f"{folder} does not exist - build a dataset there?")
    if not folder.is_dir():
        return DatasetStatus(False, False, f"{folder} is a file, not a folder")
    if not manifest_path.is_file() and (folder / "pipeline.db").is_file():
        # a folder odin-pipeline trains on: its state shows under Pipeline; it is not a place
        # to build a reasoning set (and the pipeline trains its own model there)
        return DatasetStatus(False, False, f"{folder} is an odin-pipeline folder: its progress is shown under "
                                           f"Pipeline; to train here, choose a reasoning set")
    if not manifest_path.is_file():
        return DatasetStatus(False, True, f"no dataset in {folder} (no dataset.json) - build one?")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        splits = manifest["splits"]
        settings = manifest.get("settings", {})
        train_count = int(splits["train"]["count"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return DatasetStatus(False, False, f"{manifest_path} is not a readable dataset manifest ({error})")
    reverse = bool(settings.get("reverse_answer", False))
    if "ops" in settings:  # an arithmetic set
        what = (f"{','.join(settings['ops'])}, {settings.get('min_digits', '?')}-"
                f"{settings.get('max_digits', '?')} digits")
    else:  # e.g. a mixed set: name its tasks
        tasks = manifest.get("tasks")
        what = str(manifest.get("generator", "?"))
        if isinstance(tasks, list):
            what += ": " + ", ".join(map(str, tasks))
    message = f"{train_count:,} training examples ({what}" + (", reversed answers)" if reverse else ")")
    return DatasetStatus(True, False, message, reverse, train_count, prompt_width_of(settings))


@dataclass(frozen=True)
class FormCheck:
    problems: list[str]
    dataset: DatasetStatus
    run_config: Optional[RunConfig]
    model_summary: str

    @property
    def ok(self) -> bool:
        return not self.problems


def model_summary(config: RunConfig) -> str:
    blueprint = Blueprint(config.model)
    params = blueprint.n_params
    # parameters, gradients, 2 AdamW moments and one gradient buffer per sphere slot
    weights_bytes = 4 * params * (4 + N_SPHERES)
    m = config.model
    shape = (f"RWKV-4 L={m.n_layer} d={m.d_model} ffn={blueprint.d_ff}" if m.arch == "rwkv"
             else f"GPT L={m.n_layer} d={m.d_model} heads={m.n_head}")
    return (f"{params / 1e6:.2f}M params, {shape} ctx={m.context}; "
            f"~{format_bytes(weights_bytes)} for weights + optimizer + 12 gradient buffers")


def check_form(form: TrainForm, base: Optional[RunConfig] = None) -> FormCheck:
    problems: list[str] = []
    dataset = dataset_status(form.data_dir)
    if not dataset.ready:
        problems.append(dataset.message)
    if not str(form.run_dir).strip():
        problems.append("choose a run folder")
    if not 1 <= int(form.threads) <= MAX_THREADS:
        problems.append(f"threads must be in 1..{MAX_THREADS}")
    config: Optional[RunConfig] = None
    summary = ""
    try:
        config = run_config_from_form(form, base if form.resume else None)
        summary = model_summary(config)
    except (ConfigError, ValueError) as error:
        problems.append(str(error))
    if form.resume and base is None:
        problems.append("load a checkpoint to continue it (or untick 'continue it')")
    return FormCheck(problems, dataset, config, summary)
