"""`odin data …` sub-commands. The top-level CLI calls :func:`register` with its subparsers.

``register(subparsers)`` adds the ``data`` command with its own ``build`` sub-command, so
the result is ``odin data build --out DIR …``. A CLI that already has a ``data`` parser can
call :func:`add_build_parser` on that parser's subparsers instead.

Without ``--tasks`` the build is the arithmetic-only dataset of
:func:`odin.data.dataset.build_dataset` (splits train/val/test/heldout). With ``--tasks``
(e.g. ``--tasks arith,algebra,code --mix 0.4,0.3,0.3``) it is a mixed-task dataset of
:func:`odin.data.dataset.build_mixed_dataset` (train/val/test + ``heldout_<task>``).
"""
from __future__ import annotations

import argparse
import os
import sys

from odin.data.algebra import ALGEBRA_KINDS
from odin.data.arithmetic import ALL_OPERATIONS
from odin.data.dataset import FAMILIES, build_dataset, build_mixed_dataset


def _parse_ops(text: str) -> tuple[str, ...]:
    ops = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [op for op in ops if op not in ALL_OPERATIONS]
    if not ops or unknown:
        raise argparse.ArgumentTypeError(
            f"--ops expects a comma-separated subset of {','.join(ALL_OPERATIONS)}, got {text!r}"
        )
    return ops


def _parse_digit_range(text: str, flag: str = "--heldout-digits") -> tuple[int, int]:
    """'4' -> (4, 4); '4-5' or '4,5' -> (4, 5)."""
    parts = text.replace(",", "-").split("-")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{flag} expects N or MIN-MAX, got {text!r}")
    return (values[0], values[-1])


def _parse_level_range(text: str) -> tuple[int, int]:
    return _parse_digit_range(text, "a level option")


def _parse_tasks(text: str) -> tuple[str, ...]:
    tasks = tuple(part.strip() for part in text.split(",") if part.strip())
    if not tasks or any(task not in FAMILIES for task in tasks) or len(set(tasks)) != len(tasks):
        raise argparse.ArgumentTypeError(
            f"--tasks expects distinct names from {','.join(FAMILIES)}, got {text!r}")
    return tasks


def _parse_mix(text: str) -> tuple[float, ...]:
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        weights = ()
    if not weights or any(not weight > 0 for weight in weights):
        raise argparse.ArgumentTypeError(f"--mix expects positive comma-separated weights, got {text!r}")
    return weights


def _parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    if not kinds or any(kind not in ALGEBRA_KINDS for kind in kinds):
        raise argparse.ArgumentTypeError(
            f"--algebra-kinds expects a comma-separated subset of {','.join(ALGEBRA_KINDS)}, got {text!r}")
    return kinds


def add_build_parser(data_subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    parser = data_subparsers.add_parser(
        "build",
        help="generate an arithmetic dataset (train/val/test/heldout JSONL + dataset.json)",
        description="Generate a deterministic arithmetic dataset; see docs/data-format.md.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--n", type=int, default=10_000, help="examples before splitting (default 10000)")
    parser.add_argument("--ops", type=_parse_ops, default=None,
                        help="comma list of add,sub,mul,div (default add; with --tasks all four)")
    parser.add_argument("--max-digits", type=int, default=3, help="most digits per operand (default 3)")
    parser.add_argument("--min-digits", type=int, default=1, help="fewest digits per operand (default 1)")
    parser.add_argument("--reverse", action="store_true", help="write answer digits least-significant first")
    parser.add_argument(
        "--heldout-digits", type=_parse_digit_range, default=None, metavar="N|MIN-MAX",
        help="operand digits of the held-out split (default max-digits+1 to max-digits+2)",
    )
    parser.add_argument("--n-heldout", type=int, default=None,
                        help="held-out examples, per task with --tasks (default: test size; 0 = none)")
    parser.add_argument("--prompt-spaces", type=int, default=0, metavar="K",
                        help="write training prompts with 0..K random spaces around the operands "
                             "(length generalisation; val/test/held-out stay plain; default 0)")
    parser.add_argument("--prompt-zeros", type=int, default=0, metavar="W",
                        help="write each training operand with leading zeros to a random width up to W "
                             "(length generalisation; val/test/held-out stay plain; default 0 = off)")
    parser.add_argument("--answer-width", type=int, default=0, metavar="W",
                        help="write every answer with exactly W digits, zeros in the high places "
                             "(whole non-negative answers; default 0 = as they are)")
    mixed = parser.add_argument_group("mixed-task datasets (with --tasks)")
    mixed.add_argument("--tasks", type=_parse_tasks, default=None, metavar="LIST",
                       help=f"comma list of {','.join(FAMILIES)}: build a mixed dataset with heldout_<task> splits")
    mixed.add_argument("--mix", type=_parse_mix, default=None, metavar="W,W,...",
                       help="weight of each task in --tasks order (normalised; default equal)")
    mixed.add_argument("--algebra-kinds", type=_parse_kinds, default=ALGEBRA_KINDS, metavar="LIST",
                       help=f"comma list of {','.join(ALGEBRA_KINDS)} (default all)")
    mixed.add_argument("--algebra-levels", type=_parse_level_range, default=(1, 3), metavar="MIN-MAX",
                       help="algebra difficulty levels 1-5 (default 1-3)")
    mixed.add_argument("--code-levels", type=_parse_level_range, default=(1, 3), metavar="MIN-MAX",
                       help="program levels 1-5 (default 1-3)")
    mixed.add_argument("--heldout-levels", type=_parse_level_range, default=None, metavar="N|MIN-MAX",
                       help="levels of the algebra and code held-out splits (default max+1 to max+2, at most 5)")
    mixed.add_argument("--scratchpad", action="store_true",
                       help="step-by-step answers for add, mul and algebra, execution traces for code "
                            "(final result after '#')")
    mixed.add_argument("--reverse-algebra", action="store_true", help="write algebra answer digits reversed too")
    mixed.add_argument("--timeout", type=float, default=2.0, help="seconds per program in the sandbox (default 2)")
    mixed.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                       help="sandbox worker processes (default: one per CPU core; the data do not depend on it)")
    progress = mixed.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="draw progress bars on stderr (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run_build)
    return parser


