"""End-to-end speed of ODIN, measured side by side in one run.

    python tools/bench_train.py                  # everything this machine can do
    python tools/bench_train.py --quick          # fewer steps
    python tools/bench_train.py --markdown --out docs/performance.md

Sections:
  * threads : training tokens/s of a compute-bound config for 1, 2, 4, 12 threads (ratios to 1)
  * isa     : the same step with scalar / AVX2 / AVX-512 kernels (ratios to scalar)
  * torch   : ODIN vs PyTorch eager, same threads (1 and 2), on "tiny" (L=2, d=128, heads=4,
              T=32, B=64, V=16), "small" (L=4, d=256, heads=8, T=64, B=32, V=512), "mini"
              (L=6, d=384, heads=6, T=128, B=8, V=4096) and "gpt2" (GPT-2 124M: L=12, d=768,
              heads=12, T=256, B=4, V=50257): runs alternate A B A B and the ratio is the
              median of the pairs' ratios; plus the peak memory of training GPT-2 124M at 2
              threads, each in a fresh process (only when torch is importable; torch is never
              an ODIN dependency)
  * generate: batch-1 generation tokens/s with the KV cache, ODIN vs PyTorch eager (with its
              own KV cache), the four configs at 1 and 2 threads, alternating (median of pairs),
              and ODIN's per-token time at growing positions

Elsewhere each figure is the best of a few repeats after a warm-up; a busy shared machine
makes single runs noisy, and the best run is the one least disturbed.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from odin import native  # noqa: E402
from odin.model import GPT, GPTShape, Sampler, stream_tokens  # noqa: E402
from odin.spheres import SpheresTrainer  # noqa: E402

CONFIGS = {
    "tiny": dict(shape=GPTShape(vocab_size=16, context=32, n_layer=2, n_head=4, d_model=128), B=64, T=32),
    "small": dict(shape=GPTShape(vocab_size=512, context=64, n_layer=4, n_head=8, d_model=256), B=32, T=64),
    "mini": dict(shape=GPTShape(vocab_size=4096, context=128, n_layer=6, n_head=6, d_model=384), B=8, T=128),
    "gpt2": dict(shape=GPTShape(vocab_size=50257, context=256, n_layer=12, n_head=12, d_model=768), B=4, T=256),
}
# steps per timed run against PyTorch: a few seconds each
VS_TORCH_STEPS = {"tiny": 20, "small": 10, "mini": 6, "gpt2": 2}


def _batches(shape, B: int, T: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, shape.vocab_size, (k, B, T + 1)).astype(np.int32)


def odin_tokens_per_s(cfg: dict, threads: int, steps: int, repeats: int = 3) -> float:
    return model_tokens_per_s(GPT(cfg["shape"]), cfg["B"], cfg["T"], threads, steps, repeats)


def model_tokens_per_s(model, B: int, T: int, threads: int, steps: int, repeats: int = 3) -> float:
    """Training tokens/s of any ODIN model (GPT, RWKV) on the spheres: best of `repeats` runs
    of `steps` steps on random tokens, after a warm-up."""
    model.init_weights(0)
    tr = SpheresTrainer(model, B, T, threads=threads)
    tr.configure(lr=1e-4, min_lr=1e-5, warmup_steps=0, total_steps=0)
    data = _batches(model.shape, B, T, steps)
    tr.run(data[: min(3, steps)])  # warm-up: pack buffers, page faults, thread start
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tr.run(data)
        best = max(best, steps * B * T / (time.perf_counter() - t0))
    return best


def _torch_model(shape: GPTShape):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, C: int, nh: int):
            super().__init__()
            self.nh = nh
            self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc, self.fcproj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def attn(self, x, cache=None, pos=None):
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
            if cache is not None:  # generation: append to this layer's cache
                cache[0][:, :, pos:pos + T] = k
                cache[1][:, :, pos:pos + T] = v
                k, v = cache[0][:, :, :pos + T], cache[1][:, :, :pos + T]
                y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
            else:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))

        def forward(self, x, cache=None, pos=None):
            x = x + self.attn(self.ln1(x), cache, pos)
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            C = shape.d_model
            self.wte, self.wpe = nn.Embedding(shape.vocab_size, C), nn.Embedding(shape.context, C)
            self.blocks = nn.ModuleList(Block(C, shape.n_head) for _ in range(shape.n_layer))
            self.lnf = nn.LayerNorm(C)

        def forward(self, idx, caches=None, pos=0):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
            for i, blk in enumerate(self.blocks):
                x = blk(x, None if caches is None else caches[i], pos)
            return self.lnf(x) @ self.wte.weight.T

    return TorchGPT()


def torch_tokens_per_s(cfg: dict, threads: int, steps: int, repeats: int = 3) -> float:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape, B, T = cfg["shape"], cfg["B"], cfg["T"]
    model = _torch_model(shape)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    data = torch.from_numpy(_batches(shape, B, T, steps).astype(np.int64))

    def step(batch):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, shape.vocab_size), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for i in range(min(3, steps)):
        step(data[i])
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            step(data[i])
        best = max(best, steps * B * T / (time.perf_counter() - t0))
    return best


def side_by_side(cfg: dict, threads: int, steps: int, pairs: int) -> tuple[float, float, float]:
    """ODIN and PyTorch training tokens/s run alternately (A B A B ...): the medians of each and
    the median of the pairs' ratios (ODIN / PyTorch), so a slow moment of a shared machine
    weighs on both sides of one pair."""
    import statistics

    odin, torch_, ratios = [], [], []
    for _ in range(pairs):
        odin.append(odin_tokens_per_s(cfg, threads, steps, repeats=1))
        torch_.append(torch_tokens_per_s(cfg, threads, steps, repeats=1))
        ratios.append(odin[-1] / torch_[-1])
    return statistics.median(odin), statistics.median(torch_), statistics.median(ratios)


def peak_training_memory(who: str, name: str, threads: int) -> int:
    """Peak resident bytes (VmHWM) of a fresh process that trains `name` for 2 steps with ODIN
    or PyTorch (ru_maxrss would also count this parent's memory, copied at fork)."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); import bench_train as b; "
            f"b.{'odin' if who == 'odin' else 'torch'}_tokens_per_s(b.CONFIGS[{name!r}], {threads}, 2, repeats=1); "
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) * 1024


