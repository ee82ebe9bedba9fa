"""Dataset builder and loader: JSONL splits plus a ``dataset.json`` manifest.

The on-disk format is documented in ``docs/data-format.md``. Builds are byte-identical
for the same arguments (no timestamps, sorted keys, ``\\n`` line endings), and no prompt
appears in more than one split: problems are deduplicated before being cut into splits,
and the held-out split uses operands longer than any training operand.

* :func:`build_dataset` — arithmetic only: train/val/test/heldout.
* :func:`build_mixed_dataset` — arithmetic, algebra and code mixed by weight: train/val/test
  (each with the same mix) plus one ``heldout_<family>`` split of harder problems per
  family; :func:`check_split_hygiene` verifies before writing that no prompt is shared.
* :func:`load_split`, :func:`load_manifest`, :func:`heldout_splits` — reading.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from odin.data.arithmetic import (
    MAX_SUPPORTED_DIGITS,
    ArithmeticConfig,
    count_distinct_problems,
    pad_answer,
    padded_operands,
    sample_unique_examples,
    spaced_prompt,
    zero_padded_prompt,
)
from odin.data.examples import Example
from odin.fileio import write_text_atomic

DATASET_FORMAT = "odin-dataset"
DATASET_FORMAT_VERSION = 1
MANIFEST_NAME = "dataset.json"
MAIN_SPLITS: tuple[str, ...] = ("train", "val", "test")
HELDOUT_SPLIT = "heldout"


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is not what the format promises."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset directory or one of its split files is missing."""


