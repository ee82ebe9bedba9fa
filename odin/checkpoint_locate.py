"""Find the checkpoint a user means by a path (``odin-infer -m PATH``).

People point at whatever they see: the checkpoint folder, the ``model.safetensors`` inside
it, the ``odin train`` run folder (``runs/arith-3digit``, which holds ``checkpoint/``) or a
pipeline folder (which holds ``checkpoints/latest/``, or the folder its ``pipeline.toml``
names under ``[folders] checkpoints``). :func:`locate_checkpoint` turns any of these into
the checkpoint folder, or raises :class:`~odin.checkpoint_io.CheckpointError` saying what
it looked for.
"""
from __future__ import annotations

import os
from pathlib import Path

from odin.checkpoint_io import CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, TOKENIZER_FILE, CheckpointError

CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, OPTIMIZER_FILE)
RUN_CHECKPOINT = "checkpoint"  # odin.train: out_dir / "checkpoint"
PIPELINE_LATEST = "latest"  # odin.pipeline.config.PipelinePaths.checkpoint


def _pipeline_checkpoints(folder: Path) -> Path:
    """The checkpoints folder of a pipeline folder: its pipeline.toml's [folders] checkpoints
    when that file says so (and can be read), else the default name."""
    from odin.pipeline.config import Folders, PipelineConfigError, load_pipeline_config

    name = Folders().checkpoints
    config_path = folder / "pipeline.toml"
    if config_path.is_file():
        try:
            name = load_pipeline_config(config_path).folders.checkpoints
        except (PipelineConfigError, OSError):
            pass  # an unreadable config: the default layout is still worth trying
    return folder / name


def _interrupted_save(path: Path) -> bool:
    """An atomic save parks the old checkpoint at .NAME.old-* while it swaps: such a path
    is a checkpoint to report on (load_checkpoint names the leftover), not an absent one."""
    return any(path.parent.glob(f".{path.name}.old-*"))


def locate_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder ``path`` stands for (see the module docstring). A path that does
    not exist is returned as it is: loading it reports it missing, with a recovery hint
    after an interrupted save."""
    given = Path(path)
    if given.is_file():
        if given.name in CHECKPOINT_FILES:
            return given.parent
        raise CheckpointError(f"{given} is a file, not a checkpoint: give the checkpoint folder, its "
                              f"{MODEL_FILE}, or the run folder that holds {RUN_CHECKPOINT}/")
    if not given.is_dir():
        return given
    if (given / MODEL_FILE).exists() or (given / CONFIG_FILE).exists():
        return given
    run_checkpoint = given / RUN_CHECKPOINT
    if run_checkpoint.is_dir() or _interrupted_save(run_checkpoint):
        return run_checkpoint
    checkpoints = _pipeline_checkpoints(given)
    latest = checkpoints / PIPELINE_LATEST
    if latest.is_dir() or _interrupted_save(latest):
        return latest
    if checkpoints.is_dir():
        raise CheckpointError(f"{checkpoints} holds no checkpoint yet: the pipeline writes "
                              f"{PIPELINE_LATEST}/ there after training on its first shard")
    raise CheckpointError(f"no checkpoint in {given}: expected {MODEL_FILE} there, a run folder's "
                          f"{RUN_CHECKPOINT}/ or a pipeline folder's checkpoints/{PIPELINE_LATEST}/")