def odin_generate_tokens_per_s(shape: GPTShape, n_new: int, repeats: int = 3, threads: int = 1) -> float:
    model = GPT(shape)
    model.init_weights(0)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(1 for _ in stream_tokens(model, [1], n_new, Sampler(temperature=0.0), threads=threads))
        best = max(best, n / (time.perf_counter() - t0))
    return best


def torch_generate_tokens_per_s(shape: GPTShape, n_new: int, repeats: int = 3, threads: int = 1) -> float:
    import torch

    torch.set_num_threads(threads)
    model = _torch_model(shape).eval()
    hs = shape.d_model // shape.n_head
    best = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            caches = [(torch.zeros(1, shape.n_head, shape.context, hs), torch.zeros(1, shape.n_head, shape.context, hs))
                      for _ in range(shape.n_layer)]
            tok = torch.tensor([[1]])
            t0 = time.perf_counter()
            for pos in range(n_new):
                logits = model(tok, caches, pos)
                tok = logits[:, -1].argmax(-1, keepdim=True)
            best = max(best, n_new / (time.perf_counter() - t0))
    return best


# tokens per timed generation (batch 1, from position 0)
GENERATE_TOKENS = {"tiny": 60, "small": 60, "mini": 40, "gpt2": 20}


def generation_side_by_side(name: str, threads: int, pairs: int) -> tuple[float, float, float]:
    """Batch-1 decode tokens/s, ODIN and PyTorch alternately (A B A B ...): medians and the
    median of the pairs' ratios. The config's shape with a context that holds the tokens."""
    import dataclasses
    import statistics

    n_new = GENERATE_TOKENS[name]
    shape = CONFIGS[name]["shape"]
    shape = dataclasses.replace(shape, context=max(shape.context, n_new + 1))
    odin, torch_, ratios = [], [], []
    for _ in range(pairs):
        odin.append(odin_generate_tokens_per_s(shape, n_new, repeats=1, threads=threads))
        torch_.append(torch_generate_tokens_per_s(shape, n_new, repeats=1, threads=threads))
        ratios.append(odin[-1] / torch_[-1])
    return statistics.median(odin), statistics.median(torch_), statistics.median(ratios)


def per_token_ms_at(shape: GPTShape, positions: list[int]) -> dict[int, float]:
    """Time of one decode step at a given position (cost grows with the attended prefix only)."""
    model = GPT(shape)
    model.init_weights(0)
    cache = model.new_cache(1)
    out = {}
    for p in range(max(positions) + 1):
        cache.step([1], [p])
    for p in positions:
        best = math.inf
        for _ in range(20):
            t0 = time.perf_counter()
            cache.step([1], [p])
            best = min(best, time.perf_counter() - t0)
        out[p] = best * 1e3
    return out


# ------------------------------------------------------------------ report
def machine() -> str:
    info = native.cpu_info()
    return (f"{info['cpu']}, {os.cpu_count()} logical cores, ISAs {'/'.join(info['available_isas'])}, "
            f"{info['compiler']}, Python {platform.python_version()}, {datetime.date.today().isoformat()}")


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (two machines may both say 'AMD EPYC')."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    except OSError:
        pass
    name = fields.get("model name") or str(native.cpu_info()["cpu"])
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


