"""`pipeline.toml`: the pipeline's settings, loaded and validated.

The file has one table per concern (``[folders]``, ``[watch]``, ``[retry]``, ``[crawl]``,
``[preprocess]``, ``[tokenizer]``, ``[model]``, ``[train]``); every key is optional and
falls back to the defaults below, which are also what the repository's ``pipeline.toml``
spells out with comments. Unknown tables or keys and out-of-range values raise
:class:`PipelineConfigError` naming ``[table].key`` and what is allowed, in the style of
:mod:`odin.config`. ``[model]`` is checked by :class:`odin.config.RunConfig` itself, so a
preset or model key means exactly what it means to ``odin train``.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from odin.config import ConfigError, PRESETS, RunConfig, tomllib  # tomllib, or tomli on Python 3.10


class PipelineConfigError(ValueError):
    """A pipeline.toml key or value that cannot be accepted."""


@dataclass(frozen=True)
class Rule:
    """Allowed values of one key: its type and, for numbers, an inclusive range."""

    kind: type  # int, float, str, bool or list (of strings)
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is list:
            return "a list of strings"
        if self.kind is str:
            return "one of " + ", ".join(map(repr, self.choices)) if self.choices else "a string"
        noun = "an integer" if self.kind is int else "a number"
        def num(x: float) -> str:
            return str(int(x)) if self.kind is int else f"{x:g}"

        if self.low is not None and self.high is not None and self.high < 1e8:  # huge caps are not worth saying
            return f"{noun} in [{num(self.low)}, {num(self.high)}]"
        return f"{noun} >= {num(self.low)}" if self.low is not None else noun

    def check(self, where: str, value: Any) -> Any:
        bad = PipelineConfigError(f"{where} must be {self.expected()}, got {value!r}")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise bad
            return tuple(value)
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad
            return value
        # TOML has separate integers and floats; a float key accepts an integer (1 == 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind is int and not isinstance(value, int):
            raise bad
        if self.kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise bad
        return value


@dataclass(frozen=True)
class Folders:
    """Where each stage keeps its files, relative to the pipeline folder."""

    inbox: str = "inbox"
    raw: str = "raw"
    clean: str = "clean"
    shards: str = "shards"
    checkpoints: str = "checkpoints"
    quarantine: str = "quarantine"


@dataclass(frozen=True)
class Watch:
    mode: str = "events"  # watchdog's native observer; "poll": its PollingObserver
    settle_seconds: float = 1.0  # no close-after-write seen: ready once unchanged this long
    rescan_seconds: float = 5.0  # a full walk of the inbox, in case an event was missed
    idle_seconds: float = 2.0  # nothing upstream this long: flush a part-filled shard
    ignore: tuple[str, ...] = (".*", "*~", "*.tmp", "*.part", "*.partial", "*.crdownload", "*.swp")


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 4  # tries of a stage before the item goes to quarantine/
    backoff_seconds: float = 1.0  # wait before the 2nd try; doubled for each further one
    backoff_max_seconds: float = 60.0


DEFAULT_EXTENSIONS = (
    ".txt", ".md", ".markdown", ".rst", ".org", ".tex", ".html", ".htm", ".xhtml", ".xml",
    ".json", ".jsonl", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".log",
    ".py", ".c", ".h", ".cpp", ".hpp", ".rs", ".go", ".java", ".js", ".ts", ".css", ".sh",
)


@dataclass(frozen=True)
class Crawl:
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS  # text-like files taken from the inbox
    no_extension: bool = True  # README, LICENSE, Makefile...: taken and checked like text
    max_file_bytes: int = 20_000_000
    user_agent: str = "odin-pipeline/0.1 (ODIN CPU training engine; +robots.txt respected)"
    timeout_seconds: float = 10.0  # per connection attempt and read, and for a whole page
    max_page_bytes: int = 5_000_000
    per_host_interval_seconds: float = 1.0  # at most one request per host this often
    max_urls_per_list: int = 10_000
    max_redirects: int = 5


@dataclass(frozen=True)
class Preprocess:
    unicode_form: str = "NFC"
    min_chars: int = 200  # after cleaning
    min_alpha_fraction: float = 0.25  # letters among the non-space characters
    max_repeated_line_fraction: float = 0.5  # lines that repeat an earlier line of the document
    near_duplicate_threshold: float = 0.85  # estimated Jaccard of word shingles; 1.0 = exact only
    shingle_words: int = 5


@dataclass(frozen=True)
class Tokenizer:
    vocab_size: int = 2048
    min_chars: int = 50_000  # clean text needed before the BPE tokenizer is trained
    path: str = ""  # an existing tokenizer.json to use instead of training one
    val_fraction: float = 0.1  # the tail of every document held out for validation
    shard_tokens: int = 16_384  # training tokens per shard


@dataclass(frozen=True)
class Train:
    steps_per_shard: int = 40  # for a full shard; a part-filled one gets its share (>= 1)
    batch_size: int = 16
    lr: float = 1e-3  # constant after warm-up: a stream of shards has no planned end
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    threads: int = 0  # 0: min(12, cores)
    seed: int = 1234
    checkpoint_every_shards: int = 1
    checkpoint_every_steps: int = 0  # 0: only at shard ends (and on stop)
    replay_fraction: float = 0.25  # rows of each batch drawn from earlier shards (against forgetting)
    val_max_tokens: int = 32_768  # held-out tokens scored after each shard, spread over all trained shards


SECTIONS: dict[str, type] = {
    "folders": Folders, "watch": Watch, "retry": Retry, "crawl": Crawl,
    "preprocess": Preprocess, "tokenizer": Tokenizer, "train": Train,
}

RULES: dict[str, dict[str, Rule]] = {
    "folders": {name: Rule(str) for name in ("inbox", "raw", "clean", "shards", "checkpoints", "quarantine")},
    "watch": {
        "mode": Rule(str, choices=("events", "poll")),
        "settle_seconds": Rule(float, 0.0, 3600.0),
        "rescan_seconds": Rule(float, 0.1, 86400.0),
        "idle_seconds": Rule(float, 0.0, 86400.0),
        "ignore": Rule(list),
    },
    "retry": {
        "max_attempts": Rule(int, 1, 100),
        "backoff_seconds": Rule(float, 0.0, 3600.0),
        "backoff_max_seconds": Rule(float, 0.0, 86400.0),
    },
    "crawl": {
        "extensions": Rule(list),
        "no_extension": Rule(bool),
        "max_file_bytes": Rule(int, 1, 1 << 40),
        "user_agent": Rule(str),
        "timeout_seconds": Rule(float, 0.01, 3600.0),
        "max_page_bytes": Rule(int, 1, 1 << 40),
        "per_host_interval_seconds": Rule(float, 0.0, 3600.0),
        "max_urls_per_list": Rule(int, 1, 10_000_000),
        "max_redirects": Rule(int, 0, 50),
    },
    "preprocess": {
        "unicode_form": Rule(str, choices=("NFC", "NFKC", "none")),
        "min_chars": Rule(int, 1, 1 << 40),
        "min_alpha_fraction": Rule(float, 0.0, 1.0),
        "max_repeated_line_fraction": Rule(float, 0.0, 1.0),
        "near_duplicate_threshold": Rule(float, 0.1, 1.0),
        "shingle_words": Rule(int, 1, 64),
    },
    "tokenizer": {
        "vocab_size": Rule(int, 259, 1 << 20),  # 256 byte tokens + <pad> <bos> <end>
        "min_chars": Rule(int, 1, 1 << 40),
        "path": Rule(str),
        "val_fraction": Rule(float, 0.0, 0.5),
        "shard_tokens": Rule(int, 64, 1 << 32),
    },
    "train": {
        "steps_per_shard": Rule(int, 1, 1 << 30),
        "batch_size": Rule(int, 1, 1 << 16),
        "lr": Rule(float, 1e-9, 10.0),
        "warmup_steps": Rule(int, 0, 1 << 30),
        "weight_decay": Rule(float, 0.0, 10.0),
        "grad_clip": Rule(float, 0.0, 1e9),
        "threads": Rule(int, 0, 4096),
        "seed": Rule(int, 0, (1 << 63) - 1),
        "checkpoint_every_shards": Rule(int, 1, 1 << 30),
        "checkpoint_every_steps": Rule(int, 0, 1 << 30),
        "replay_fraction": Rule(float, 0.0, 0.9),
        "val_max_tokens": Rule(int, 0, 1 << 32),
    },
}


@dataclass(frozen=True)
class PipelineConfig:
    folders: Folders = field(default_factory=Folders)
    watch: Watch = field(default_factory=Watch)
    retry: Retry = field(default_factory=Retry)
    crawl: Crawl = field(default_factory=Crawl)
    preprocess: Preprocess = field(default_factory=Preprocess)
    tokenizer: Tokenizer = field(default_factory=Tokenizer)
    train: Train = field(default_factory=Train)
    model: Mapping[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    source: str = "<defaults>"  # the file it came from, for messages

    def run_config(self, vocab_size: int) -> RunConfig:
        """The model to train: the [model] preset and overrides, with the tokenizer's vocabulary."""
        return model_run_config(self.model, vocab_size, self.source)

    def to_toml_dict(self) -> dict[str, dict[str, Any]]:
        """The settings in effect as pipeline.toml tables (tuples as lists), every key spelled
        out: ``config_from_dict(cfg.to_toml_dict()) == cfg`` (apart from ``source``)."""
        tables: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            tables[name] = {f.name: (list(v) if isinstance(v := getattr(section, f.name), tuple) else v)
                            for f in fields(section)}
        tables["model"] = dict(self.model)
        return tables