def register(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    data_parser = subparsers.add_parser("data", help="build and inspect datasets")
    data_subparsers = data_parser.add_subparsers(dest="data_command", metavar="COMMAND")
    data_subparsers.required = True
    add_build_parser(data_subparsers)
    return data_parser


def _mixed_tasks(args: argparse.Namespace) -> dict:
    settings: dict[str, dict] = {}
    for family in args.tasks:
        if family == "arith":
            arith = {"ops": list(args.ops or ALL_OPERATIONS), "min_digits": args.min_digits, "max_digits": args.max_digits}
            if args.heldout_digits is not None:
                arith["heldout_digits"] = list(args.heldout_digits)
            settings[family] = arith
        elif family == "algebra":
            settings[family] = {"kinds": list(args.algebra_kinds), "min_level": args.algebra_levels[0],
                                "max_level": args.algebra_levels[1], "reverse_answer": args.reverse_algebra}
        else:
            settings[family] = {"min_level": args.code_levels[0], "max_level": args.code_levels[1],
                                "timeout": args.timeout}
        if family != "arith" and args.heldout_levels is not None:
            settings[family]["heldout_levels"] = list(args.heldout_levels)
    return settings


def run_build(args: argparse.Namespace) -> int:
    if getattr(args, "tasks", None):
        return _run_mixed_build(args)
    mixed_only = [flag for flag, used in (("--mix", args.mix is not None), ("--scratchpad", args.scratchpad),
                                          ("--reverse-algebra", args.reverse_algebra)) if used]
    if mixed_only:
        print(f"odin data build: error: {mixed_only[0]} needs --tasks", file=sys.stderr)
        return 2
    try:
        manifest = build_dataset(
            args.out,
            seed=args.seed,
            n_examples=args.n,
            ops=args.ops or ("add",),
            max_digits=args.max_digits,
            min_digits=args.min_digits,
            reverse_answer=args.reverse,
            heldout_digits=args.heldout_digits,
            n_heldout=args.n_heldout,
            prompt_spaces=args.prompt_spaces,
            prompt_zeros=args.prompt_zeros,
            answer_width=args.answer_width,
        )
    except (ValueError, OSError) as error:
        print(f"odin data build: error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {entry['count']}" for name, entry in manifest["splits"].items())
    print(f"wrote {args.out}: {counts}")
    for note in manifest["notes"]:
        print(f"note: {note}")
    return 0


def _run_mixed_build(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        manifest = build_mixed_dataset(
            args.out, seed=args.seed, n_examples=args.n, tasks=_mixed_tasks(args), mix=args.mix,
            n_heldout=args.n_heldout, reverse_answer=args.reverse, scratchpad=args.scratchpad,
            jobs=args.jobs, progress=progress,
        )
    except (ValueError, OSError, RuntimeError) as error:
        print(f"odin data build: error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {entry['count']}" for name, entry in manifest["splits"].items())
    print(f"wrote {args.out}: {counts}")
    for family, parts in manifest["discarded"].items():
        for part, counts_ in parts.items():
            dropped = {reason: count for reason, count in counts_.items() if reason != "candidates" and count}
            if dropped:
                listed = ", ".join(f"{reason} {count}" for reason, count in sorted(dropped.items()))
                print(f"{family} {part}: discarded {sum(dropped.values())} of {counts_['candidates']} programs "
                      f"({listed})")
    for note in manifest["notes"]:
        print(f"note: {note}")
    return 0
