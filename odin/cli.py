"""`odin` — the command line: info, model info, data build, train, eval.

    odin                     # no sub-command = `odin train`: the default recipe end to end
    odin info                # CPU, features, ISA in use, compiler, version
    odin model info CONFIG   # parameter count and memory of a TOML config, a preset or a checkpoint
    odin quantize CHECKPOINT OUT --type q8_0|q4_0|q4_1|q5_0|q5_1 [--embed TYPE] [--overwrite]
    odin data build --out DIR ...
    odin train [--preset P] [--config FILE] [--data DIR] [--steps N] [--threads K] [--seed S] [--out DIR]
               [--resume | --overwrite | --init-from CHECKPOINT]
    odin eval CHECKPOINT [--data DIR] [--json]

Errors a user can fix (bad config, missing data, corrupt checkpoint, a run folder that holds
a run or is in use) print one line and exit with status 2, before anything is written; an
interrupted training saves a checkpoint and exits 130 (SIGINT, Ctrl-C) or 143 (SIGTERM).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_PRESET = "arith-3digit"


def _cmd_info(args: argparse.Namespace) -> int:
    from odin import native

    info = native.cpu_info()
    info["python"] = platform.python_version()
    info["platform"] = platform.platform()
    from odin.distributed.world import mpi_status

    info["mpi"] = mpi_status()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"ODIN {info['version']}")
    print(f"  CPU             {info['cpu']}")
    print(f"  features        {', '.join(info['features']) or '(none detected)'}")
    print(f"  ISAs available  {', '.join(info['available_isas'])}")
    print(f"  ISA in use      {info['isa']}   (override with ODIN_ISA=scalar|avx2|avxvnni|avx512|avx512vnni)")
    print(f"  compiler        {info['compiler']}")
    print(f"  python          {info['python']} on {info['platform']}")
    print(f"  MPI             {info['mpi']}")
    return 0


def _checkpoint_model(path: str):
    """(RunConfig, weight types) of the checkpoint `path` stands for (odin-infer -m's rule),
    from its config.json and its model file's header: no weight is read."""
    from odin.checkpoint_io import CheckpointError
    from odin.checkpoint_locate import locate_checkpoint
    from odin.config import RunConfig
    from odin.quant.checkpoint import stored_weights

    folder = locate_checkpoint(path)
    config_file = folder / "config.json"
    try:
        cfg = RunConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{config_file}: {error}") from None
    return cfg, stored_weights(folder)


def _cmd_model_info(args: argparse.Namespace) -> int:
    from odin.blueprint import describe
    from odin.checkpoint_locate import CHECKPOINT_FILES
    from odin.config import PRESETS, load_config, preset_config

    weights = None
    given = Path(args.config)
    if args.config in PRESETS:
        cfg = preset_config(args.config)
    elif given.is_dir() or given.name in CHECKPOINT_FILES:  # a checkpoint: its model and weight types
        cfg, weights = _checkpoint_model(args.config)
    else:
        cfg = load_config(args.config)
    from odin.blueprint import Blueprint

    from odin.spheres import default_threads

    if args.threads is not None and not 0 <= args.threads <= 64:
        raise ValueError(f"--threads must be in 0..64 (0: min(12, cores)), got {args.threads}")
    bp = Blueprint(cfg.model)
    batch = args.batch or cfg.train.batch_size
    seq = args.seq_len or cfg.model.context
    print(describe(bp, batch, seq, args.threads or default_threads(), weights))
    return 0


def _run_config(args: argparse.Namespace):
    from odin.config import load_config, preset_config

    from odin.tokenizers import CHAR_VOCAB_SIZE

    # odin train's datasets are char-tokenized, so a preset takes the char vocabulary (as in
    # the dashboard); odin-100m's 32k vocabulary is for a BPE tokenizer (odin-pipeline)
    cfg = load_config(args.config) if args.config else preset_config(args.preset, vocab_size=CHAR_VOCAB_SIZE)
    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.lr is not None:
        overrides["lr"] = args.lr
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    return cfg


def _ensure_preset_data(preset: str, data_dir: Path) -> None:
    """Build the dataset a preset names (data/<preset>) the first time it is needed; refuse one
    built there with other options (it would be trained on silently)."""
    from odin.config import preset_data_spec
    from odin.data.dataset import build_dataset, build_mixed_dataset, load_manifest
    from odin.run_checks import dataset_spec_differences

    spec = preset_data_spec(preset)
    if (data_dir / "dataset.json").exists():
        if spec is not None:
            differences = dataset_spec_differences(spec, load_manifest(data_dir))
            if differences:
                raise ValueError(f"{data_dir} was built with other options than preset {preset!r} asks for "
                                 f"({'; '.join(differences)}): remove it to have it rebuilt, or pass --data "
                                 f"{data_dir} to train on it anyway")
        return
    if spec is None:
        raise FileNotFoundError(f"preset {preset!r} names no dataset: pass --data DIR (see `odin data build`)")
    print(f"building the dataset of preset {preset!r} in {data_dir}: {spec} ...", file=sys.stderr)
    if "tasks" in spec:  # algebra / code / mixed recipes; the sandbox runs a worker per core
        build_mixed_dataset(data_dir, **spec, jobs=os.cpu_count() or 1)
    else:
        build_dataset(data_dir, **spec)


def _recorded_data_dir(trainer_state: dict, run_config, checkpoint: Path) -> Path:
    """The dataset a checkpoint was trained on (its recorded path; older checkpoints recorded it
    relative to where `odin train` ran). A preset's dataset that is gone is built again there
    (the build is deterministic); anything else that is gone is a one-line error."""
    from odin.config import PRESETS, preset_data_spec

    recorded = trainer_state.get("data_dir")
    if not isinstance(recorded, str) or not recorded:
        raise FileNotFoundError(f"{checkpoint} records no dataset: pass --data DIR")
    data_dir = Path(recorded)
    if (data_dir / "dataset.json").exists():
        from odin.data.dataset import load_manifest

        trained_on, manifest = trainer_state.get("dataset"), load_manifest(data_dir)
        if isinstance(trained_on, dict) and (trained_on.get("seed"), trained_on.get("settings")) != \
                (manifest.get("seed"), manifest.get("settings")):
            raise ValueError(f"{data_dir} no longer holds the dataset {checkpoint} was trained on (its seed or build "
                             f"settings differ): pass --data DIR")
        return data_dir
    preset = run_config.preset
    if preset in PRESETS and preset_data_spec(preset) is not None:
        _ensure_preset_data(preset, data_dir)
        return data_dir
    raise FileNotFoundError(f"the dataset {checkpoint} was trained on ({data_dir}) is not there: pass --data DIR")


def _resume_config(args: argparse.Namespace, ckpt_dir: Path):
    """The run config a resumed run is asked for: its checkpoint's own, with the flags given
    on top (train() refuses any that differs); None when there is no checkpoint to read
    (train() then says so)."""
    from odin.checkpoint_io import CheckpointError, load_checkpoint

    if args.preset is not None or args.config is not None:
        return _run_config(args)
    try:
        saved = load_checkpoint(ckpt_dir).run_config()
    except (CheckpointError, ValueError, TypeError):
        return None
    overrides = {name: getattr(args, name) for name in ("steps", "seed", "batch_size", "lr")
                 if getattr(args, name) is not None}
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, **overrides)) if overrides else saved


