"""What spreading the spheres over MPI ranks costs, measured side by side, and a cost model
for N hosts.

    python tools/bench_mpi.py                          # small, mini, gpt2; 3 pairs each
    python tools/bench_mpi.py --configs small --pairs 5
    python tools/bench_mpi.py --markdown --out docs/performance.md

For each config (tools/bench_train.py's shapes) it alternates one process x 2 threads with
`mpirun -np 2` x 1 thread (A B A B ...), on random tokens with AdamW, and gives the median of
each and the median of the pairs' ratios; the training loop is timed inside the processes,
so start-up is not counted. Bytes: what the ranks put on the wire per step, counted by
odin.distributed (the chain's partial sums and the broadcast's copies). Then the model: per
step the chain carries 4 x P bytes over each link and the broadcast another 4 x P (both in
pieces, pipelined), so a step over N hosts (one rank each) takes about
    compute / N + 8 P / bandwidth + latency
and the speed-up over one host is compute / (compute / N + 8 P / bandwidth), for N <= 12
(the slots) — a host's compute is this machine's measured 1 x 2-thread step.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

STEPS = {"tiny": 20, "small": 10, "mini": 6, "gpt2": 2}
GBITS = (10, 25, 100)
HOSTS = (2, 4, 12)


def worker(name: str, threads: int, steps: int) -> None:
    """One timed run (alone, or as one rank under mpirun); rank 0 prints a JSON line."""
    from bench_train import CONFIGS, _batches
    from odin.distributed import world
    from odin.distributed.spheres import DistributedSpheresTrainer
    from odin.model import GPT
    from odin.spheres import SpheresTrainer

    cfg = CONFIGS[name]
    model = GPT(cfg["shape"])
    model.init_weights(0)
    w = world()
    trainer = (DistributedSpheresTrainer(model, cfg["B"], cfg["T"], w, threads=threads) if w
               else SpheresTrainer(model, cfg["B"], cfg["T"], threads=threads))
    trainer.configure(lr=1e-4, min_lr=1e-5, warmup_steps=0, total_steps=0)
    data = _batches(model.shape, cfg["B"], cfg["T"], steps + 1)
    trainer.run(data[:1])  # warm-up
    sent0 = w.bytes_sent if w else 0
    t0 = time.perf_counter()
    trainer.run(data[1:])
    seconds = time.perf_counter() - t0
    sent = w.exchange((w.bytes_sent - sent0) if w else 0, "the byte counts") if w else [0]
    rss = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) * 1024
    peaks = w.exchange(rss, "the peak memory") if w else [rss]
    if not w or w.rank == 0:
        print(json.dumps({"tokens_per_s": steps * cfg["B"] * cfg["T"] / seconds, "step_s": seconds / steps,
                          "bytes_per_step": sum(sent) / steps, "params": model.n_params,
                          "peak_rss": peaks}), flush=True)
    if w:
        w.close()


def _run(argv: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_by_side(name: str, pairs: int, mpirun: str) -> tuple[dict, dict, float]:
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--steps", str(STEPS[name])]
    one, two, ratios = [], [], []
    for _ in range(pairs):
        one.append(_run([*me, "--threads", "2"], env))
        two.append(_run([mpirun, "--oversubscribe", "-np", "2", *me, "--threads", "1"], env))
        ratios.append(two[-1]["tokens_per_s"] / one[-1]["tokens_per_s"])
    pick = lambda runs: sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]  # noqa: E731
    return pick(one), pick(two), statistics.median(ratios)


def cost_model(name: str, params: int, step_s: float) -> list[str]:
    """One row: bytes per step per link, the communication time at each bandwidth against a
    host's compute per step, the speed-up at 2, 4 and 12 hosts (at 25 Gbit/s), and the host
    count past which communication outweighs each host's share of the compute (at 25 Gbit/s)."""
    wire = 8 * params  # 4P along the chain + 4P of broadcast, per link
    comm = {g: wire * 8 / (g * 1e9) for g in GBITS}
    speedups = [step_s / (step_s / n + comm[25]) for n in HOSTS]
    balance = step_s / comm[25]  # compute / N == comm  <=>  N == this
    return [name, f"{params / 1e6:.1f}M", f"{wire / 2**20:.0f} MiB", *(f"{comm[g] * 1e3:.1f} ms" for g in GBITS),
            f"{step_s * 1e3:.0f} ms", *(f"{s:.2f}x" for s in speedups),
            f"{balance:.1f}" if balance < 12 else "> 12 (slots run out first)"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--configs", default="small,mini,gpt2")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--out", type=Path, help="write the tables into this markdown file (per CPU section)")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.threads, args.steps)
        return 0
    from bench_train import _replace_section, cpu_name, cpu_slug, machine, table

    mpirun = shutil.which("mpirun")
    if not mpirun:
        raise SystemExit("bench_mpi: needs mpirun (apt install openmpi-bin libopenmpi-dev) and mpi4py")
    markdown = args.markdown or args.out is not None
    measured, model_rows = [], []
    for name in args.configs.split(","):
        one, two, ratio = side_by_side(name, args.pairs, mpirun)
        measured.append([name, f"{one['tokens_per_s']:,.0f}", f"{two['tokens_per_s']:,.0f}", f"{ratio:.2f}x",
                         f"{two['bytes_per_step'] / 2**20:.1f} MiB",
                         " + ".join(f"{b / 2**30:.2f}" for b in two["peak_rss"]) + " GiB",
                         f"{one['peak_rss'][0] / 2**30:.2f} GiB"])
        model_rows.append(cost_model(name, one["params"], one["step_s"]))
        print(f"{name}: done", file=sys.stderr)
    parts = [f"Machine: {machine()}", "",
             "### One process x 2 threads vs `mpirun -np 2` x 1 thread, tokens/s (interleaved, median of "
             f"{args.pairs} pairs)", "",
             table(["config", "1 x 2 threads", "2 ranks x 1 thread", "ratio", "bytes on the wire / step",
                    "peak RSS, ranks", "peak RSS, 1 process"], measured, markdown), "",
             "### Cost model for N hosts (one rank each, this CPU's 2-thread step as each host's compute)", "",
             table(["config", "params", "bytes / step / link", *(f"comm @ {g} Gbit/s" for g in GBITS),
                    "compute / step (1 host)", *(f"speed-up @ {n} hosts, 25 Gbit/s" for n in HOSTS),
                    "hosts where comm = compute share"], model_rows, markdown)]
    body = "\n".join(parts)
    print(body)
    if args.out:
        _replace_section(args.out, f"mpi {cpu_slug()}", body, tool="bench_mpi.py",
                         heading=f"Across processes (MPI): {cpu_name()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
