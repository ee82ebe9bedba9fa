"""Model and training configuration: dataclasses, presets, TOML loading, JSON round trip.

A config file is TOML with an optional top-level ``preset = "name"`` and two optional
tables, ``[model]`` and ``[train]``, whose keys override the preset (or the dataclass
defaults when there is no preset)::

    preset = "arith-3digit"
    [model]
    n_layer = 3
    [train]
    steps = 4000

Unknown keys and out-of-range values raise :class:`ConfigError` naming the table, the
key and what is allowed. The derived shapes live in :mod:`odin.blueprint` (re-exported here).
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from odin.tokenizers import CHAR_VOCAB_SIZE


class ConfigError(ValueError):
    """A config value, key or file that cannot be accepted."""


# ---------------------------------------------------------------------------------------
# Presets: edit here. "model"/"train" hold overrides of the dataclass defaults below.
# ---------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {  # ~0.42M parameters with the char vocabulary
        "model": {"n_layer": 2, "d_model": 128, "n_head": 4, "context": 64},
        "train": {"batch_size": 32, "steps": 1000, "lr": 1e-3},
    },
    "small": {  # ~3.2M
        "model": {"n_layer": 4, "d_model": 256, "n_head": 8, "context": 128},
        "train": {"batch_size": 32, "steps": 5000, "lr": 6e-4},
    },
    "medium": {  # ~10.7M
        "model": {"n_layer": 6, "d_model": 384, "n_head": 6, "context": 256},
        "train": {"batch_size": 32, "steps": 10000, "lr": 6e-4},
    },
    "odin-100m": {  # ~110M: GPT-2-small shape with a 32k BPE vocabulary
        "model": {"n_layer": 12, "d_model": 768, "n_head": 12, "context": 1024, "vocab_size": 32000},
        "train": {"batch_size": 8, "steps": 100000, "lr": 3e-4, "warmup_steps": 2000, "loss_on": "all"},
    },
    # The default recipe: 3-digit addition with digit-reversed answers (~0.6M parameters;
    # sequences are <= 14 tokens). Tuned on a 2-core machine: 4000 steps of 128 reach
    # 100% exact match on 2000 held-out test problems in about 2 minutes (docs/performance.md).
    "arith-3digit": {
        "data": {"seed": 1234, "n_examples": 120_000, "ops": ["add"], "max_digits": 3, "reverse_answer": True},
        "model": {"n_layer": 3, "d_model": 128, "n_head": 4, "context": 32},
        "train": {
            "batch_size": 128, "steps": 4000, "lr": 2e-3, "warmup_steps": 200,
            "eval_every": 1000, "eval_examples": 500, "checkpoint_every": 1000,
        },
    },
    # ---- RWKV-4 (arch "rwkv"): the same jobs on the recurrent architecture
    "rwkv-tiny": {  # ~0.45M with the char vocabulary
        "model": {"arch": "rwkv", "n_layer": 2, "d_model": 128, "n_head": 1, "context": 64},
        "train": {"batch_size": 32, "steps": 1000, "lr": 1e-3},
    },
    "odin-100m-rwkv": {  # ~117M: 12 layers of 768 with a 32k BPE vocabulary, beside odin-100m
        "model": {"arch": "rwkv", "n_layer": 12, "d_model": 768, "n_head": 1, "context": 1024,
                  "vocab_size": 32000},
        "train": {"batch_size": 8, "steps": 100000, "lr": 3e-4, "warmup_steps": 2000, "loss_on": "all"},
    },
    # the default recipe's data and budget on RWKV (docs/reasoning.md: exact match vs GPT)
    "arith-3digit-rwkv": {
        "data": {"seed": 1234, "n_examples": 120_000, "ops": ["add"], "max_digits": 3, "reverse_answer": True},
        "model": {"arch": "rwkv", "n_layer": 3, "d_model": 128, "n_head": 1, "context": 32},
        "train": {
            "batch_size": 128, "steps": 4000, "lr": 2e-3, "warmup_steps": 200,
            "eval_every": 1000, "eval_examples": 500, "checkpoint_every": 1000,
        },
    },
    # ---- the reasoning recipes (docs/reasoning.md has what each reached, and how long it took)
    # 2-digit x 2-digit multiplication (all 10,000 problems of 1-2 digit operands, split
    # 80/10/10), answers with the partial products (`39*46=` -> `39*6=234;39*40=1560;
    # 234+1560=1794#4971`, the final result reversed)
    "mul-2digit": {
        "data": {"seed": 5, "n_examples": 9000, "scratchpad": True, "reverse_answer": True, "n_heldout": 500,
                 "tasks": {"arith": {"ops": ["mul"], "min_digits": 1, "max_digits": 2}}},
        "model": {"n_layer": 3, "d_model": 128, "n_head": 4, "context": 64},
        "train": {"batch_size": 128, "steps": 5000, "lr": 2e-3, "warmup_steps": 200,
                  "eval_every": 1000, "eval_examples": 500, "checkpoint_every": 1000},
    },
    # a*x + b = c with small integers (algebra levels 1-3), answers with the worked steps
    "linear-eq": {
        "data": {"seed": 21, "n_examples": 40_000, "scratchpad": True,
                 "tasks": {"algebra": {"kinds": ["linear"], "min_level": 1, "max_level": 3}}},
        "model": {"n_layer": 3, "d_model": 128, "n_head": 4, "context": 96},
        "train": {"batch_size": 128, "steps": 5000, "lr": 2e-3, "warmup_steps": 200,
                  "eval_every": 1000, "eval_examples": 500, "checkpoint_every": 1000},
    },
    # the printed output of short generated Python programs (levels 1-3), answers with the
    # execution trace (each assignment with its values written in, a called function's
    # returned expression, then its result; the output after "#"), batches bucketed by length;
    # ALiBi attention biases instead of learned positions (a step's operands are near it, a
    # variable's latest value is its nearest assignment)
    "code-exec": {
        "data": {"seed": 22, "n_examples": 200_000, "n_heldout": 6000, "scratchpad": True,
                 "tasks": {"code": {"min_level": 1, "max_level": 3}}},
        "model": {"n_layer": 3, "d_model": 128, "n_head": 4, "context": 384, "positions": "alibi"},
        "train": {"batch_size": 64, "steps": 36000, "lr": 2e-3, "warmup_steps": 200, "length_buckets": 16,
                  "eval_every": 2000, "eval_examples": 300, "checkpoint_every": 2000},
    },
    # length generalisation: additions of at most 5 digits, scored on 8-digit ones. Abacus
    # digit-place embeddings with random place offsets; training operands written with
    # leading zeros to random widths up to 10 (so low and high places meet in one sequence
    # and attention learns to tell them apart) and asked with both operands at 10 digits;
    # answers of a fixed 10 digits (zeros in the high places) so where an answer ends is not
    # learned from the lengths seen in training; sequences shifted at random so every
    # absolute position is trained
    "add-length": {
        "data": {"seed": 11, "n_examples": 100_000, "ops": ["add"], "max_digits": 5, "reverse_answer": True,
                 "heldout_digits": [8, 8], "answer_width": 10, "prompt_zeros": 10},
        "model": {"n_layer": 3, "d_model": 128, "n_head": 4, "context": 40, "abacus": 20},
        "train": {"batch_size": 128, "steps": 16000, "lr": 2e-3, "warmup_steps": 200,
                  "eval_every": 2000, "eval_examples": 500, "checkpoint_every": 2000},
    },
}


@dataclass(frozen=True)
class _Rule:
    """Allowed values of one config key."""

    kind: type  # int, float or str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value must be > low, not >= low
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        if self.kind is str:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            return f"{noun} in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low}"
        return noun

    def normalise(self, table: str, key: str, value: Any) -> Any:
        def reject() -> ConfigError:
            return ConfigError(f"[{table}].{key} must be {self.expected()}, got {value!r}")

        if self.kind is str:
            if value not in self.choices:
                raise reject()
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise reject()
        if self.kind is int and not isinstance(value, int):
            raise reject()
        if self.kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise reject()
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise reject()
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise reject()
        return value


MODEL_RULES: dict[str, _Rule] = {
    "arch": _Rule(str, choices=("gpt", "rwkv")),
    "n_layer": _Rule(int, 1, 1024),
    "d_model": _Rule(int, 1, 65536),
    "n_head": _Rule(int, 1, 65536),
    "context": _Rule(int, 1, 1 << 20),
    "vocab_size": _Rule(int, 1, (1 << 31) - 1),
    "init_seed": _Rule(int, 0, (1 << 63) - 1),
    "ln_eps": _Rule(float, 0.0, 1.0, low_open=True),
    "abacus": _Rule(int, 0, 4096),
    "abacus_answer": _Rule(str, choices=("place", "next")),
    "positions": _Rule(str, choices=("learned", "none", "alibi")),
    "d_ffn": _Rule(int, 0, 1 << 20),
}

TRAIN_RULES: dict[str, _Rule] = {
    "batch_size": _Rule(int, 1, 1 << 20),
    "steps": _Rule(int, 1, (1 << 31) - 1),  # the C trainer counts its schedule in int
    "lr": _Rule(float, 0.0, 10.0, low_open=True),
    "min_lr_frac": _Rule(float, 0.0, 1.0),
    "warmup_steps": _Rule(int, 0, (1 << 31) - 1),
    "weight_decay": _Rule(float, 0.0, 10.0),
    "beta1": _Rule(float, 0.0, 1.0, high_open=True),
    "beta2": _Rule(float, 0.0, 1.0, high_open=True),
    "eps": _Rule(float, 0.0, 1.0, low_open=True),
    "grad_clip": _Rule(float, 0.0),  # 0 disables clipping
    "eval_every": _Rule(int, 0),  # 0 disables periodic eval
    "eval_examples": _Rule(int, 0),
    "checkpoint_every": _Rule(int, 0),  # 0: only the final checkpoint
    "seed": _Rule(int, 0, (1 << 63) - 1),
    "threads": _Rule(int, 0, 64),  # 0: automatic, min(12, cores); 64: the C trainer's MAX_THREADS
    "loss_on": _Rule(str, choices=("answer", "all")),
    "length_buckets": _Rule(int, 0, 4096),
}


def _validate_fields(instance: Any, table: str, rules: Mapping[str, _Rule]) -> None:
    for name, rule in rules.items():
        value = rule.normalise(table, name, getattr(instance, name))
        object.__setattr__(instance, name, value)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "gpt"
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 4
    context: int = 64
    vocab_size: int = CHAR_VOCAB_SIZE
    init_seed: int = 0
    ln_eps: float = 1e-5
    # Abacus digit-position embeddings (odin/abacus.py): number of digit places the table
    # covers, training offsets included; 0 = off. For length generalisation on arithmetic.
    abacus: int = 0
    # which place an answer token's Abacus id names: "place", its own; "next", the place of the
    # digit it predicts (position coupling; odin/abacus.py). Only with abacus > 0.
    abacus_answer: str = "place"
    # "learned": absolute position embeddings (wpe); "none": wpe held at zero (NoPE);
    # "alibi": wpe held at zero, each attention head biased towards near keys (ALiBi)
    positions: str = "learned"
    # width of the feed-forward (RWKV channel-mix) layer; 0 = 4 x d_model (GPT: always 4 x d_model)
    d_ffn: int = 0

    def __post_init__(self) -> None:
        _validate_fields(self, "model", MODEL_RULES)
        if self.abacus_answer != "place" and not self.abacus:
            raise ConfigError(f"[model].abacus_answer = {self.abacus_answer!r} needs Abacus embeddings; "
                              "set [model].abacus > 0 or drop abacus_answer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        return cls(**_checked_keys(data, cls, "model"))


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    steps: int = 1000
    lr: float = 1e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_examples: int = 500
    checkpoint_every: int = 1000
    seed: int = 1337
    threads: int = 0
    loss_on: str = "answer"
    # length buckets: batches per length-sorted pool (0 = off); each batch is then padded to
    # its own longest example only (odin.data.batching.BatchSampler). For sets of very
    # different lengths (programs); not used with Abacus position shifts (full context).
    length_buckets: int = 0

    def __post_init__(self) -> None:
        _validate_fields(self, "train", TRAIN_RULES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return cls(**_checked_keys(data, cls, "train"))


def _unknown_key_error(key: str, allowed: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(allowed)}"
    return ConfigError(f"unknown key {key!r} {where}{hint}")


def _checked_keys(data: Mapping[str, Any], cls: type, table: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{table}] must be a table, got {type(data).__name__}")
    allowed = [item.name for item in fields(cls)]
    for key in data:
        if key not in allowed:
            raise _unknown_key_error(str(key), allowed, f"in [{table}]")
    return dict(data)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run is configured by; saved as a checkpoint's config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "preset": self.preset, "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Build from a mapping shaped like the TOML file (or like :meth:`to_dict`)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a table/object, got {type(data).__name__}")
        allowed = ["model", "preset", "train"]
        for key in data:
            if key not in allowed:
                raise _unknown_key_error(str(key), allowed, "at the top level")
        preset_name = data.get("preset")
        model_values: dict[str, Any] = {}
        train_values: dict[str, Any] = {}
        if preset_name is not None:
            preset = get_preset(preset_name)
            model_values.update(preset["model"])
            train_values.update(preset["train"])
        model_values.update(_checked_keys(data.get("model", {}), ModelConfig, "model"))
        train_values.update(_checked_keys(data.get("train", {}), TrainConfig, "train"))
        return cls(
            model=ModelConfig(**model_values), train=TrainConfig(**train_values), preset=preset_name
        )


def get_preset(name: str) -> dict[str, dict[str, Any]]:
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known presets: {', '.join(PRESETS)}"
        raise ConfigError(f"unknown preset {name!r}; {hint}")
    return PRESETS[name]


def preset_data_spec(name: str) -> dict[str, Any] | None:
    """The dataset a preset trains on (build_dataset keyword arguments), if it names one."""
    spec = get_preset(name).get("data")
    return dict(spec) if spec else None


def preset_config(name: str, **model_overrides: Any) -> RunConfig:
    """The RunConfig of a preset; keyword arguments override [model] keys (e.g. vocab_size)."""
    return RunConfig.from_dict({"preset": name, "model": model_overrides})


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a TOML config file (see module docstring)."""
    config_path = Path(path)
    if not config_path.is_file():
        raise FileNotFoundError(f"config file not found: {config_path}")
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_path}: not valid TOML ({error})") from None
    try:
        return RunConfig.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{config_path}: {error}") from None


from odin.blueprint import Blueprint, MemoryEstimate, describe, format_bytes  # noqa: E402  re-export

__all__ = [
    "Blueprint", "ConfigError", "MemoryEstimate", "ModelConfig", "PRESETS", "RunConfig",
    "TrainConfig", "describe", "format_bytes", "get_preset", "load_config", "preset_config",
]
