"""`odin data …` sub-commands. The top-level CLI calls :func:`register` with its subparsers.

``register(subparsers)`` adds the ``data`` command with its own ``build`` sub-command, so
the result is ``odin data build --out DIR …``. A CLI that already has a ``data`` parser can
call :func:`add_build_parser` on that parser's subparsers instead.
"""
from __future__ import annotations

import argparse
import sys

from odin.data.arithmetic import ALL_OPERATIONS
from odin.data.dataset import build_dataset


def _parse_ops(text: str) -> tuple[str, ...]:
    ops = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [op for op in ops if op not in ALL_OPERATIONS]
    if not ops or unknown:
        raise argparse.ArgumentTypeError(
            f"--ops expects a comma-separated subset of {','.join(ALL_OPERATIONS)}, got {text!r}"
        )
    return ops


def _parse_digit_range(text: str) -> tuple[int, int]:
    """'4' -> (4, 4); '4-5' or '4,5' -> (4, 5)."""
    parts = text.replace(",", "-").split("-")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--heldout-digits expects N or MIN-MAX, got {text!r}")
    return (values[0], values[-1])


def add_build_parser(data_subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    parser = data_subparsers.add_parser(
        "build",
        help="generate an arithmetic dataset (train/val/test/heldout JSONL + dataset.json)",
        description="Generate a deterministic arithmetic dataset; see docs/data-format.md.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--n", type=int, default=10_000, help="examples before splitting (default 10000)")
    parser.add_argument("--ops", type=_parse_ops, default=("add",), help="comma list of add,sub,mul,div (default add)")
    parser.add_argument("--max-digits", type=int, default=3, help="most digits per operand (default 3)")
    parser.add_argument("--min-digits", type=int, default=1, help="fewest digits per operand (default 1)")
    parser.add_argument("--reverse", action="store_true", help="write answer digits least-significant first")
    parser.add_argument(
        "--heldout-digits", type=_parse_digit_range, default=None, metavar="N|MIN-MAX",
        help="operand digits of the held-out split (default max-digits+1 to max-digits+2)",
    )
    parser.add_argument("--n-heldout", type=int, default=None, help="held-out examples (default: test size; 0 = none)")
    parser.set_defaults(func=run_build)
    return parser


def register(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    data_parser = subparsers.add_parser("data", help="build and inspect datasets")
    data_subparsers = data_parser.add_subparsers(dest="data_command", metavar="COMMAND")
    data_subparsers.required = True
    add_build_parser(data_subparsers)
    return data_parser


def run_build(args: argparse.Namespace) -> int:
    try:
        manifest = build_dataset(
            args.out,
            seed=args.seed,
            n_examples=args.n,
            ops=args.ops,
            max_digits=args.max_digits,
            min_digits=args.min_digits,
            reverse_answer=args.reverse,
            heldout_digits=args.heldout_digits,
            n_heldout=args.n_heldout,
        )
    except (ValueError, OSError) as error:
        print(f"odin data build: error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {entry['count']}" for name, entry in manifest["splits"].items())
    print(f"wrote {args.out}: {counts}")
    for note in manifest["notes"]:
        print(f"note: {note}")
    return 0
