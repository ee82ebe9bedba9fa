"""RWKV beside GPT, measured side by side in one run.

    python tools/bench_rwkv.py                   # everything
    python tools/bench_rwkv.py --quick
    python tools/bench_rwkv.py --sections train,generate --out docs/performance.md
    python tools/bench_rwkv.py --sections recipe --recipe-seconds 90

Sections:
  * train   : training tokens/s of RWKV and GPT at equal parameter count (RWKV with a
              channel-mix of 3.5 x d_model has exactly GPT's 12 C^2 weights per layer),
              1 and 2 threads on the spheres trainer
  * generate: batch-1 generation tokens/s at contexts 64 / 512 / 4096: the time of a decode
              step once that many tokens are behind it (GPT attends over a KV cache that
              grows with the context; RWKV carries a fixed-size state)
  * recipe  : exact match of RWKV and GPT on the 3-digit addition recipe (arith-3digit's data)
              after the same wall-clock training budget each, on the test split

Each speed is the best of a few repeats after a warm-up (a shared machine is noisy).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_train import _replace_section, machine, model_tokens_per_s, table  # noqa: E402
from odin.model import GPT, GPTShape  # noqa: E402
from odin.rwkv import RWKV, RWKVShape  # noqa: E402

# equal parameter count: GPT layer 12 C^2 + 13 C; RWKV layer 5 C^2 + 2 F C + 11 C with F = 3.5 C
C, L, V = 256, 4, 512


def train_models(context: int) -> dict[str, object]:
    return {
        "GPT": GPT(GPTShape(vocab_size=V, context=context, n_layer=L, n_head=8, d_model=C)),
        "RWKV": RWKV(RWKVShape(vocab_size=V, context=context, n_layer=L, d_model=C, d_ffn=7 * C // 2)),
    }


def decode_ms_after(model, contexts: list[int], n_timed: int = 16) -> dict[int, float]:
    """ms per decode step once `c` tokens are behind it, for each c in `contexts`: the
    fastest of the last `n_timed` steps before c (the one a busy machine disturbed least)."""
    model.init_weights(0)
    cache = model.new_cache(1)
    out: dict[int, float] = {}
    pos = 0
    for c in sorted(contexts):
        while pos < c - n_timed:
            cache.step([1], [pos])
            pos += 1
        best = math.inf
        while pos < c:
            started = time.perf_counter()
            cache.step([1], [pos])
            best = min(best, time.perf_counter() - started)
            pos += 1
        out[c] = best * 1e3
    return out


def recipe_exact(preset: str, data_dir: Path, seconds: float, threads: int) -> tuple[float, int, float]:
    """(exact match on 2000 test problems, steps done, seconds) after `seconds` of training."""
    from odin.config import preset_config
    from odin.train import train

    def stop_after(trainer) -> None:
        timer = threading.Timer(seconds, trainer.stop)
        timer.daemon = True
        timer.start()

    with tempfile.TemporaryDirectory() as out:
        result = train(preset_config(preset), data_dir, out, threads=threads, progress=False,
                       final_eval_splits=("test",), final_eval_limit=2000, on_trainer=stop_after)
    return result.evals["test"].exact, result.steps, result.seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--out", help="replace the RWKV section of this markdown file")
    ap.add_argument("--sections", default="train,generate,recipe")
    ap.add_argument("--recipe-seconds", type=float, default=60.0, help="training budget per model (recipe)")
    ap.add_argument("--data", default=str(ROOT / "data" / "arith-3digit"),
                    help="the arith-3digit dataset (built by `odin train --preset arith-3digit`)")
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    md = args.markdown or bool(args.out)
    steps = 4 if args.quick else 12
    out: list[str] = [f"Machine: {machine()}", ""]
    cores = os.cpu_count() or 1

    if "train" in sections:
        B, T = 32, 64
        rows = []
        for threads in sorted({1, min(2, cores)}):
            models = train_models(T)
            tps = {name: model_tokens_per_s(m, B, T, threads, steps) for name, m in models.items()}
            rows.append([str(threads), *(f"{models[n].n_params / 1e6:.2f}M" for n in models),
                         *(f"{tps[n]:,.0f}" for n in models), f"{tps['RWKV'] / tps['GPT']:.2f}x"])
        out += [f"### RWKV vs GPT training at equal size (L={L}, d={C}, V={V}, B={B}, T={T}; "
                f"RWKV channel-mix {7 * C // 2})", "",
                table(["threads", "GPT params", "RWKV params", "GPT tok/s", "RWKV tok/s", "RWKV / GPT"], rows, md), ""]

    if "generate" in sections:
        contexts = [64, 512] if args.quick else [64, 512, 4096]
        models = train_models(max(contexts))
        ms = {name: decode_ms_after(m, contexts) for name, m in models.items()}
        rows = [[str(c), f"{1e3 / ms['GPT'][c]:,.0f}", f"{1e3 / ms['RWKV'][c]:,.0f}",
                 f"{ms['GPT'][c]:.3f}", f"{ms['RWKV'][c]:.3f}"] for c in contexts]
        out += [f"### Batch-1 generation by context (L={L}, d={C}, V={V}, 1 thread): GPT's KV cache "
                "grows, RWKV's state does not", "",
                table(["context", "GPT tok/s", "RWKV tok/s", "GPT ms/token", "RWKV ms/token"], rows, md), ""]
        state = models["RWKV"].new_cache(1).nbytes
        out += [f"RWKV state for one sequence: {state:,} bytes at any context; the GPT KV cache at "
                f"context {max(contexts)}: {2 * L * max(contexts) * C * 4:,} bytes.", ""]

    if "recipe" in sections:
        data_dir = Path(args.data)
        if not (data_dir / "dataset.json").is_file():
            out += [f"(recipe skipped: no dataset in {data_dir}; `odin train --preset arith-3digit` builds it)", ""]
        else:
            threads = min(2, cores)
            rows = []
            for preset in ("arith-3digit", "arith-3digit-rwkv"):
                exact, done, secs = recipe_exact(preset, data_dir, args.recipe_seconds, threads)
                rows.append([preset, f"{done:,}", f"{secs:.0f}", f"{100 * exact:.2f}%"])
            out += [f"### 3-digit addition after the same training time ({args.recipe_seconds:.0f} s each, "
                    f"{threads} threads, 2000 test problems)", "",
                    table(["preset", "steps done", "seconds", "exact match"], rows, md), ""]

    text = "\n".join(out)
    print(text)
    if args.out:
        _replace_section(Path(args.out), "rwkv", text, tool="bench_rwkv.py", heading="RWKV vs GPT")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