def cpu_slug() -> str:
    """cpu_name() as a section marker: 'amd-epyc-family-26-model-2'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", cpu_name()).strip("-").lower()


def table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers)] + [fmt.format(*r) for r in rows])


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--out", help="replace the end-to-end section of this markdown file")
    ap.add_argument("--sections", default="threads,isa,torch,generate")
    args = ap.parse_args(argv)
    steps = 6 if args.quick else 20
    sections = args.sections.split(",")
    md = args.markdown or bool(args.out)
    out: list[str] = [f"Machine: {cpu_name()}; {machine()}", ""]
    cores = os.cpu_count() or 1

    if "threads" in sections:
        cfg = CONFIGS["small"]
        counts = sorted({1, 2, 4, 12, min(cores, 16)})
        tps = {n: odin_tokens_per_s(cfg, n, steps) for n in counts}
        rows = [[str(n), f"{tps[n]:,.0f}", f"{tps[n] / tps[1]:.2f}x"] for n in counts]
        out += ["### Threads (spheres), 'small' config, AVX-512 if available", "",
                table(["threads", "tokens/s", "vs 1 thread"], rows, md), ""]

    if "isa" in sections:
        cfg = CONFIGS["small"]
        old = native.current_isa()
        tps = {}
        for isa in native.available_isas():
            native.set_isa(isa)
            tps[isa] = odin_tokens_per_s(cfg, 1, max(3, steps // 3), repeats=2)
        native.set_isa(old)
        rows = [[isa, f"{v:,.0f}", f"{v / tps['scalar']:.2f}x"] for isa, v in tps.items()]
        out += ["### Instruction sets, 'small' config, 1 thread, end to end", "",
                table(["ISA", "tokens/s", "vs scalar"], rows, md), ""]

    if "torch" in sections and have_torch():
        import torch
        rows = []
        pairs = 2 if args.quick else 3
        for name, cfg in CONFIGS.items():
            n_steps = VS_TORCH_STEPS[name]
            for n in sorted({1, min(2, cores)}):
                o, t, ratio = side_by_side(cfg, n, n_steps, pairs)
                rows.append([name, str(n), f"{o:,.0f}", f"{t:,.0f}", f"{ratio:.2f}x"])
                print(f"  {name} {n} thread(s): ODIN {o:,.0f} tok/s, PyTorch {t:,.0f}, {ratio:.2f}x", file=sys.stderr)
        out += [f"### Training throughput vs PyTorch {torch.__version__} eager (CPU, same model, same threads)", "",
                f"Interleaved A B A B, {pairs} pairs; tokens/s are medians, the ratio is the median of the pairs' "
                "ratios.", "",
                table(["config", "threads", "ODIN tok/s", "PyTorch tok/s", "ODIN / PyTorch"], rows, md), ""]
        memory = {who: peak_training_memory(who, "gpt2", min(2, cores)) for who in ("odin", "torch")}
        out += [f"### Peak memory training GPT-2 124M (B=4, T=256, AdamW), {min(2, cores)} threads", "",
                "Peak resident memory of a fresh process that trains 2 steps (VmHWM), Python included.", "",
                table(["", "ODIN", "PyTorch", "ODIN / PyTorch"],
                      [["peak RSS", f"{memory['odin'] / 2**30:.2f} GiB", f"{memory['torch'] / 2**30:.2f} GiB",
                        f"{memory['odin'] / memory['torch']:.2f}x"]], md), ""]
    elif "torch" in sections:
        out += ["(PyTorch not installed: the side-by-side training comparison was skipped)", ""]

    if "generate" in sections:
        rows = []
        for name in CONFIGS:
            for threads in (1, 2):
                if have_torch():
                    o, t, ratio = generation_side_by_side(name, threads, 1 if args.quick else 3)
                    rows.append([name, str(threads), f"{o:,.0f}", f"{t:,.0f}", f"{ratio:.2f}x"])
                else:
                    shape = CONFIGS[name]["shape"]
                    o = odin_generate_tokens_per_s(shape, min(GENERATE_TOKENS[name], shape.context - 1), threads=threads)
                    rows.append([name, str(threads), f"{o:,.0f}", "n/a", "n/a"])
        out += ["### Batch-1 generation with the KV cache (decode tokens/s from position 0; ODIN and PyTorch "
                "alternately, median of pairs)", "",
                table(["config", "threads", "ODIN tok/s", "PyTorch tok/s", "ODIN / PyTorch"], rows, md), ""]
        shape = GPTShape(512, 1024, 4, 8, 256)
        ms = per_token_ms_at(shape, [0, 64, 256, 1023])
        rows = [[str(p), f"{v:.3f}"] for p, v in ms.items()]
        out += ["### Per-token decode time by position ('small' shape, context 1024): only attention grows", "",
                table(["position", "ms/token"], rows, md), ""]

    text = "\n".join(out)
    print(text)
    if args.out:  # one section per CPU: a run on another CPU leaves this one's figures alone
        _replace_section(Path(args.out), f"end-to-end {cpu_slug()}", text, heading=f"End to end: {cpu_name()}")
    return 0


def _replace_section(path: Path, name: str, body: str, tool: str = "bench_train.py",
                     heading: str = "End to end") -> None:
    """Replace the block between this tool's BEGIN/END markers in `path` (or append it under
    `heading`), atomically."""
    start, end = f"<!-- BEGIN {name} (tools/{tool}) -->", f"<!-- END {name} -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