def _cmd_train(args: argparse.Namespace) -> int:
    from odin.distributed import world as mpi_world

    world = mpi_world()  # None unless started by mpirun with 2+ ranks
    if world is not None and world.rank > 0:  # rank 0 checks, builds and writes; this one follows
        from odin.distributed.run import follow

        return follow(world, args.threads)
    try:
        return _train_as_root(args, world)
    except BaseException:
        if world is not None:
            from odin.distributed.run import refuse_plan

            refuse_plan(world)
        raise


def _train_as_root(args: argparse.Namespace, world) -> int:
    from odin.evaluate import format_summary
    from odin.run_checks import resolve_threads
    from odin.runlock import refuse_busy_folder, refuse_existing_run
    from odin.train import train

    # every argument is checked before anything is read, built or written
    resolve_threads(args.threads)
    if args.out:
        refuse_busy_folder(args.out)
    if args.resume and args.init_from:
        raise ValueError("--init-from starts a new run and --resume continues one: give one of them")
    if args.init_from:  # quantized weights cannot train: said before any dataset is built
        from odin.quant.checkpoint import refuse_training

        refuse_training(args.init_from, "--init-from")
    if args.resume:
        name = args.preset or (Path(args.config).stem if args.config else DEFAULT_PRESET)
        out_dir = Path(args.out) if args.out else Path("runs") / name
        refuse_existing_run(out_dir, resume=True, overwrite=args.overwrite)
        cfg = _resume_config(args, out_dir / "checkpoint")
        if args.data:
            data_dir = Path(args.data)
        else:
            from odin.checkpoint_io import CheckpointError, read_progress

            try:
                _, state = read_progress(out_dir / "checkpoint")
            except (CheckpointError, OSError):
                state = None
            data_dir = _recorded_data_dir(state, cfg, out_dir / "checkpoint") if state and cfg else Path(".")
    else:
        args.preset = args.preset or DEFAULT_PRESET
        cfg = _run_config(args)
        out_dir = Path(args.out) if args.out else Path("runs") / (cfg.preset or Path(args.config).stem)
        refuse_existing_run(out_dir, resume=False, overwrite=args.overwrite)
        if args.data:
            data_dir = Path(args.data)
        else:
            preset = cfg.preset or DEFAULT_PRESET
            data_dir = Path("data") / preset
            _ensure_preset_data(preset, data_dir)
    result = train(cfg, data_dir, out_dir, resume=args.resume, overwrite=args.overwrite, init_from=args.init_from,
                   threads=args.threads, progress=not args.json, world=world)
    summary = {
        "checkpoint": str(result.checkpoint), "steps": result.steps, "final_loss": result.final_loss,
        "seconds": round(result.seconds, 2), "tokens_per_s": round(result.tokens_per_s, 1),
        "eval": {k: v.to_dict() for k, v in result.evals.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"\ntrained {result.steps} steps in {result.seconds:.1f} s ({result.tokens_per_s / 1e3:.1f}k tokens/s); "
          f"checkpoint: {result.checkpoint}")
    if result.evals:
        print(format_summary(result.evals))
    _print_samples(result.checkpoint, data_dir)
    return 0


def _print_samples(checkpoint: Path, data_dir: Path, n: int = 5) -> None:
    from odin.checkpoint import load_model_checkpoint
    from odin.data.dataset import load_manifest, load_split
    from odin.data.scratchpad import display_answer
    from odin.evaluate import answers_match, eval_options, greedy_predictions
    from odin.infer_cli import infer_command
    from odin.prompt_text import escape_for_command_line

    loaded = load_model_checkpoint(checkpoint, with_optimizer=False)
    opts = eval_options(load_manifest(data_dir))
    examples = load_split(data_dir, "test")[:n]
    predictions, _ = greedy_predictions(loaded.model, loaded.tokenizer, examples)
    print("\nsample answers (test set):")
    for ex, got in zip(examples, predictions):
        rev = opts["reverse_answer"] and (opts["reversed_tasks"] is None or ex.task in opts["reversed_tasks"])
        ok = answers_match(ex.answer, got)
        shown, want = display_answer(got, rev), display_answer(ex.answer, rev)
        prompt = escape_for_command_line(ex.prompt)
        print(f"  {'ok ' if ok else 'ERR'} {prompt}{shown}" + ("" if ok else f"   (expected {want})"))
    if examples:
        print(f"\ntalk to it:  {infer_command(str(checkpoint), examples[0].prompt)}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from odin.checkpoint import load_model_checkpoint
    from odin.evaluate import evaluate_checkpoint, format_summary, refuse_text_model

    ckpt = Path(args.checkpoint)
    loaded = load_model_checkpoint(ckpt, with_optimizer=False)
    if "pipeline" in loaded.trainer_state and not args.data:  # a text model: scored on its pipeline's val shards
        return _eval_pipeline_checkpoint(args, ckpt, loaded)
    refuse_text_model(loaded, ckpt)  # before anything is read or written for it
    data_dir = Path(args.data) if args.data else _recorded_data_dir(loaded.trainer_state, loaded.run_config, ckpt)
    splits = args.splits.split(",") if args.splits else None
    errors_dir = Path(args.errors) if args.errors else ckpt.parent
    results = evaluate_checkpoint(ckpt, data_dir, splits, args.limit, errors_dir=errors_dir, context=args.context,
                                  loaded=loaded)
    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))
    else:
        print(format_summary(results))
        print(f"wrong answers written to {errors_dir}/<split>.errors.jsonl")
    return 0