def split_path(dataset_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(dataset_dir) / f"{name}.jsonl"


def example_to_line(example: Example) -> str:
    return json.dumps(example.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _validate_split_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(split)
    if len(fractions) != 3 or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in fractions
    ):
        raise ValueError(f"split must be three numbers (train, val, test), got {split!r}")
    if any(not value > 0 for value in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must each be > 0 and sum to 1, got {list(fractions)}")
    return fractions  # type: ignore[return-value]


def _split_counts(n_total: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    n_val = math.floor(n_total * fractions[1] + 0.5)
    n_test = math.floor(n_total * fractions[2] + 0.5)
    counts = {"train": n_total - n_val - n_test, "val": n_val, "test": n_test}
    for name, count in counts.items():
        if count < 1:
            raise ValueError(
                f"split {name!r} would be empty: {n_total} distinct problems cut "
                f"{list(fractions)} leave it {count} examples; request more examples "
                f"(--n), widen the digit range, or change the split fractions"
            )
    return counts


def _resolve_heldout_digits(
    heldout_digits: int | Sequence[int] | None, max_digits: int
) -> tuple[int, int]:
    if heldout_digits is None:
        low = max_digits + 1
        return low, min(max_digits + 2, MAX_SUPPORTED_DIGITS)
    if isinstance(heldout_digits, int) and not isinstance(heldout_digits, bool):
        low = high = heldout_digits
    else:
        values = tuple(heldout_digits)
        if len(values) != 2:
            raise ValueError(f"heldout_digits must be an int or (min, max), got {heldout_digits!r}")
        low, high = values
    if low <= max_digits:
        raise ValueError(
            f"heldout_digits must start above max_digits ({max_digits}) so held-out problems "
            f"are longer than training ones, got {low}..{high}"
        )
    return low, high


def build_dataset(
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
    n_examples: int,
    ops: Sequence[str],
    max_digits: int,
    min_digits: int = 1,
    reverse_answer: bool = False,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    heldout_digits: int | Sequence[int] | None = None,
    n_heldout: int | None = None,
    prompt_spaces: int = 0,
    prompt_zeros: int = 0,
    answer_width: int = 0,
) -> dict[str, Any]:
    """Write train/val/test (+ heldout) JSONL files and ``dataset.json``; return the manifest.

    ``n_heldout=None`` makes the held-out split as large as the requested test split;
    ``n_heldout=0`` writes no held-out split. ``heldout_digits=None`` means
    ``max_digits+1 .. max_digits+2`` digits per operand. ``prompt_spaces > 0`` writes the
    *training* prompts with 0..prompt_spaces random spaces around the operands
    (:func:`~odin.data.arithmetic.spaced_prompt`); val, test and held-out keep the plain form.
    ``prompt_zeros > max_digits`` writes each *training* operand with leading zeros to a
    random width up to ``prompt_zeros`` (:func:`~odin.data.arithmetic.zero_padded_prompt`)
    and every val/test/held-out operand with zeros to exactly ``prompt_zeros`` digits
    (:func:`~odin.data.arithmetic.padded_operands`), the form the model is then asked in.
    ``answer_width > 0`` writes every answer of every split with exactly that many digits
    (:func:`~odin.data.arithmetic.pad_answer`; whole non-negative answers only).
    """
    if isinstance(answer_width, bool) or not isinstance(answer_width, int) or not 0 <= answer_width <= 64:
        raise ValueError(f"answer_width must be an integer in [0, 64], got {answer_width!r}")
    if isinstance(prompt_spaces, bool) or not isinstance(prompt_spaces, int) or not 0 <= prompt_spaces <= 8:
        raise ValueError(f"prompt_spaces must be an integer in [0, 8], got {prompt_spaces!r}")
    if isinstance(prompt_zeros, bool) or not isinstance(prompt_zeros, int) or not (
            prompt_zeros == 0 or max_digits < prompt_zeros <= MAX_SUPPORTED_DIGITS):
        raise ValueError(f"prompt_zeros must be 0 (off) or a width in [max_digits + 1 = {max_digits + 1}, "
                         f"{MAX_SUPPORTED_DIGITS}], got {prompt_zeros!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 3:
        raise ValueError(f"n_examples must be an integer >= 3 (one per split at least), got {n_examples!r}")
    fractions = _validate_split_fractions(split)
    if isinstance(ops, str):  # "add,sub" is a natural thing to pass; tuple("add") is not
        ops = tuple(part.strip() for part in ops.split(",") if part.strip())
    main_config = ArithmeticConfig(
        ops=tuple(ops), min_digits=min_digits, max_digits=max_digits, reverse_answer=reverse_answer
    )
    if n_heldout is None:
        n_heldout = max(1, math.floor(n_examples * fractions[2] + 0.5))
    if isinstance(n_heldout, bool) or not isinstance(n_heldout, int) or n_heldout < 0:
        raise ValueError(f"n_heldout must be a non-negative integer, got {n_heldout!r}")

    notes: list[str] = []
    distinct_main = count_distinct_problems(main_config)
    main_examples = sample_unique_examples(main_config, n_examples, seed=f"{seed}/main")
    if n_examples > distinct_main:
        notes.append(
            f"requested {n_examples} examples but only {distinct_main} distinct problems exist; "
            f"using all of them"
        )
    counts = _split_counts(len(main_examples), fractions)
    split_examples: dict[str, list[Example]] = {}
    start = 0
    for name in MAIN_SPLITS:
        split_examples[name] = main_examples[start : start + counts[name]]
        start += counts[name]

    # splits are cut from distinct problems first: padding or spacing cannot leak one. Zeros
    # come first: spaced prompts are no longer of the form <a><op><b>=.
    if prompt_zeros:
        zero_rng = random.Random(f"{seed}/zeros")
        split_examples["train"] = [dataclasses.replace(e, prompt=zero_padded_prompt(e.prompt, zero_rng, prompt_zeros))
                                   for e in split_examples["train"]]
    if prompt_spaces:
        space_rng = random.Random(f"{seed}/spaces")
        split_examples["train"] = [dataclasses.replace(e, prompt=spaced_prompt(e.prompt, space_rng, prompt_spaces))
                                   for e in split_examples["train"]]

    heldout_range: tuple[int, int] | None = None
    distinct_heldout: int | None = None
    if n_heldout > 0:
        heldout_range = _resolve_heldout_digits(heldout_digits, max_digits)
        heldout_config = ArithmeticConfig(
            ops=tuple(ops),
            min_digits=heldout_range[0],
            max_digits=heldout_range[1],
            reverse_answer=reverse_answer,
        )
        distinct_heldout = count_distinct_problems(heldout_config)
        split_examples[HELDOUT_SPLIT] = sample_unique_examples(
            heldout_config, n_heldout, seed=f"{seed}/heldout"
        )
        if n_heldout > distinct_heldout:
            notes.append(
                f"requested {n_heldout} held-out examples but only {distinct_heldout} distinct "
                f"problems exist; using all of them"
            )

    if prompt_zeros:  # everything the model is scored on: operands at exactly the full width
        if heldout_range is not None and heldout_range[1] > prompt_zeros:
            raise ValueError(f"prompt_zeros ({prompt_zeros}) must be at least the held-out operands' digits "
                             f"({heldout_range[1]})")
        split_examples = {name: examples if name == "train" else
                          [dataclasses.replace(e, prompt=padded_operands(e.prompt, prompt_zeros)) for e in examples]
                          for name, examples in split_examples.items()}

    if answer_width:
        split_examples = {name: [dataclasses.replace(e, answer=pad_answer(e.answer, answer_width, reverse_answer))
                                 for e in examples] for name, examples in split_examples.items()}

    out_path = Path(out_dir)
    split_entries = _write_splits(out_path, split_examples)

    manifest: dict[str, Any] = {
        "distinct_problems": {"heldout": distinct_heldout, "main": distinct_main},
        "format": DATASET_FORMAT,
        "format_version": DATASET_FORMAT_VERSION,
        "generator": "arithmetic",
        "notes": notes,
        "requested": {"n_examples": n_examples, "n_heldout": n_heldout},
        "seed": seed,
        "settings": {
            **main_config.to_dict(),
            "heldout_digits": list(heldout_range) if heldout_range else None,
            "split": list(fractions),
            **({"prompt_spaces": prompt_spaces} if prompt_spaces else {}),
            **({"prompt_zeros": prompt_zeros} if prompt_zeros else {}),
            **({"answer_width": answer_width} if answer_width else {}),
        },
        "splits": split_entries,
    }
    write_text_atomic(out_path / MANIFEST_NAME, json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    return manifest


def _write_splits(out_path: Path, split_examples: Mapping[str, Sequence[Example]]) -> dict[str, dict[str, Any]]:
    """Write each split's JSONL file; return the manifest's ``splits`` entries.

    Held-out files of an earlier build in the same directory that this build does not
    write are removed, so they cannot be mistaken for part of it.
    """
    out_path.mkdir(parents=True, exist_ok=True)
    split_entries: dict[str, dict[str, Any]] = {}
    for name, examples in split_examples.items():
        text = "".join(example_to_line(example) + "\n" for example in examples)
        data = text.encode("utf-8")
        write_text_atomic(split_path(out_path, name), text)
        split_entries[name] = {
            "count": len(examples),
            "file": f"{name}.jsonl",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    for stale in sorted(out_path.glob(f"{HELDOUT_SPLIT}*.jsonl")):
        if stale.stem not in split_examples and _is_heldout_name(stale.stem):
            stale.unlink()
    return split_entries


def _is_heldout_name(name: str) -> bool:
    return name == HELDOUT_SPLIT or name.startswith(HELDOUT_SPLIT + "_")


def heldout_splits(manifest: Mapping[str, Any]) -> list[str]:
    """The held-out split names a manifest lists: ``heldout`` and/or ``heldout_<family>``,
    sorted (``heldout`` first)."""
    splits = manifest.get("splits") if isinstance(manifest.get("splits"), Mapping) else {}
    return sorted((name for name in splits if _is_heldout_name(name)), key=lambda name: (name != HELDOUT_SPLIT, name))


def _require_dir(dataset_dir: str | os.PathLike[str]) -> Path:
    path = Path(dataset_dir)
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"dataset directory not found: {path} (build one with `odin data build --out {path}`)"
        )
    return path


def load_manifest(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = _require_dir(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset manifest not found: {path}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise DatasetFormatError(f"{path}: not an ODIN dataset manifest ('format' != {DATASET_FORMAT!r})")
    if manifest.get("format_version") != DATASET_FORMAT_VERSION:
        raise DatasetFormatError(
            f"{path}: unsupported format_version {manifest.get('format_version')!r} "
            f"(this version of odin reads {DATASET_FORMAT_VERSION})"
        )
    if not isinstance(manifest.get("splits"), dict):
        raise DatasetFormatError(f"{path}: 'splits' must be an object")
    return manifest


def available_splits(dataset_dir: str | os.PathLike[str]) -> list[str]:
    path = _require_dir(dataset_dir)
    return sorted(entry.stem for entry in path.glob("*.jsonl"))


def load_split(dataset_dir: str | os.PathLike[str], name: str, *, verify: bool = True) -> list[Example]:
    """Read one split. With ``verify`` and a manifest present, the file's sha256 must match it."""
    path = _require_dir(dataset_dir)
    file_path = split_path(path, name)
    if not file_path.is_file():
        raise DatasetNotFoundError(
            f"split {name!r} not found: no {file_path} (available: {', '.join(available_splits(path)) or 'none'})"
        )
    data = file_path.read_bytes()
    if verify and (path / MANIFEST_NAME).is_file():
        entry = load_manifest(path)["splits"].get(name)
        if isinstance(entry, dict) and "sha256" in entry:
            actual = hashlib.sha256(data).hexdigest()
            if actual != entry["sha256"]:
                raise DatasetFormatError(
                    f"{file_path}: sha256 {actual[:12]}… does not match {MANIFEST_NAME} "
                    f"({str(entry['sha256'])[:12]}…); the file was changed or a build was "
                    f"interrupted — rebuild the dataset"
                )
    return parse_jsonl(data, str(file_path))


def parse_jsonl(data: bytes, source: str) -> list[Example]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    examples: list[Example] = []
    for line_number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatasetFormatError(f"{source} line {line_number}: not UTF-8 ({error})") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetFormatError(f"{source} line {line_number}: invalid JSON ({error.msg})") from None
        try:
            examples.append(Example.from_dict(record))
        except ValueError as error:
            raise DatasetFormatError(f"{source} line {line_number}: {error}") from None
    return examples


# ====================================================================== mixed-task datasets
FAMILIES: tuple[str, ...] = ("arith", "algebra", "code")
_FAMILY_SETTINGS: dict[str, tuple[str, ...]] = {
    "arith": ("ops", "min_digits", "max_digits", "heldout_digits", "reverse_answer", "scratchpad"),
    "algebra": ("kinds", "min_level", "max_level", "heldout_levels", "reverse_answer", "scratchpad"),
    "code": ("min_level", "max_level", "heldout_levels", "max_answer_chars", "max_prompt_chars", "timeout",
             "memory_mb", "scratchpad", "max_trace_chars"),
}


class ProgressBar:
    """A one-line text progress bar on a stream (stderr by default); no dependencies.

    Redrawn at most ten times a second; ``finish()`` ends the line. With ``enabled=False``
    it does nothing, so callers need no conditionals.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool = True,
                 width: int = 30) -> None:
        self.label, self.total, self.width = label, max(0, int(total)), width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.started: float | None = None  # the clock starts at the first update
        self._last_draw = 0.0
        self.done = 0

    def update(self, done: int, force: bool = False) -> None:
        self.done = min(int(done), self.total) if self.total else int(done)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(fraction * self.width))
        rate = self.done / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.label:<16} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total} {rate:,.0f}/s ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.update(self.total if self.total else self.done, force=True)
            self.stream.write(f"{time.perf_counter() - (self.started or 0.0):.1f}s\n")
            self.stream.flush()


def _normalize_mix(families: Sequence[str], mix: Mapping[str, float] | Sequence[float] | None) -> dict[str, float]:
    if mix is None:
        return {family: 1.0 / len(families) for family in families}
    if isinstance(mix, Mapping):
        unknown = sorted(set(mix) - set(families))
        missing = [family for family in families if family not in mix]
        if unknown or missing:
            raise ValueError(f"mix must give a weight for each task {list(families)} and nothing else, "
                             f"got {dict(mix)}")
        weights = [mix[family] for family in families]
    else:
        weights = list(mix)
        if len(weights) != len(families):
            raise ValueError(f"mix has {len(weights)} weights for {len(families)} tasks {list(families)}")
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or math.isinf(weight):
            raise ValueError(f"mix weights must be positive numbers, got {weights}")
    total = float(sum(weights))
    return {family: weight / total for family, weight in zip(families, weights)}


def _family_counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: counts sum to ``n``; ties go to the earlier task."""
    exact = {family: n * weight for family, weight in mix.items()}
    counts = {family: math.floor(value) for family, value in exact.items()}
    order = sorted(mix, key=lambda family: (-(exact[family] - counts[family]), list(mix).index(family)))
    for family in order[: n - sum(counts.values())]:
        counts[family] += 1
    return counts


def _level_range(value: int | Sequence[int] | None, max_level: int, top: int, what: str) -> tuple[int, int]:
    if value is None:
        if max_level >= top:
            raise ValueError(f"{what}: max_level {max_level} leaves no harder level for the held-out split "
                             f"(levels go up to {top}); lower max_level or pass n_heldout=0")
        return max_level + 1, min(max_level + 2, top)
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    else:
        low, high = tuple(value)
    if low <= max_level:
        raise ValueError(f"{what}: held-out levels must start above max_level ({max_level}), got {low}..{high}")
    return low, high


def _family_settings(family: str, settings: Mapping[str, Any] | None, reverse_answer: bool,
                     scratchpad: bool) -> dict[str, Any]:
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(_FAMILY_SETTINGS[family]))
    if unknown:
        raise ValueError(f"unknown {family} setting {unknown[0]!r}; expected some of {list(_FAMILY_SETTINGS[family])}")
    if family in ("arith", "algebra"):
        settings.setdefault("reverse_answer", reverse_answer if family == "arith" else False)
    settings.setdefault("scratchpad", scratchpad)  # code: an execution trace (odin.data.code)
    return settings


class _FamilyBuild:
    """One task family's main and held-out examples plus what the manifest says about them."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.main: list[Example] = []
        self.heldout: list[Example] = []
        self.settings: dict[str, Any] = {}
        self.task_names: list[str] = []
        self.discarded: dict[str, Any] | None = None
        self.notes: list[str] = []


def _build_arith(settings: dict[str, Any], n: int, n_heldout: int, seed: int, bar: ProgressBar,
                 heldout_bar: ProgressBar) -> _FamilyBuild:
    from odin.data.scratchpad import ARITH_SCRATCHPAD_OPS, arithmetic_with_steps

    build = _FamilyBuild("arith")
    ops = settings.get("ops", ("add", "sub", "mul", "div"))
    if isinstance(ops, str):
        ops = tuple(part.strip() for part in ops.split(",") if part.strip())
    config = ArithmeticConfig(ops=tuple(ops), min_digits=settings.get("min_digits", 1),
                              max_digits=settings.get("max_digits", 3),
                              reverse_answer=settings.get("reverse_answer", False))
    scratchpad = settings.get("scratchpad", False)
    if not isinstance(scratchpad, bool):
        raise ValueError(f"arith scratchpad must be true or false, got {scratchpad!r}")

    def finish(examples: list[Example]) -> list[Example]:
        if not scratchpad:
            return examples
        out = []
        for example in examples:
            if example.task in ARITH_SCRATCHPAD_OPS:
                example = Example(example.prompt, arithmetic_with_steps(example.prompt, example.answer),
                                  example.task, example.difficulty)
            out.append(example)
        return out

    distinct = count_distinct_problems(config)
    build.main = finish(sample_unique_examples(config, n, seed=f"{seed}/arith/main"))
    bar.finish()
    if n > distinct:
        build.notes.append(f"arith: requested {n} examples but only {distinct} distinct problems exist; using all")
    heldout_range = None
    if n_heldout:
        heldout_range = _resolve_heldout_digits(settings.get("heldout_digits"), config.max_digits)
        heldout_config = ArithmeticConfig(ops=config.ops, min_digits=heldout_range[0], max_digits=heldout_range[1],
                                          reverse_answer=config.reverse_answer)
        build.heldout = finish(sample_unique_examples(heldout_config, n_heldout, seed=f"{seed}/arith/heldout"))
        heldout_bar.finish()
    build.settings = {**config.to_dict(), "heldout_digits": list(heldout_range) if heldout_range else None,
                      "scratchpad": scratchpad}
    build.task_names = list(config.ops)
    return build


def _sample_with_bar(sample, n: int, bar: ProgressBar, chunk: int = 2000):
    """Run a chunked sampler (``sample(k, exclude)``) so the bar moves on large builds."""
    examples: list[Example] = []
    seen: set[str] = set()
    part = 0
    while len(examples) < n:
        batch = sample(min(chunk, n - len(examples)), part, seen)
        examples.extend(batch)
        seen.update(example.prompt for example in batch)
        part += 1
        bar.update(len(examples))
    bar.finish()
    return examples


def _build_algebra(settings: dict[str, Any], n: int, n_heldout: int, seed: int, bar: ProgressBar,
                   heldout_bar: ProgressBar) -> _FamilyBuild:
    from odin.data import algebra

    build = _FamilyBuild("algebra")
    config = algebra.AlgebraConfig(
        kinds=settings.get("kinds", algebra.ALGEBRA_KINDS), min_level=settings.get("min_level", 1),
        max_level=settings.get("max_level", 3), reverse_answer=settings.get("reverse_answer", False),
        scratchpad=settings.get("scratchpad", False))
    build.main = _sample_with_bar(
        lambda k, part, seen: algebra.sample_unique_examples(config, k, f"{seed}/main/{part}", exclude=seen), n, bar)
    heldout_levels = None
    if n_heldout:
        heldout_levels = _level_range(settings.get("heldout_levels"), config.max_level, algebra.MAX_LEVEL, "algebra")
        heldout_config = algebra.AlgebraConfig(kinds=config.kinds, min_level=heldout_levels[0],
                                               max_level=heldout_levels[1], reverse_answer=config.reverse_answer,
                                               scratchpad=config.scratchpad)
        main_prompts = {example.prompt for example in build.main}
        build.heldout = _sample_with_bar(
            lambda k, part, seen: algebra.sample_unique_examples(
                heldout_config, k, f"{seed}/heldout/{part}", exclude=seen | main_prompts), n_heldout, heldout_bar)
    build.settings = {**config.to_dict(), "heldout_levels": list(heldout_levels) if heldout_levels else None}
    build.task_names = list(config.kinds)
    return build


def _build_code(settings: dict[str, Any], n: int, n_heldout: int, seed: int, bar: ProgressBar,
                heldout_bar: ProgressBar, jobs: int) -> _FamilyBuild:
    from odin.data import code

    build = _FamilyBuild("code")
    config = code.CodeConfig(**{key: settings[key] for key in ("min_level", "max_level", "max_answer_chars",
                                                               "max_prompt_chars", "timeout", "memory_mb",
                                                               "scratchpad", "max_trace_chars")
                                if key in settings})
    main = code.sample_unique_examples(config, n, f"{seed}/main", jobs=jobs, on_progress=bar.update)
    bar.finish()
    build.main = main.examples
    discarded = {"main": {**main.discarded, "candidates": main.candidates}}
    heldout_levels = None
    if n_heldout:
        heldout_levels = _level_range(settings.get("heldout_levels"), config.max_level, code.MAX_LEVEL, "code")
        heldout_config = dataclasses.replace(config, min_level=heldout_levels[0], max_level=heldout_levels[1])
        heldout = code.sample_unique_examples(heldout_config, n_heldout, f"{seed}/heldout",
                                              exclude={example.prompt for example in build.main}, jobs=jobs,
                                              on_progress=heldout_bar.update)
        heldout_bar.finish()
        build.heldout = heldout.examples
        discarded["heldout"] = {**heldout.discarded, "candidates": heldout.candidates}
    build.settings = {**config.to_dict(), "heldout_levels": list(heldout_levels) if heldout_levels else None}
    build.task_names = [code.TASK]
    build.discarded = discarded
    return build


def build_mixed_dataset(
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
    n_examples: int,
    tasks: Mapping[str, Mapping[str, Any] | None] | Sequence[str],
    mix: Mapping[str, float] | Sequence[float] | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    n_heldout: int | None = None,
    reverse_answer: bool = False,
    scratchpad: bool = False,
    jobs: int = 1,
    progress: bool | TextIO = False,
) -> dict[str, Any]:
    """Write a mixed-task dataset (train/val/test + ``heldout_<task>`` splits); return the manifest.

    ``tasks`` maps task families (``arith``, ``algebra``, ``code``) to their settings (see
    docs/data-format.md; a list of names takes the defaults). ``mix`` weights the families
    (normalised; default equal); ``n_examples`` is split between them by largest-remainder
    rounding, and each family is cut ``split`` on its own, so every split has the same mix.
    ``n_heldout`` examples per family go to ``heldout_<family>`` (default: that family's
    test count; 0: none), drawn from harder settings. ``reverse_answer`` and ``scratchpad``
    are the defaults for arithmetic (algebra's ``reverse_answer`` must be set in its own
    settings; ``scratchpad`` applies to every family: worked steps for arithmetic and algebra,
    the execution trace for code). ``jobs`` sandbox workers run the code
    programs; ``progress`` (True = stderr, or a stream) draws progress bars.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 3:
        raise ValueError(f"n_examples must be an integer >= 3 (one per split at least), got {n_examples!r}")
    fractions = _validate_split_fractions(split)
    if isinstance(tasks, str):
        tasks = [part.strip() for part in tasks.split(",") if part.strip()]
    task_settings: dict[str, Any] = dict(tasks) if isinstance(tasks, Mapping) else {name: None for name in tasks}
    families = list(task_settings)
    if not families or any(family not in FAMILIES for family in families) or len(set(families)) != len(families):
        raise ValueError(f"tasks must be distinct names from {list(FAMILIES)}, got {families}")
    for flag, value in (("reverse_answer", reverse_answer), ("scratchpad", scratchpad)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be true or false, got {value!r}")
    if n_heldout is not None and (isinstance(n_heldout, bool) or not isinstance(n_heldout, int) or n_heldout < 0):
        raise ValueError(f"n_heldout must be a non-negative integer, got {n_heldout!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    weights = _normalize_mix(families, mix)
    family_n = _family_counts(n_examples, weights)
    stream = progress if not isinstance(progress, bool) else (sys.stderr if progress else None)
    enabled = stream is not None

    builds: dict[str, _FamilyBuild] = {}
    family_counts: dict[str, dict[str, int]] = {}
    for family in families:
        settings = _family_settings(family, task_settings[family], reverse_answer, scratchpad)
        n = family_n[family]
        if n < 3:
            raise ValueError(f"task {family!r} gets {n} of {n_examples} examples at mix {weights[family]:.3g}; "
                             f"each task needs at least 3 (one per split): raise --n or its mix weight")
        test_count = math.floor(n * fractions[2] + 0.5)
        held = max(1, test_count) if n_heldout is None else n_heldout
        bar = ProgressBar(f"{family} main", n, stream, enabled)
        heldout_bar = ProgressBar(f"{family} heldout", held, stream, enabled)
        if family == "arith":
            build = _build_arith(settings, n, held, seed, bar, heldout_bar)
        elif family == "algebra":
            build = _build_algebra(settings, n, held, seed, bar, heldout_bar)
        else:
            build = _build_code(settings, n, held, seed, bar, heldout_bar, jobs)
        builds[family] = build

    split_examples: dict[str, list[Example]] = {name: [] for name in MAIN_SPLITS}
    notes: list[str] = []
    for family, build in builds.items():
        notes.extend(build.notes)
        try:
            counts = _split_counts(len(build.main), fractions)
        except ValueError as error:
            raise ValueError(f"task {family!r}: {error}") from None
        start = 0
        for name in MAIN_SPLITS:
            split_examples[name].extend(build.main[start:start + counts[name]])
            start += counts[name]
        family_counts[family] = dict(counts)
        if build.heldout:
            split_examples[f"{HELDOUT_SPLIT}_{family}"] = build.heldout
            family_counts[family][f"{HELDOUT_SPLIT}_{family}"] = len(build.heldout)
    for name in MAIN_SPLITS:  # interleave the tasks, reproducibly
        random.Random(f"odin.mixed:{seed}/{name}").shuffle(split_examples[name])
    check_split_hygiene(split_examples)

    reversed_tasks = sorted(task for build in builds.values() if build.settings.get("reverse_answer")
                            for task in build.task_names)
    out_path = Path(out_dir)
    split_entries = _write_splits(out_path, split_examples)
    manifest: dict[str, Any] = {
        "counts": family_counts,
        "discarded": {family: build.discarded for family, build in builds.items() if build.discarded is not None},
        "format": DATASET_FORMAT,
        "format_version": DATASET_FORMAT_VERSION,
        "generator": "mixed",
        "mix": weights,
        "notes": notes,
        "requested": {"mix": list(mix) if mix is not None and not isinstance(mix, Mapping) else mix,
                      "n_examples": n_examples, "n_heldout": n_heldout},
        "seed": seed,
        "settings": {
            "reverse_answer": bool(reversed_tasks),
            "reversed_tasks": reversed_tasks,
            "scratchpad": any(build.settings.get("scratchpad") for build in builds.values()),
            "split": list(fractions),
            "tasks": {family: build.settings for family, build in builds.items()},
        },
        "splits": split_entries,
        "task_names": {family: build.task_names for family, build in builds.items()},
        "tasks": families,
    }
    write_text_atomic(out_path / MANIFEST_NAME, json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    return manifest


def check_split_hygiene(split_examples: Mapping[str, Sequence[Example]]) -> None:
    """Raise ``DatasetFormatError`` if a prompt occurs twice in one split or in two splits."""
    owner: dict[str, str] = {}
    for name, examples in split_examples.items():
        here: set[str] = set()
        for example in examples:
            if example.prompt in here:
                raise DatasetFormatError(f"prompt {example.prompt!r} occurs twice in split {name!r}")
            if example.prompt in owner:
                raise DatasetFormatError(
                    f"prompt {example.prompt!r} occurs in split {owner[example.prompt]!r} and in {name!r}")
            here.add(example.prompt)
        owner.update(dict.fromkeys(here, name))
