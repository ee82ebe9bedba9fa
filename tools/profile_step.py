"""Where one training step's time goes, by phase, for any config, on this CPU.

    python tools/profile_step.py                          # tiny, small, mini, gpt2 at 1 and 2 threads
    python tools/profile_step.py --config small --threads 1 2 4
    python tools/profile_step.py --preset arith-3digit    # a preset's model, batch and context
    python tools/profile_step.py --markdown --out docs/performance.md   # this CPU's section

Real steps of the kissing-spheres trainer (random tokens, AdamW) with the trainer's own
counters on (SpheresTrainer.set_profiling): the C side times forward and backward per slot
and the GEMMs inside them on each worker thread, the slot gradient buffers, the reduce and
clip + AdamW per chunk, and the root's phases. A part done by the worker threads is shown
as its thread-time divided by the threads (its share of the wall clock when the threads
share the work evenly); "threads waiting" is what the phases' wall time holds beyond that
(load imbalance, wake-ups). Root: the step's wall time outside its three phases. Python
overhead: the wall time of the run() calls beyond the C steps (argument checks, the call).
The rows add up to the measured time per step.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_train import CONFIGS, _replace_section, cpu_name, cpu_slug, machine, table  # noqa: E402
from odin.model import GPT, GPTShape  # noqa: E402
from odin.spheres import SpheresTrainer, StepProfile  # noqa: E402

# steps measured per config (after warm-up steps), so every config takes a few seconds
DEFAULT_STEPS = {"tiny": 40, "small": 20, "mini": 10, "gpt2": 3}

PARTS = [
    ("forward GEMMs", "fwd_gemm"),
    ("other forward kernels", "fwd_other"),
    ("backward GEMMs", "bwd_gemm"),
    ("other backward kernels", "bwd_other"),
    ("slot gradient buffers (zeroing, shard norms)", "slot_buffers"),
    ("reduce (slot buffers into the gradient, sphere norms)", "reduce"),
    ("clip + AdamW", "update"),
]


def measure(model, B: int, T: int, threads: int, steps: int, per_call: int = 1) -> tuple[StepProfile, float]:
    """Profile `steps` training steps (after a warm-up); returns the profile and the wall
    seconds of the run() calls that made them."""
    model.init_weights(0)
    trainer = SpheresTrainer(model, B, T, threads=threads)
    trainer.configure(lr=1e-4, min_lr=1e-5, warmup_steps=0, total_steps=0, weight_decay=0.1)
    data = np.random.default_rng(0).integers(0, model.shape.vocab_size, (steps, B, T + 1)).astype(np.int32)
    trainer.run(data[:2])  # warm-up: threads, pack buffers, first-touch page faults
    trainer.set_profiling(True)
    started = time.perf_counter()
    for first in range(0, steps, per_call):
        trainer.run(data[first:first + per_call])
    wall = time.perf_counter() - started
    trainer.set_profiling(False)
    return trainer.profile(), wall


def breakdown(profile: StepProfile, wall: float) -> list[tuple[str, float]]:
    """(row, seconds per step); the rows add up to wall / steps."""
    n, threads = max(profile.steps, 1), max(profile.threads, 1)
    rows = [(label, getattr(profile, name) / threads / n) for label, name in PARTS]
    busy = sum(getattr(profile, name) for _, name in PARTS) / threads
    phases = profile.wall_slots + profile.wall_reduce + profile.wall_update
    rows.append(("threads waiting (imbalance, wake-ups)", (phases - busy) / n))
    rows.append(("root (global norm, clip factor, statistics)", (profile.wall_steps - phases) / n))
    rows.append(("Python overhead (checks, the call)", (wall - profile.wall_steps) / n))
    return rows


def report(name: str, shape: GPTShape, B: int, T: int, threads: int, profile: StepProfile, wall: float,
           markdown: bool) -> str:
    step_s = wall / max(profile.steps, 1)
    rows = [[label, f"{seconds * 1e3:.2f}", f"{100 * seconds / step_s:.1f}"]
            for label, seconds in breakdown(profile, wall)]
    rows.append(["step (measured)", f"{step_s * 1e3:.2f}", "100.0"])
    title = (f"{name}: L{shape.n_layer} d{shape.d_model} H{shape.n_head} T{T} B{B} V{shape.vocab_size}, "
             f"{threads} thread{'s' if threads > 1 else ''}, {profile.steps} steps, "
             f"{B * T / step_s:,.0f} tokens/s")
    head = f"#### {title}\n\n" if markdown else f"{title}\n"
    return head + table(["part of the step", "ms / step", "% of step"], rows, markdown)


def preset_model(name: str):
    from odin.checkpoint import model_from_config
    from odin.config import preset_config
    from odin.tokenizers import CHAR_VOCAB_SIZE

    cfg = preset_config(name, vocab_size=CHAR_VOCAB_SIZE)  # as odin train builds it
    return model_from_config(cfg), cfg.train.batch_size, cfg.model.context


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", choices=sorted(CONFIGS), help="default: all four")
    ap.add_argument("--preset", help="profile a preset's model, batch and context instead")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, help="steps measured (default: a few seconds' worth per config)")
    ap.add_argument("--steps-per-call", type=int, default=1,
                    help="steps per run() call (odin train makes up to 50); default 1")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--out", help="with --markdown: write this CPU's section into this file (docs/performance.md)")
    args = ap.parse_args(argv)
    if any(t < 1 for t in args.threads) or (args.steps is not None and args.steps < 1) or args.steps_per_call < 1:
        ap.error("--threads, --steps and --steps-per-call must be at least 1")

    cpu = cpu_name()
    parts = [f"Profile of one training step by part, {cpu}; {machine()}"]
    print(parts[0], flush=True)
    if args.preset:
        jobs = [(args.preset, lambda: preset_model(args.preset))]
    else:
        jobs = [(name, lambda name=name: (GPT(CONFIGS[name]["shape"]), CONFIGS[name]["B"], CONFIGS[name]["T"]))
                for name in (args.config or list(CONFIGS))]
    for name, build in jobs:
        for threads in args.threads:
            model, B, T = build()
            steps = args.steps or DEFAULT_STEPS.get(name, 10)
            profile, wall = measure(model, B, T, threads, steps, args.steps_per_call)
            text = report(name, model.shape, B, T, threads, profile, wall, args.markdown)
            print("\n" + text, flush=True)
            parts.append(text)
            del model
    if args.markdown and args.out:
        _replace_section(Path(args.out), f"profile {cpu_slug()}", "\n\n".join(parts), tool="profile_step.py",
                         heading="Where a training step's time goes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