def _eval_pipeline_checkpoint(args: argparse.Namespace, ckpt: Path, loaded) -> int:
    from odin.eval_text import score_pipeline_checkpoint

    if args.splits or args.context or args.errors:
        raise ValueError("an odin-pipeline model is scored on its pipeline's validation shards: --splits, "
                         "--context and --errors are for the reasoning datasets of odin train")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of windows, got {args.limit}")
    score = score_pipeline_checkpoint(ckpt, loaded, max_windows=args.limit)
    if args.json:
        print(json.dumps(score.to_dict(), indent=2))
    else:
        print(f"{ckpt} (odin-pipeline model, step {loaded.step}): loss {score.loss:.4f}, perplexity "
              f"{score.perplexity:.2f} on {score.tokens:,} held-out tokens of {score.shards} shards in {score.folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from odin.data.cli import register as register_data

    p = argparse.ArgumentParser(prog="odin", description="ODIN: train small language models on the CPU.")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("info", help="CPU, instruction sets, compiler, version")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_info)

    m = sub.add_parser("model", help="model configs")
    msub = m.add_subparsers(dest="model_command", required=True)
    mi = msub.add_parser("info", help="parameter count and memory of a config file, preset or checkpoint")
    mi.add_argument("config", help="a TOML config file, a preset name, or a checkpoint (its folder, its run folder, "
                                   "its model.safetensors)")
    mi.add_argument("--batch", type=int, default=None)
    mi.add_argument("--seq-len", type=int, default=None)
    mi.add_argument("--threads", type=int, default=None,
                    help="training threads for the memory of odin train, 1..64; 0 or leaving it out: min(12, cores)")
    mi.set_defaults(func=_cmd_model_info)

    register_data(sub)
    from odin.web.cli import register as register_web

    register_web(sub)  # odin wasm build, odin export web, odin serve-web
    from odin.quant.cli import register as register_quant

    register_quant(sub)  # odin quantize

    t = sub.add_parser("train", help="train a model (default: the 3-digit addition recipe)")
    t.add_argument("--preset", default=None, help=f"a preset (default: {DEFAULT_PRESET})")
    t.add_argument("--config", default=None, help="TOML config (overrides --preset)")
    t.add_argument("--data", default=None, help="dataset directory (default: data/<preset>, built from the preset's "
                                                 "data spec if missing)")
    t.add_argument("--out", default=None, help="run directory (default: runs/<preset>)")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--threads", type=int, default=None,
                   help="native threads, 1..64; 0 or leaving it out: min(12, cores)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoint with the run's own settings (flags given must match them)")
    t.add_argument("--overwrite", action="store_true", help="start the run in --out again, replacing the run there")
    t.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="a new run starting from the weights of any ODIN checkpoint (its model shape; fresh "
                        "optimizer, step 0)")
    t.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data", default=None, help="dataset directory (default: the one it was trained on)")
    e.add_argument("--splits", default=None, help="comma-separated (default: val, test and every heldout split)")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--errors", default=None, help="directory for <split>.errors.jsonl")
    e.add_argument("--context", type=int, default=None,
                   help="run a model without learned positions (positions = none/alibi, or RWKV) over this many "
                        "positions, to score examples longer than its training context")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_eval)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from odin.errors import native_load_error

    isa_problem = native_load_error()  # first: any import below may load the library
    if isa_problem:  # a bad ODIN_ISA: one line, not a traceback
        print(f"odin: error: {isa_problem}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command is None:
        args = parser.parse_args(["train"])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # Ctrl-C (130) or, from odin train, SIGTERM (143)
        if _mpi_follower_rank():
            return int(getattr(exc, "exit_status", 130))
        _say(f"\ninterrupted{': ' + str(exc) if str(exc) else ''}")
        return int(getattr(exc, "exit_status", 130))
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing more to say
        _silence_closed_streams()
        return 1
    except Exception as exc:
        from odin.distributed.world import MPIError, PeerLost
        from odin.native import OdinError

        if isinstance(exc, MPIError):  # one line; a lost rank cannot join a clean exit: end them all
            if not isinstance(exc, PeerLost) and _mpi_follower_rank():
                return 2  # the same on every rank (no mpi4py, a bad setting): rank 0 says it
            _say(f"odin {args.command}: error: {exc}")
            if isinstance(exc, PeerLost):
                _abort_mpi_world(1)
            return 2
        if isinstance(exc, (OdinError, ValueError, OSError)):
            status = 1 if isinstance(exc, OdinError) else 2  # the engine's failure / the user's to fix
            follower = _mpi_follower_rank()
            if follower and getattr(exc, "every_rank", False):
                return status  # every rank has it at the same point: rank 0 says it
            _say(f"odin {args.command}: error: {f'rank {follower}: ' if follower else ''}{exc}")
            return status
        raise
    finally:
        _silence_closed_streams()


def _mpi_follower_rank() -> int:
    """This process's rank in an MPI run when it is not rank 0, else 0."""
    from odin.distributed.world import current, launched_rank

    return current().rank if current() is not None else launched_rank()


def _abort_mpi_world(code: int) -> None:
    """End every rank of the MPI run now (a lost rank cannot take part in a clean exit)."""
    from odin.distributed.world import current

    if current() is not None:
        current().abort(code)


def _say(line: str) -> None:
    """A last message to stderr, which may be a closed pipe by now."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _silence_closed_streams() -> None:
    """Flush stdout/stderr; one whose reader is gone is pointed at /dev/null, so the interpreter's
    own flush at exit neither prints a BrokenPipeError nor changes the exit status."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass


if __name__ == "__main__":
    raise SystemExit(main())
