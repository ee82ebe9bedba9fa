"""`odin-pipeline`: run a watched-folder pipeline, or show its state.

    odin-pipeline run FOLDER [--config pipeline.toml] [--once] [--quiet]
    odin-pipeline status FOLDER [--json]
    odin-pipeline check-config [PATH]

Exit status: 0 done (or stopped by Ctrl-C / SIGTERM), 1 the pipeline stopped on an error,
2 a usage or configuration error (the message names the key).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from odin.pipeline.config import PipelineConfigError, load_pipeline_config

DEFAULT_CONFIG = "pipeline.toml"


def _config_path(arg: Optional[str], folder: Optional[Path]) -> Optional[Path]:
    """--config, else FOLDER/pipeline.toml, else ./pipeline.toml, else the built-in defaults."""
    if arg:
        return Path(arg)
    for candidate in ([folder / DEFAULT_CONFIG] if folder else []) + [Path(DEFAULT_CONFIG)]:
        if candidate.is_file():
            return candidate
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="odin-pipeline",
        description="Watch a folder and keep training a model on what is dropped into FOLDER/inbox/: "
                    "crawl -> preprocess -> tokenize -> train (docs/pipeline.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline on FOLDER (creates it and FOLDER/inbox/)")
    run.add_argument("folder", type=Path)
    run.add_argument("--config", help="pipeline.toml to use (default: FOLDER/pipeline.toml, then ./pipeline.toml, "
                                      "then built-in defaults)")
    run.add_argument("--once", "--exit-when-idle", dest="once", action="store_true",
                     help="process what is there (and what arrives meanwhile), then exit when idle")
    run.add_argument("--quiet", action="store_true", help="only errors and the status line, no per-item lines")
    status = sub.add_parser("status", help="show the state of the pipeline in FOLDER (works while it runs)")
    status.add_argument("folder", type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    check = sub.add_parser("check-config", help="validate a pipeline.toml and print the settings in effect")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from odin.errors import native_load_error

    isa_problem = native_load_error()
    if isa_problem:  # a bad ODIN_ISA: one line, not a traceback from the first native import
        print(f"odin-pipeline: error: {isa_problem}", file=sys.stderr)
        return 2
    if args.command == "status":
        from odin.pipeline.status import collect_status, dumps, format_status

        try:
            info = collect_status(args.folder)
        except FileNotFoundError as error:
            print(f"odin-pipeline: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # sqlite3 errors: corrupt or foreign file
            print(f"odin-pipeline: cannot read {args.folder}/pipeline.db: {error}", file=sys.stderr)
            return 1
        try:
            print(dumps(info) if args.json else format_status(info))
        except BrokenPipeError:  # `odin-pipeline status X | head`
            sys.stderr.close()
        return 0
    if args.command == "check-config":
        try:
            config = load_pipeline_config(args.config)
        except PipelineConfigError as error:
            print(f"odin-pipeline: {error}", file=sys.stderr)
            return 2
        _print_config(config)
        return 0
    try:
        config = load_pipeline_config(_config_path(args.config, args.folder))
    except PipelineConfigError as error:
        print(f"odin-pipeline: {error}", file=sys.stderr)
        return 2
    from odin.distributed import MPIError, world as mpi_world

    try:
        world = mpi_world()  # None unless started by mpirun with 2+ ranks
    except MPIError as error:
        print(f"odin-pipeline: error: {error}", file=sys.stderr)
        return 2
    if world is not None and world.rank > 0:  # rank 0 is the pipeline; this rank trains with it
        from odin.distributed.pipeline import follow

        return _mpi_guarded(world, lambda: follow(world))
    from odin.pipeline.runner import Runner  # imports the native library: after the cheap checks

    if world is None:
        return Runner(args.folder, config, once=args.once, quiet=args.quiet).run()
    from odin.distributed.pipeline import end

    status = 1
    try:
        status = _mpi_guarded(world, lambda: Runner(args.folder, config, once=args.once, quiet=args.quiet).run())
    finally:
        end(world, status)
    return status


def _mpi_guarded(world, body) -> int:
    """A lost rank ends every rank with one line (it cannot take part in a clean exit)."""
    from odin.distributed import PeerLost

    try:
        return body()
    except PeerLost as error:
        print(f"odin-pipeline: error: {error}", file=sys.stderr, flush=True)
        world.abort(1)
        return 1


def _print_config(config) -> None:
    """The settings in effect as TOML that can be pasted back into a pipeline.toml."""
    import tomli_w

    print(f"# {config.source}: valid; every setting in effect")
    print(tomli_w.dumps(config.to_toml_dict()), end="")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
