"""`mpirun -np N odin-pipeline run FOLDER`: rank 0 is the whole pipeline (watcher, intake,
fetch, preprocess, tokenizer, the trainer stage's choices of shards and batches, checkpoints);
the other ranks only train. Rank 0's trainer stage drives a PipelineLeader, which tells the
followers each thing it does to the trainer — start (the model's config; weights and moments
then come from rank 0), configure, set the step, train on these batches — before doing it
itself; the followers do the same, so every step runs over all ranks. The batches travel
with the message: a follower needs no copy of the pipeline folder.
"""
from __future__ import annotations

import signal
from typing import Any, Optional

import numpy as np

from odin.distributed.spheres import DistributedSpheresTrainer
from odin.distributed.world import World
from odin.spheres import default_threads

WHAT = "rank 0's pipeline"


class PipelineLeader(DistributedSpheresTrainer):
    """Rank 0's trainer in an MPI pipeline run: each call is announced to the followers first."""

    def __init__(self, model: Any, run_config: Any, batch: int, seq_len: int, world: World, threads: int) -> None:
        """threads: [train] threads of pipeline.toml (0: each rank's default)."""
        world.broadcast(("start", run_config, batch, seq_len, threads), 0, WHAT)
        super().__init__(model, batch, seq_len, world, threads or default_threads())

    def configure(self, **settings: Any) -> None:
        self.world.broadcast(("configure", settings), 0, WHAT)
        super().configure(**settings)

    def set_step(self, step: int) -> None:
        self.world.broadcast(("set_step", step), 0, WHAT)
        super().set_step(step)

    def run(self, tokens: np.ndarray, loss_mask: Optional[np.ndarray] = None,
            ids: Optional[np.ndarray] = None) -> int:
        self.world.broadcast(("run", np.ascontiguousarray(tokens),
                              None if loss_mask is None else np.ascontiguousarray(loss_mask)), 0, WHAT)
        return super().run(tokens, loss_mask, ids)


def end(world: World, status: int) -> None:
    """Rank 0 is done (status: its exit status): the followers end with it."""
    if not getattr(world, "pipeline_ended", False):
        world.pipeline_ended = True
        world.broadcast(("end", status), 0, WHAT)


def follow(world: World) -> int:
    """Ranks 1..N-1: train what rank 0's pipeline trains, until it ends. Returns its status."""
    from odin.checkpoint import model_from_config
    from odin.native import OdinError

    trainer: Optional[DistributedSpheresTrainer] = None

    def stop(signum: int, frame: Any) -> None:  # all ranks stop after the same step
        if trainer is not None:
            trainer.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    while True:
        message = world.broadcast(None, 0, WHAT)
        kind = message[0]
        if kind == "end":
            return int(message[1])
        if kind == "start":
            run_config, batch, seq_len, threads = message[1:]
            trainer = DistributedSpheresTrainer(model_from_config(run_config), batch, seq_len, world,
                                                threads or default_threads())
        elif trainer is None:
            raise RuntimeError(f"rank {world.rank}: rank 0 sent {kind!r} before starting a trainer")
        elif kind == "configure":
            trainer.configure(**message[1])
        elif kind == "set_step":
            trainer.set_step(message[1])
        elif kind == "run":
            try:
                trainer.run(message[1], message[2])
            except OdinError:  # every rank has it at the same step; rank 0's pipeline decides what next
                pass
        else:
            raise RuntimeError(f"rank {world.rank}: unknown message {kind!r} from rank 0")
