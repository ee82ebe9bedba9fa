"""`odin eval` on an odin-pipeline checkpoint: next-token loss and perplexity on the held-out
(validation) parts of the shards it was trained on, read from its pipeline folder.

This is the score the pipeline itself reports after each shard (odin.pipeline.trainer_stage:
non-overlapping windows of the model's context over the trained shards' val parts), here
over all of them (``max_windows`` spreads a cap evenly), for the checkpoint as it is now.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

PIPELINE_DB = "pipeline.db"
PIPELINE_TOML = "pipeline.toml"


@dataclass
class TextScore:
    folder: Path
    shards: int
    windows: int
    tokens: int
    loss: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": str(self.folder), "shards": self.shards, "windows": self.windows,
                "tokens": self.tokens, "loss": self.loss, "perplexity": self.perplexity}


def pipeline_folder_of(checkpoint_dir: str | os.PathLike[str]) -> Optional[Path]:
    """The pipeline folder a checkpoint lives in (``FOLDER/checkpoints/latest``), or None."""
    for parent in list(Path(checkpoint_dir).resolve().parents)[:3]:
        if (parent / PIPELINE_DB).is_file():
            return parent
    return None


def score_pipeline_checkpoint(checkpoint_dir: str | os.PathLike[str], loaded: Any,
                              max_windows: Optional[int] = None, batch: int = 8) -> TextScore:
    """Loss and perplexity of ``loaded`` (an odin-pipeline checkpoint) on its validation shards.
    A ValueError of one line when its folder or shards cannot be found."""
    from odin.pipeline.config import PipelinePaths, load_pipeline_config
    from odin.pipeline.shards import ShardError, eval_windows, read_shard

    state = loaded.trainer_state.get("pipeline") if isinstance(loaded.trainer_state, Mapping) else None
    trained = state.get("trained") if isinstance(state, Mapping) else None
    if not isinstance(trained, list):
        raise ValueError(f"{checkpoint_dir} records no trained shards (it was not written by odin-pipeline)")
    folder = pipeline_folder_of(checkpoint_dir)
    if folder is None:
        raise ValueError(f"{checkpoint_dir} is an odin-pipeline model away from its pipeline folder (no "
                         f"{PIPELINE_DB} above it): its validation shards are not at hand; talk to it with "
                         f"odin-infer -m {checkpoint_dir}")
    toml = folder / PIPELINE_TOML
    folders = load_pipeline_config(toml).folders if toml.is_file() else load_pipeline_config(None).folders
    shards_dir = PipelinePaths.of(folder, folders).shards
    parts = []
    for sid in trained:
        try:
            parts.append(read_shard(shards_dir, "val", str(sid)).tokens)
        except ShardError as error:
            raise ValueError(f"validation shard {sid} of {folder} cannot be read: {error}") from None
    T = loaded.run_config.model.context
    windows = eval_windows(np.concatenate(parts) if parts else np.zeros(0, np.uint16), T)
    if max_windows is not None and len(windows) > max_windows:  # spread over all shards, old and new
        windows = windows[np.linspace(0, len(windows) - 1, max_windows).round().astype(np.int64)]
    if not len(windows):
        raise ValueError(f"{folder} has no validation tokens for this checkpoint yet ({len(trained)} trained shards)")
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        total += float(loaded.model.forward(chunk[:, :-1], chunk[:, 1:])) * chunk[:, 1:].size
        count += chunk[:, 1:].size
    return TextScore(folder, len(trained), int(len(windows)), int(count), total / count)