def model_run_config(model: Mapping[str, Any], vocab_size: int, source: str = "pipeline.toml") -> RunConfig:
    overrides = {key: value for key, value in model.items() if key != "preset"}
    overrides["vocab_size"] = vocab_size  # always the tokenizer's: the model must fit it
    try:
        return RunConfig.from_dict({"preset": model.get("preset"), "model": overrides})
    except (ConfigError, ValueError) as error:
        raise PipelineConfigError(f"{source}: {error}") from None


def _unknown(key: str, allowed: list[str], where: str) -> PipelineConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return PipelineConfigError(f"unknown key {key!r} {where}; {hint}")


def _section(name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise PipelineConfigError(f"[{name}] must be a table, got {type(data).__name__}")
    rules = RULES[name]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in rules:
            raise _unknown(str(key), list(rules), f"in [{name}]")
        values[key] = rules[key].check(f"[{name}].{key}", value)
    return cls(**values)


def _check_model(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise PipelineConfigError(f"[model] must be a table, got {type(data).__name__}")
    model = dict(data)
    preset = model.get("preset", "tiny")
    if not isinstance(preset, str) or preset not in PRESETS:
        close = difflib.get_close_matches(str(preset), list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known presets: " + ", ".join(PRESETS)
        raise PipelineConfigError(f"[model].preset {preset!r} is not a preset; {hint}")
    if "vocab_size" in model:
        raise PipelineConfigError("[model].vocab_size cannot be set: the model always takes the "
                                  "tokenizer's vocabulary (set [tokenizer].vocab_size instead)")
    model["preset"] = preset
    model_run_config(model, 4096, "pipeline.toml")  # every other [model] key checked by odin.config
    return model


def _cross_checks(config: PipelineConfig) -> None:
    folders = [getattr(config.folders, f.name) for f in fields(Folders)]
    for f in fields(Folders):
        value = getattr(config.folders, f.name)
        if not value or Path(value).is_absolute() or ".." in Path(value).parts:
            raise PipelineConfigError(f"[folders].{f.name} must be a folder name inside the pipeline "
                                      f"folder, got {value!r}")
    if len(set(folders)) != len(folders):
        raise PipelineConfigError("[folders] must name a different folder for each entry")
    for ext in config.crawl.extensions:
        if not ext.startswith(".") or ext == ".urls":
            raise PipelineConfigError(f"[crawl].extensions entries start with a dot (\".txt\"); "
                                      f"\".urls\" is always a URL list; got {ext!r}")
    if config.retry.backoff_max_seconds < config.retry.backoff_seconds:
        raise PipelineConfigError("[retry].backoff_max_seconds must be >= [retry].backoff_seconds")
    context = config.run_config(config.tokenizer.vocab_size).model.context
    if config.tokenizer.shard_tokens < context + 1:
        raise PipelineConfigError(f"[tokenizer].shard_tokens must be at least the model context + 1 "
                                  f"({context + 1}), got {config.tokenizer.shard_tokens}")


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Build and validate a config from a mapping shaped like pipeline.toml."""
    try:
        if not isinstance(data, Mapping):
            raise PipelineConfigError(f"expected a table at the top level, got {type(data).__name__}")
        allowed = [*SECTIONS, "model"]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in allowed:
                raise _unknown(str(key), allowed, "at the top level (tables are [" + "], [".join(allowed) + "])")
            values[key] = _check_model(value) if key == "model" else _section(key, SECTIONS[key], value)
        config = PipelineConfig(**values, source=source)
        _cross_checks(config)
        return config
    except PipelineConfigError as error:
        if source.startswith("<"):
            raise
        raise PipelineConfigError(f"{source}: {error}") from None


def load_pipeline_config(path: str | Path | None) -> PipelineConfig:
    """Read pipeline.toml (``None``: the built-in defaults)."""
    if path is None:
        return config_from_dict({}, "<defaults>")
    config_path = Path(path)
    if not config_path.is_file():
        raise PipelineConfigError(f"config file not found: {config_path}")
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PipelineConfigError(f"{config_path}: not valid TOML ({error})") from None
    return config_from_dict(data, str(config_path))


@dataclass(frozen=True)
class PipelinePaths:
    """Every file and folder of one pipeline folder (FOLDER/...)."""

    root: Path
    inbox: Path
    raw: Path
    clean: Path
    shards: Path
    checkpoints: Path
    quarantine: Path

    @classmethod
    def of(cls, folder: str | Path, folders: Folders = Folders()) -> "PipelinePaths":
        root = Path(folder).resolve()
        return cls(root, *(root / getattr(folders, name) for name in
                           ("inbox", "raw", "clean", "shards", "checkpoints", "quarantine")))

    @property
    def db(self) -> Path:
        return self.root / "pipeline.db"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "latest"

    @property
    def lock(self) -> Path:
        return self.root / "pipeline.lock"

    @property
    def log(self) -> Path:
        return self.root / "pipeline.log"

    def make(self) -> None:
        for path in (self.inbox, self.raw, self.clean, self.shards / "train", self.shards / "val",
                     self.checkpoints, self.quarantine):
            path.mkdir(parents=True, exist_ok=True)
