"""Dataset builder and loader: JSONL splits plus a ``dataset.json`` manifest.

The on-disk format is documented in ``docs/data-format.md``. Builds are byte-identical
for the same arguments (no timestamps, sorted keys, ``\\n`` line endings), and no prompt
appears in more than one split: problems are deduplicated before being cut into splits,
and the held-out split uses operands longer than any training operand.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from odin.data.arithmetic import (
    MAX_SUPPORTED_DIGITS,
    ArithmeticConfig,
    count_distinct_problems,
    sample_unique_examples,
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
) -> dict[str, Any]:
    """Write train/val/test (+ heldout) JSONL files and ``dataset.json``; return the manifest.

    ``n_heldout=None`` makes the held-out split as large as the requested test split;
    ``n_heldout=0`` writes no held-out split. ``heldout_digits=None`` means
    ``max_digits+1 .. max_digits+2`` digits per operand.
    """
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

    out_path = Path(out_dir)
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
    # A held-out file from an earlier build in the same directory would otherwise linger.
    if HELDOUT_SPLIT not in split_examples and split_path(out_path, HELDOUT_SPLIT).exists():
        split_path(out_path, HELDOUT_SPLIT).unlink()

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
        },
        "splits": split_entries,
    }
    write_text_atomic(out_path / MANIFEST_NAME, json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    return manifest


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
