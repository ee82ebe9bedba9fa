"""Quantized weights, measured: decode speed against float32 (and against llama.cpp on the
same GGUF file), and accuracy of trained checkpoints against their float32 selves.

    python tools/bench_quant.py speed                   # GPT-2 124M and the 117M RWKV, random weights
    python tools/bench_quant.py speed --llama           # + llama.cpp (node-llama-cpp) on the same GGUF
    python tools/bench_quant.py accuracy --runs DIR     # every run folder in DIR (odin train --out DIR/<preset>)
    python tools/bench_quant.py ... --markdown --out docs/quantization.md

speed: batch-1 decode tokens/s after an 8-token prompt, float32 and each type side by side:
the runs alternate (f32, type, f32, type, ...) and a ratio is the median of the pairs' ratios.
Matrices get the type, the token embedding (the tied head) odin.quant.DEFAULT_EMBED_TYPE, vectors
stay float32. llama.cpp reads the GGUF that `odin export gguf --type T` writes from the same
weights, with the same threads, alternating with ODIN.

accuracy: exact match of each reasoning checkpoint on its test split (odin eval's scoring),
float32 and each type; perplexity of an odin-pipeline (BPE) checkpoint on its validation
shards.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_train import _replace_section, cpu_name, machine, table  # noqa: E402
from odin.config import PRESETS  # noqa: E402
from odin.model import GPT, GPTShape, WeightTypes  # noqa: E402
from odin.quant import QUANT_TYPES  # noqa: E402
from odin.quant.convert import quantized_copy  # noqa: E402
from odin.rwkv import RWKV, RWKVShape  # noqa: E402

from odin.quant import DEFAULT_EMBED_TYPE as DEFAULT_EMBED  # noqa: E402

_R = PRESETS["odin-100m-rwkv"]["model"]
MODELS: dict[str, Callable[[], Any]] = {
    "gpt2-124m": lambda: GPT(GPTShape(vocab_size=50257, context=1024, n_layer=12, n_head=12, d_model=768)),
    "rwkv-117m": lambda: RWKV(RWKVShape(vocab_size=_R["vocab_size"], context=1024, n_layer=_R["n_layer"],
                                        d_model=_R["d_model"])),
    # small enough for a test of this tool
    "gpt-tiny": lambda: GPT(GPTShape(vocab_size=300, context=128, n_layer=2, n_head=4, d_model=128)),
    "rwkv-tiny": lambda: RWKV(RWKVShape(vocab_size=300, context=128, n_layer=2, d_model=128)),
}
DEFAULT_MODELS = ["gpt2-124m", "rwkv-117m"]
PROMPT, NEW = 8, 64


def weights(spec: str) -> WeightTypes:
    """'q4_0' -> matrices q4_0, embedding DEFAULT_EMBED; 'q4_0/f32' -> embedding f32."""
    matrix, _, embed = spec.partition("/")
    return WeightTypes(matrix, embed or DEFAULT_EMBED)


def decode_tokens_per_s(model: Any, threads: int, n_new: int = NEW) -> float:
    """Batch-1 decoding after a PROMPT-token prompt, one token at a time (as odin-infer)."""
    cache = model.new_cache(1, threads=threads)
    is_gpt = isinstance(model, GPT)

    def feed(i: int) -> None:
        cache.step([1 + i % 100], [i]) if is_gpt else cache.step([1 + i % 100])

    for i in range(PROMPT):
        feed(i)
    t0 = time.perf_counter()
    for i in range(PROMPT, PROMPT + n_new):
        feed(i)
    return n_new / (time.perf_counter() - t0)


def side_by_side(a: Callable[[], float], b: Callable[[], float], pairs: int) -> tuple[float, float, float]:
    """(median a, median b, median of b/a over alternating pairs), after one warm-up each."""
    a(), b()
    ra, rb = [], []
    for _ in range(pairs):
        ra.append(a())
        rb.append(b())
    return statistics.median(ra), statistics.median(rb), statistics.median(y / x for x, y in zip(ra, rb))


# ---------------------------------------------------------------------------- llama.cpp
LLAMA_DIR = ROOT / "tests" / "js" / "llama"
LLAMA_SCRIPT = ROOT / "tools" / "bench_llama_decode.mjs"


def have_llama() -> bool:
    return (LLAMA_DIR / "node_modules" / "node-llama-cpp").is_dir() and LLAMA_SCRIPT.is_file()


def export_gguf(model: Any, type_name: str, folder: Path) -> Path:
    """model (float32) saved as a checkpoint, then `odin export gguf --type` as a user runs it."""
    from odin.checkpoint import save_model_checkpoint
    from odin.config import ModelConfig, RunConfig
    from odin.tokenizers import CharTokenizer

    ckpt = folder / "ckpt"
    shape = model.shape
    mcfg = (ModelConfig(arch="gpt", n_layer=shape.n_layer, d_model=shape.d_model, n_head=shape.n_head,
                        context=shape.context, vocab_size=shape.vocab_size) if isinstance(model, GPT) else
            ModelConfig(arch="rwkv", n_layer=shape.n_layer, d_model=shape.d_model, n_head=1,
                        context=shape.context, vocab_size=shape.vocab_size))
    # the char vocabulary names the first ids; the rest of the 50257 are never produced here
    save_model_checkpoint(ckpt, model, CharTokenizer(), RunConfig(model=mcfg), step=0)
    out = folder / f"model-{type_name}.gguf"
    subprocess.run(["odin", "export", "gguf", str(ckpt), str(out), "--type", type_name], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def llama_tokens_per_s(gguf: Path, threads: int, n_new: int = NEW) -> float:
    out = subprocess.run(["node", str(LLAMA_SCRIPT), str(gguf), "--threads", str(threads), "--tokens", str(n_new)],
                         check=True, capture_output=True, text=True, cwd=LLAMA_DIR)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])


# ---------------------------------------------------------------------------- sections
def speed(args: argparse.Namespace) -> str:
    threads = sorted({1, os.cpu_count() or 1})
    rows, lrows = [], []
    for name in args.models:
        base = MODELS[name]()
        base.init_weights(0)
        for t in args.types:
            q = quantized_copy(base, weights(t))
            for th in threads:
                f, v, r = side_by_side(lambda: decode_tokens_per_s(base, th), lambda: decode_tokens_per_s(q, th),
                                       args.pairs)
                rows.append([name, t, str(th), f"{f:.1f}", f"{v:.1f}", f"**{r:.2f}x**"])
                print(f"{name} {t} threads={th}: f32 {f:.1f}  {t} {v:.1f} tokens/s  {r:.2f}x", flush=True)
            if args.llama and isinstance(base, GPT) and t in args.llama_types and "/" not in t:
                with tempfile.TemporaryDirectory() as tmp:
                    gguf = export_gguf(base, t, Path(tmp))
                    for th in threads:
                        o, l, r = side_by_side(lambda: llama_tokens_per_s(gguf, th),
                                               lambda: decode_tokens_per_s(q, th), args.pairs)
                        lrows.append([name, t, str(th), f"{l:.1f}", f"{o:.1f}", f"**{r:.2f}x**"])
                        print(f"{name} {t} threads={th}: llama.cpp {o:.1f}  ODIN {l:.1f} tokens/s  {r:.2f}x", flush=True)
            del q
        del base
    md = args.markdown
    text = [f"Machine: {machine()}", f"CPU: {cpu_name()}", "",
            f"Batch-1 decode tokens/s (prompt {PROMPT}, {NEW} new tokens; embedding {DEFAULT_EMBED}; median of "
            f"{args.pairs} alternating pairs):", "",
            table(["model", "type", "threads", "f32", "quantized", "quantized / f32"], rows, md)]
    if lrows:
        text += ["", "Against llama.cpp (node-llama-cpp, same GGUF file, same threads, alternating):", "",
                 table(["model", "type", "threads", "ODIN", "llama.cpp", "ODIN / llama.cpp"], lrows, md)]
    return "\n".join(text)


def accuracy(args: argparse.Namespace) -> str:
    from odin.checkpoint import load_model_checkpoint
    from odin.cli import _recorded_data_dir
    from odin.evaluate import evaluate_checkpoint

    rows = []
    for run in sorted(Path(args.runs).iterdir()):
        ckpt = run / "checkpoint"
        if not (ckpt / "config.json").is_file():
            continue
        loaded = load_model_checkpoint(ckpt, with_optimizer=False)
        data = _recorded_data_dir(loaded.trainer_state, loaded.run_config, ckpt)  # as odin eval finds it
        cells, scores = [run.name], {}
        for t in ["f32"] + args.types:
            model = loaded.model if t == "f32" else quantized_copy(loaded.model, weights(t))
            # batches of 8: every decoding product takes the integer path, as odin-infer's batch of 1
            res = evaluate_checkpoint(ckpt, data, ["test"], args.limit, batch=8,
                                      loaded=dataclasses.replace(loaded, model=model))
            scores[t] = 100.0 * res["test"].correct / res["test"].n
            cells.append(f"{scores[t]:.2f}" if t == "f32" else f"{scores[t]:.2f} ({scores[t] - scores['f32']:+.2f})")
            print(f"{run.name} {t}: {scores[t]:.2f}%", flush=True)
        rows.append(cells)
    md = args.markdown
    text = [f"CPU: {cpu_name()}", "",
            f"Exact match (%) on each test split{f' (first {args.limit})' if args.limit else ''}; "
            f"in brackets the change from float32 (embedding {DEFAULT_EMBED}):", "",
            table(["preset", "f32"] + args.types, rows, md)]
    if args.pipeline:
        text += ["", perplexity(args)]
    return "\n".join(text)


def perplexity(args: argparse.Namespace) -> str:
    """An odin-pipeline (BPE) checkpoint's perplexity on its validation shards, per type."""
    from odin.checkpoint import load_model_checkpoint
    from odin.eval_text import score_pipeline_checkpoint

    ckpt = Path(args.pipeline) / "checkpoints" / "latest"
    loaded = load_model_checkpoint(ckpt, with_optimizer=False)
    cells, ppl = [], {}
    for t in ["f32"] + args.types:
        model = loaded.model if t == "f32" else quantized_copy(loaded.model, weights(t))
        score = score_pipeline_checkpoint(ckpt, dataclasses.replace(loaded, model=model))
        ppl[t] = float(np.exp(score.loss))
        cells.append(f"{ppl[t]:.3f}" if t == "f32" else f"{ppl[t]:.3f} ({100 * (ppl[t] / ppl['f32'] - 1):+.2f}%)")
        print(f"pipeline {t}: perplexity {ppl[t]:.3f} on {score.tokens} tokens", flush=True)
    shape = loaded.run_config.model
    return "\n".join([f"Perplexity of an odin-pipeline model ({shape.n_layer} layers of {shape.d_model}, BPE vocabulary "
                      f"{loaded.model.shape.vocab_size}, step {loaded.step}) on its validation shards "
                      f"({score.tokens} tokens); in brackets the change from float32:", "",
                      table(["f32"] + args.types, [cells], args.markdown)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("section", choices=["speed", "accuracy"])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    p.add_argument("--types", nargs="+", default=list(QUANT_TYPES),
                   help="types of the matrices (embedding DEFAULT_EMBED), or MATRIX/EMBED, e.g. q4_0/f32")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--llama", action="store_true", help="also llama.cpp on the same GGUF (node-llama-cpp)")
    p.add_argument("--llama-types", nargs="+", default=["q8_0", "q4_0"])
    p.add_argument("--runs", help="folder of run folders (accuracy)")
    p.add_argument("--limit", type=int, help="first N test examples (accuracy)")
    p.add_argument("--pipeline", help="an odin-pipeline folder whose checkpoints/latest to score (accuracy)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--out", type=Path, help="replace this section in a markdown file")
    args = p.parse_args(argv)
    for spec in args.types:
        try:
            weights(spec)
        except ValueError as error:
            p.error(str(error))
    if args.llama and not have_llama():
        p.error(f"--llama needs node-llama-cpp in {LLAMA_DIR}/node_modules and {LLAMA_SCRIPT}")
    if args.section == "accuracy" and not args.runs:
        p.error("accuracy needs --runs DIR")
    body = speed(args) if args.section == "speed" else accuracy(args)
    print(body)
    if args.out:
        _replace_section(args.out, f"quant-{args.section}", body, tool="bench_quant.py",
                         heading=args.section.capitalize())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
