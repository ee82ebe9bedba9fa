"""The training loop: one readable loop over the spheres trainer.

Every K steps Python hands the C trainer K batches (one call, GIL released) and then
does the bookkeeping: progress line, metrics log, periodic validation, checkpoints.
Resuming restores weights, AdamW moments, the step (hence the schedule) and the batch
sampler's position, so a resumed run ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import numpy as np

from odin.abacus import longest_digit_run, training_offsets
from odin.blueprint import Blueprint
from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.config import RunConfig
from odin.data.batching import BatchSampler, encode_examples, max_sequence_length
from odin.data.dataset import heldout_splits, load_manifest, load_split
from odin.evaluate import EvalResult, eval_options, evaluate_examples, teacher_forced_stats
from odin.model import GPT
from odin.native import OdinError
from odin.spheres import N_SPHERES, SpheresTrainer, default_threads
from odin.tokenizers import CharTokenizer

STEPS_PER_CALL = 16  # steps per C call: amortises Python, keeps the progress line live


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    steps: int
    final_loss: float
    seconds: float
    tokens_per_s: float
    evals: dict[str, EvalResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # split -> why it was not evaluated


class ProgressLine:
    """One self-overwriting status line: step, loss, speed, ETA and the 12 spheres.

    Each sphere is drawn as a bar glyph of its busy time since the previous update,
    relative to its fair share (threads / 12 of the wall time): a full block means the
    threads kept it busy all the time; low or uneven glyphs show time lost to the
    reduction, to Python between calls, or to a starved thread."""

    LEVELS = " ▁▂▃▄▅▆▇█"
    ASCII_LEVELS = " .:-=+*#%@"

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.started = time.perf_counter()
        self.interactive = enabled and stream.isatty()
        self.last_print = 0.0
        self.last_busy: list[float] = []
        self.last_time = self.started
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.levels = self.LEVELS if encoding.startswith("utf") else self.ASCII_LEVELS

    def spheres(self, snap: Any, now: float) -> str:
        busy = [s.busy_seconds for s in snap.spheres]
        wall = max(now - self.last_time, 1e-9) * min(snap.threads, len(busy)) / len(busy)
        prev = self.last_busy or [0.0] * len(busy)
        self.last_busy, self.last_time = busy, now
        top = len(self.levels) - 1
        return "".join(self.levels[min(top, round(top * (b - p) / wall))] for b, p in zip(busy, prev))

    def update(self, step: int, start_step: int, snap: Any, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and not self.interactive and now - self.last_print < 5.0:
            return
        if not force and self.interactive and now - self.last_print < 0.1:
            return
        self.last_print = now
        done = step - start_step
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        bar = "#" * int(30 * step / max(self.total, 1))
        line = (f"step {step:>6}/{self.total} [{bar:<30}] loss {snap.loss:7.4f} lr {snap.lr:.2e} "
                f"|g| {snap.grad_norm:6.3f} {snap.tokens_per_s / 1e3:7.1f}k tok/s ETA {_fmt_s(eta)} "
                f"spheres[{self.spheres(snap, now)}] x{snap.threads}")
        if self.interactive:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


class _SigintStops:
    """While training, Ctrl-C asks the trainer to stop at the next step boundary (the C call
    in flight finishes first), so the loop exits normally and the checkpoint is saved."""

    def __init__(self, trainer: SpheresTrainer) -> None:
        self.fired = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum: int, frame: Any) -> None:
                self.fired = True
                trainer.stop()
            self._old = signal.signal(signal.SIGINT, handler)

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def shift_right(tokens: np.ndarray, mask: np.ndarray, pad_id: int, rng: np.random.Generator) -> None:
    """In place: move each row's sequence right by a random amount within the free padding
    (tokens[B, T+1] padded at the end, mask[B, T] aligned with tokens[:, :-1])."""
    T1 = tokens.shape[1]
    lengths = T1 - np.argmax((tokens != pad_id)[:, ::-1], axis=1)  # index after the last non-pad
    for b, n in enumerate(lengths):
        s = int(rng.integers(0, T1 - n + 1))
        if s:
            tokens[b] = np.roll(tokens[b], s)
            mask[b] = np.roll(mask[b], s)


def _equal_length_runs(batches: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, list]]:
    """(index of the first, batches) for each run of consecutive batches of the same length."""
    runs: list[tuple[int, list]] = []
    for i, batch in enumerate(batches):
        if runs and runs[-1][1][0][0].shape == batch[0].shape:
            runs[-1][1].append(batch)
        else:
            runs.append((i, [batch]))
    return runs


def _seq_len(*encoded_sets: Any) -> int:
    return max(max_sequence_length(e) for e in encoded_sets if len(e))


def train(
    run_config: RunConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    threads: Optional[int] = None,
    progress: bool = True,
    stream: TextIO = sys.stderr,
    final_eval_splits: Optional[tuple[str, ...]] = None,
    final_eval_limit: Optional[int] = 1000,
    on_trainer: Optional[Callable[[SpheresTrainer], None]] = None,
) -> TrainResult:
    """Train `run_config` on the dataset in `data_dir`; checkpoints go to `out_dir/checkpoint`."""
    cfg_m, cfg_t = run_config.model, run_config.train
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = load_manifest(data_dir)
    reverse = bool(manifest.get("settings", {}).get("reverse_answer", False))
    tokenizer = CharTokenizer()
    train_set = encode_examples(load_split(data_dir, "train"), tokenizer)
    val_examples = load_split(data_dir, "val")
    val_set = encode_examples(val_examples, tokenizer)
    T = _seq_len(train_set, val_set)
    Blueprint(cfg_m).check_sequence_length(T)
    # Abacus runs train every absolute position: each sequence is shifted right by a random
    # amount inside the full context, so longer test sequences meet trained positions
    shift_positions = bool(cfg_m.abacus) and cfg_m.positions == "learned"
    if shift_positions:
        T = cfg_m.context - 1
    if cfg_m.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"[model].vocab_size is {cfg_m.vocab_size} but the char tokenizer has "
                         f"{tokenizer.vocab_size} tokens; set vocab_size = {tokenizer.vocab_size}")

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoint"
    metrics_path = out_dir / "metrics.jsonl"
    # length buckets would shorten the full-context rows the position shifts need
    sampler = BatchSampler(train_set, cfg_t.batch_size, T, seed=cfg_t.seed, loss_on=cfg_t.loss_on,
                           bucket_pool=0 if shift_positions else cfg_t.length_buckets)
    step = 0
    if resume:
        loaded = load_model_checkpoint(ckpt_dir, with_optimizer=True)
        if loaded.run_config.model != cfg_m:
            raise ValueError(f"cannot resume: {ckpt_dir} holds a different model config "
                             f"({loaded.run_config.model}) than requested ({cfg_m})")
        model: GPT = loaded.model
        step = loaded.step
        sampler.load_state_dict(loaded.trainer_state["sampler"])
    else:
        model = model_from_config(run_config)
        model.init_weights(cfg_m.init_seed)
        metrics_path.write_text("")

    abacus_max_offset = 0
    if cfg_m.abacus:  # offsets may use the places the longest training number leaves free
        longest = longest_digit_run(train_set.tokens, model.shape.digit_first)
        abacus_max_offset = cfg_m.abacus - 1 - (longest + 1)
        if abacus_max_offset < 0:
            raise ValueError(f"[model].abacus = {cfg_m.abacus} leaves no room above the longest number "
                             f"({longest} places): raise it to at least {longest + 2}")
    n_threads = threads or cfg_t.threads or default_threads()
    trainer = SpheresTrainer(model, cfg_t.batch_size, T, threads=n_threads)
    trainer.configure(lr=cfg_t.lr, min_lr=cfg_t.lr * cfg_t.min_lr_frac, warmup_steps=cfg_t.warmup_steps,
                      total_steps=cfg_t.steps, beta1=cfg_t.beta1, beta2=cfg_t.beta2, eps=cfg_t.eps,
                      weight_decay=cfg_t.weight_decay, grad_clip=cfg_t.grad_clip)
    trainer.set_step(step)
    if on_trainer:
        on_trainer(trainer)

    def trainer_state() -> dict[str, Any]:
        return {"sampler": sampler.state_dict(), "reverse_answer": reverse, "data_dir": str(data_dir),
                "dataset": {"seed": manifest.get("seed"), "settings": manifest.get("settings")}}

    saved_at: list[int] = []

    def last_kept() -> str:
        return (f"the last checkpoint ({ckpt_dir}, step {saved_at[-1]}) is intact" if saved_at
                else "no checkpoint was written in this run")

    def checkpoint() -> Path:
        try:
            path = save_model_checkpoint(ckpt_dir, model, tokenizer, run_config, step=step,
                                         trainer_state=trainer_state())
        except OdinError as exc:
            raise type(exc)(f"{exc}; training stopped, {last_kept()}") from None
        saved_at.append(step)
        return path

    eval_subset = val_examples[: cfg_t.eval_examples]
    bar = ProgressLine(cfg_t.steps, stream, progress)
    start_step, started = step, time.perf_counter()
    if progress:
        stream.write(f"training {cfg_m.arch} L={cfg_m.n_layer} d={cfg_m.d_model} ({model.n_params:,} params) on "
                     f"{len(train_set):,} examples, batch {cfg_t.batch_size} x T={T}, {n_threads} threads, "
                     f"{N_SPHERES} spheres\n")
    last_loss = float("nan")
    tokens_done = 0  # input positions trained on (batches padded to their length)
    sigint = _SigintStops(trainer)
    while step < cfg_t.steps:
        # stop at the next eval / checkpoint boundary so they happen at exact step numbers
        k = min(STEPS_PER_CALL, cfg_t.steps - step)
        for every in (cfg_t.eval_every, cfg_t.checkpoint_every):
            if every:
                k = min(k, every - step % every)
        before = sampler.state_dict()
        batches = [sampler.next_batch() for _ in range(k)]
        done = 0
        for first, group in _equal_length_runs(batches):  # one C call per run of equal-length batches
            tokens = np.stack([b[0] for b in group])
            mask = np.stack([b[1] for b in group])
            if shift_positions:
                for i in range(len(group)):
                    shift_right(tokens[i], mask[i], tokenizer.pad_id,
                                np.random.default_rng([cfg_t.seed, step + first + i, 1]))
            ids = None
            if cfg_m.abacus:  # one random place offset per sequence, from (seed, step): resumable
                ids = np.stack([model.abacus_ids(tokens[i, :, :-1], training_offsets(
                    np.random.default_rng([cfg_t.seed, step + first + i]), cfg_t.batch_size, abacus_max_offset))
                    for i in range(len(group))])
            try:
                ran = trainer.run(tokens, mask, ids)
            except OdinError as exc:  # NaN/Inf or out of memory in a sphere: nothing was written
                raise type(exc)(f"{exc}; training stopped, {last_kept()}") from None
            done += ran
            tokens_done += ran * cfg_t.batch_size * (tokens.shape[2] - 1)
            if ran < len(group):  # stopped or a checkpoint was requested
                break
        if done < k:  # stopped or checkpoint requested mid-chunk: un-consume the unused batches
            sampler.load_state_dict(before)
            for _ in range(done):
                sampler.next_batch()
        step += done
        snap = trainer.snapshot()
        last_loss = snap.loss
        for rec in trainer.history(since_step=step - done):
            _append_jsonl(metrics_path, {"step": rec.step, "loss": rec.loss, "lr": rec.lr,
                                         "grad_norm": rec.grad_norm, "tokens_per_s": rec.tokens_per_s,
                                         "elapsed": time.perf_counter() - started})
        bar.update(step, start_step, snap)
        if cfg_t.eval_every and step % cfg_t.eval_every == 0 and step < cfg_t.steps:
            _periodic_eval(model, tokenizer, val_examples, eval_subset, eval_options(manifest), step, metrics_path,
                           stream, progress)
        wants_ckpt = trainer.take_checkpoint_request()
        if wants_ckpt or (cfg_t.checkpoint_every and step % cfg_t.checkpoint_every == 0):
            checkpoint()
        if snap.stopped:
            break
    sigint.restore()
    bar.update(step, start_step, trainer.snapshot(), force=True)
    bar.finish()
    path = checkpoint()
    if sigint.fired:
        raise KeyboardInterrupt(f"interrupted at step {step}; checkpoint saved in {path} (continue with --resume)")
    seconds = time.perf_counter() - started
    tps = tokens_done / max(seconds, 1e-9)
    result = TrainResult(out_dir, path, step, last_loss, seconds, tps)
    if final_eval_splits is None:
        final_eval_splits = ("test", *heldout_splits(manifest))
    for split in final_eval_splits:
        try:
            examples = load_split(data_dir, split)
        except FileNotFoundError:
            continue
        if final_eval_limit:
            examples = examples[:final_eval_limit]
        longest = max((len(tokenizer.encode(e.prompt + e.answer)) + 2 for e in examples), default=0)
        if longest - 1 > cfg_m.context:
            # the checkpoint is saved already: a split the model cannot hold is reported, not fatal
            note = (f"skipped the final evaluation of '{split}': its longest example needs context "
                    f">= {longest - 1}, the model has {cfg_m.context}")
            if cfg_m.positions != "learned":  # nothing in it depends on absolute positions
                note += f" (score it with: odin eval CHECKPOINT --splits {split} --context {longest - 1})"
            result.skipped[split] = note
            if progress:
                stream.write(note + "\n")
            continue
        result.evals[split] = evaluate_examples(model, tokenizer, examples, **eval_options(manifest))
        _append_jsonl(metrics_path, {"step": step, "split": split, "exact": result.evals[split].exact,
                                     "token_accuracy": result.evals[split].token_accuracy})
    return result


def _periodic_eval(model: GPT, tokenizer: CharTokenizer, val_examples: list, subset: list, options: dict,
                   step: int, metrics_path: Path, stream: TextIO, progress: bool) -> None:
    stats = teacher_forced_stats(model, tokenizer, val_examples[:2000])
    exact = evaluate_examples(model, tokenizer, subset, **options).exact if subset else float("nan")
    _append_jsonl(metrics_path, {"step": step, "val_loss": stats.mean_loss, "val_exact": exact})
    if progress:
        stream.write(f"\n  [eval @ {step}] val loss {stats.mean_loss:.4f}  exact match {100 * exact:.1f}% "
                     f"on {len(subset)} val examples\n")
        stream.flush()
