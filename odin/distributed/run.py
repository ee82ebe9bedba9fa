"""`mpirun -np N odin train ...`: rank 0 runs `odin train` as one process would (checks,
data, run folder, lock, checkpoints, metrics, evaluation); the other ranks wait for its plan
(the checked run config, the dataset, where the sampler stands), read the same dataset,
and run the same training loop in step with it. The weights and AdamW moments reach them
from rank 0 when the trainer starts, so only rank 0 needs the checkpoint or --init-from.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from odin.distributed.world import World


@dataclass
class Plan:
    run_config: Any
    data_dir: str
    step: int
    sampler: dict
    padded_vocab: bool
    trainer_state: dict  # the resumed run's recorded extras (init_from)
    init_from: Optional[str]


def send_plan(world: World, run_config: Any, data_dir: Path, resumed: Any, initial: Any, sampler: dict, *,
              padded_vocab: bool) -> None:
    """Rank 0: everything is checked; tell the other ranks what to train."""
    plan = Plan(run_config, str(data_dir), resumed.step if resumed is not None else 0, sampler, padded_vocab,
                dict(resumed.trainer_state) if resumed is not None else {},
                str(Path(initial.path).resolve()) if initial is not None else None)
    world.broadcast(plan, 0, "rank 0's run plan")
    world.plan_sent = True


def refuse_plan(world: World) -> None:
    """Rank 0 failed before its plan: the other ranks end quietly (rank 0 says why)."""
    if not getattr(world, "plan_sent", False):
        world.plan_sent = True
        world.broadcast(None, 0, "rank 0's run plan")


def follow(world: World, threads: Optional[int]) -> int:
    """Ranks 1..N-1: train what rank 0 plans. Returns the exit status (rank 0 does the talking)."""
    from odin.checkpoint import model_from_config
    from odin.data.dataset import load_manifest
    from odin.run_checks import resolve_threads
    from odin.run_control import QuietWhenClosed, StopSignals, TrainingInterrupted
    from odin.tokenizers import CharTokenizer
    from odin.train import _prepare_data, _run

    plan: Optional[Plan] = world.broadcast(None, 0, "rank 0's run plan")
    if plan is None:
        return 2
    cfg = plan.run_config
    n_threads = resolve_threads(threads if threads is not None else cfg.train.threads)
    data_dir, tokenizer = Path(plan.data_dir), CharTokenizer()
    default_place = cfg.preset and data_dir.name == cfg.preset and data_dir.parent.name == "data"
    if default_place and not (data_dir / "dataset.json").exists():  # another host: a preset's data builds the same
        from odin.cli import _ensure_preset_data
        from odin.config import PRESETS, preset_data_spec

        if cfg.preset in PRESETS and preset_data_spec(cfg.preset) is not None:
            _ensure_preset_data(cfg.preset, data_dir)
    try:
        manifest = load_manifest(data_dir)
    except (OSError, ValueError) as exc:
        raise ValueError(f"rank {world.rank} cannot read the dataset rank 0 trains on ({data_dir}): {exc}; every "
                         f"host needs it at the same path") from None
    setup = _prepare_data(cfg, data_dir, manifest, tokenizer, padded_vocab=plan.padded_vocab)
    setup.sampler.load_state_dict(plan.sampler)
    # a resumed run or --init-from brings its model here (a new run's _run makes one); either
    # way the weights and moments come from rank 0 when the trainer starts
    resumed = initial = None
    if plan.step:
        resumed = SimpleNamespace(model=model_from_config(cfg), step=plan.step, trainer_state=plan.trainer_state)
    elif plan.init_from:
        initial = SimpleNamespace(model=model_from_config(cfg), path=plan.init_from)
    signals = StopSignals()
    try:
        _run(cfg, data_dir, Path("."), manifest, tokenizer, setup, n_threads, signals,
             QuietWhenClosed(sys.stderr), resumed=resumed, initial=initial, progress=False, final_eval_splits=(),
             final_eval_limit=None, on_trainer=None, world=world)
    except TrainingInterrupted as exc:
        return int(getattr(exc, "exit_status", 130))
    finally:
        signals.restore()
    return 0
