"""Checkpoint folders on disk: copy one (Save when idle) and place one where a resumed
run expects it (`<run folder>/checkpoint`, which is what odin.train.train(resume=True) reads)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def copy_checkpoint(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy a checkpoint folder to `target`, replacing what is there only once the copy is
    complete (copy to a sibling temp folder, then swap), like the checkpoint writer does."""
    source, target = Path(source), Path(target)
    if not (source / "model.safetensors").is_file():
        raise FileNotFoundError(f"{source} is not a checkpoint (no model.safetensors)")
    if source.resolve() == target.resolve():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.copy-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)
    return target


def place_for_resume(checkpoint: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> Path:
    """Make `run_dir/checkpoint` the given checkpoint (copying it there if it lives
    elsewhere) and return the run folder. Refuses to overwrite a different checkpoint."""
    checkpoint, run_dir = Path(checkpoint), Path(run_dir)
    wanted = run_dir / "checkpoint"
    if wanted.exists() and wanted.resolve() == checkpoint.resolve():
        return run_dir
    if wanted.exists():
        raise ValueError(f"{run_dir} already holds another checkpoint; choose an empty run folder "
                         f"to continue {checkpoint}")
    copy_checkpoint(checkpoint, wanted)
    return run_dir
