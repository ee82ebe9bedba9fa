"""The training loop: one readable loop over the spheres trainer.

Every K steps Python hands the C trainer K batches (one call, GIL released) and then
does the bookkeeping: progress line, metrics log, periodic validation, checkpoints.
Resuming restores weights, AdamW moments, the step (hence the schedule) and the batch
sampler's position, so a resumed run ends with exactly the weights of an uninterrupted one.
Before the run folder is touched everything is checked (odin.run_checks); the folder is then
locked for the run (odin.runlock); SIGINT/SIGTERM save and stop (odin.run_control).
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TextIO

import numpy as np

from odin.abacus import longest_digit_run, training_offsets
from odin.blueprint import Blueprint
from odin.checkpoint import model_from_config, save_model_checkpoint
from odin.checkpoint_io import read_progress
from odin.config import RunConfig
from odin.data.batching import BatchSampler, encode_examples, max_sequence_length
from odin.data.dataset import heldout_splits, load_manifest, load_split
from odin.evaluate import EvalResult, eval_options, evaluate_examples, teacher_forced_stats
from odin.model import GPT
from odin.native import OdinError
from odin.run_control import QuietWhenClosed, StopSignals, TrainingInterrupted  # noqa: F401 (re-exported)
from odin.run_checks import check_same_dataset, init_weights_from, resolve_threads, resume_state
from odin.runlock import FolderLock, lock_folder, refuse_busy_folder, refuse_existing_run
from odin.spheres import N_SPHERES, SpheresTrainer
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


def _ranks_note(world: Any) -> str:
    return f" x {world.size} MPI ranks" if world is not None else ""


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
    run_config: Optional[RunConfig],
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    init_from: Optional[str | Path] = None,
    threads: Optional[int] = None,
    progress: bool = True,
    stream: TextIO = sys.stderr,
    final_eval_splits: Optional[tuple[str, ...]] = None,
    final_eval_limit: Optional[int] = 1000,
    on_trainer: Optional[Callable[[SpheresTrainer], None]] = None,
    world: Optional[Any] = None,
) -> TrainResult:
    """Train `run_config` on the dataset in `data_dir`; checkpoints go to `out_dir/checkpoint`.

    Everything is checked before the run folder is touched. The folder is locked for the
    whole call (:mod:`odin.runlock`); a folder that holds a run already is refused unless
    ``resume`` (continue it: the run's settings come from its checkpoint, ``run_config`` may
    be None and must otherwise match) or ``overwrite`` (start it again). ``init_from`` starts
    a new run from the weights of a checkpoint (its model config replaces ``run_config``'s;
    fresh optimizer, step 0). SIGINT/SIGTERM stop at a step boundary, save the checkpoint and
    raise :class:`TrainingInterrupted`.

    ``world`` (an :class:`odin.distributed.World`, this process as rank 0 of an MPI run):
    the other ranks follow with :func:`odin.distributed.run.follow`; this rank alone reads the
    checkpoint, writes the run folder and evaluates.
    """
    if resume and init_from is not None:
        raise ValueError("--init-from starts a new run and --resume continues one: give one of them")
    if run_config is None and not resume:
        raise ValueError("a run config is needed unless the run is resumed")
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    stream = QuietWhenClosed(stream)
    refuse_busy_folder(out_dir)  # early, before the slow part
    refuse_existing_run(out_dir, resume=resume, overwrite=overwrite)
    ckpt_dir = out_dir / "checkpoint"
    signals = StopSignals()
    lock: Optional[FolderLock] = None
    try:
        tokenizer = CharTokenizer()
        resumed = resume_state(ckpt_dir, run_config) if resume else None
        initial = init_weights_from(init_from, tokenizer) if init_from is not None else None
        if resumed is not None:
            run_config = resumed.run_config
        elif initial is not None:
            run_config = dataclasses.replace(run_config, model=initial.run_config.model)
        assert run_config is not None
        n_threads = resolve_threads(threads if threads is not None else run_config.train.threads)
        manifest = load_manifest(data_dir)
        if resumed is not None:
            check_same_dataset(resumed.trainer_state.get("dataset"), manifest, data_dir, ckpt_dir)
        # a model from a checkpoint (--init-from, --resume) may carry a padded vocabulary (an imported
        # HF model's rows beyond its tokenizer); a fresh config must match the tokenizer exactly
        setup = _prepare_data(run_config, data_dir, manifest, tokenizer,
                              padded_vocab=initial is not None or resumed is not None)
        sampler = setup.sampler
        if resumed is not None:
            try:
                sampler.load_state_dict(dict(resumed.trainer_state["sampler"]))
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"cannot resume from {ckpt_dir}: its batch sampler state does not fit: "
                                 f"{str(error).strip(chr(39))}") from None

        # everything is checked: only now is the run folder created, locked and written
        created = not out_dir.exists()
        lock = lock_folder(out_dir, "odin train")
        refuse_existing_run(out_dir, resume=resume, overwrite=overwrite)  # again, under the lock
        if resumed is not None and read_progress(ckpt_dir)[0] != resumed.step:
            raise ValueError(f"cannot resume: {ckpt_dir} changed while this run was starting (another process "
                             f"trained it meanwhile); start the resume again")
        if overwrite:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        if world is not None:  # everything is checked: the other ranks may start
            from odin.distributed.run import send_plan

            send_plan(world, run_config, data_dir, resumed, initial, sampler.state_dict(),
                      padded_vocab=initial is not None or resumed is not None)
        return _run(run_config, data_dir, out_dir, manifest, tokenizer, setup, n_threads, signals, stream,
                    resumed=resumed, initial=initial, progress=progress, final_eval_splits=final_eval_splits,
                    final_eval_limit=final_eval_limit, on_trainer=on_trainer, world=world)
    except BaseException:
        if lock is not None and created and not ckpt_dir.exists():  # a new folder that got nothing: remove it
            metrics = out_dir / "metrics.jsonl"
            if metrics.exists() and metrics.stat().st_size == 0:
                metrics.unlink()
            lock.release_and_remove_if_empty()
        raise
    finally:
        signals.restore()
        if lock is not None:
            lock.release()


@dataclass
class _Data:
    train_set: Any
    val_examples: list
    T: int
    shift_positions: bool
    abacus_max_offset: int
    sampler: BatchSampler
    reverse: bool


def _prepare_data(run_config: RunConfig, data_dir: Path, manifest: Mapping[str, Any],
                  tokenizer: CharTokenizer, padded_vocab: bool = False) -> _Data:
    """Load and encode the splits; check they fit the model. Reads only."""
    cfg_m, cfg_t = run_config.model, run_config.train
    too_small = cfg_m.vocab_size < tokenizer.vocab_size
    if too_small or (cfg_m.vocab_size != tokenizer.vocab_size and not padded_vocab):
        raise ValueError(f"[model].vocab_size is {cfg_m.vocab_size} but the char tokenizer has "
                         f"{tokenizer.vocab_size} tokens; set vocab_size = {tokenizer.vocab_size}")
    reverse = bool(manifest.get("settings", {}).get("reverse_answer", False))
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
    abacus_max_offset = 0
    if cfg_m.abacus:  # offsets may use the places the longest training number leaves free
        longest = longest_digit_run(train_set.tokens, tokenizer.encode("0")[0])
        abacus_max_offset = cfg_m.abacus - 1 - (longest + 1)
        if abacus_max_offset < 0:
            raise ValueError(f"[model].abacus = {cfg_m.abacus} leaves no room above the longest number "
                             f"({longest} places): raise it to at least {longest + 2}")
    # length buckets would shorten the full-context rows the position shifts need
    sampler = BatchSampler(train_set, cfg_t.batch_size, T, seed=cfg_t.seed, loss_on=cfg_t.loss_on,
                           bucket_pool=0 if shift_positions else cfg_t.length_buckets)
    return _Data(train_set, val_examples, T, shift_positions, abacus_max_offset, sampler, reverse)


def _run(run_config: RunConfig, data_dir: Path, out_dir: Path, manifest: Mapping[str, Any],
         tokenizer: CharTokenizer, data: _Data, n_threads: int, signals: StopSignals, stream: Any, *,
         resumed: Any, initial: Any, progress: bool, final_eval_splits: Optional[tuple[str, ...]],
         final_eval_limit: Optional[int], on_trainer: Optional[Callable[[SpheresTrainer], None]],
         world: Optional[Any] = None) -> TrainResult:
    """The training itself, in a locked run folder whose settings were all checked. In an MPI
    run every rank runs this loop in step; rank 0 alone writes, prints and evaluates."""
    writer = world is None or world.rank == 0
    progress = progress and writer
    cfg_m, cfg_t = run_config.model, run_config.train
    ckpt_dir = out_dir / "checkpoint"
    metrics_path = out_dir / "metrics.jsonl"
    sampler, T, shift_positions = data.sampler, data.T, data.shift_positions
    step = 0
    if resumed is not None:
        model: GPT = resumed.model
        step = resumed.step
    else:
        if initial is not None:
            model = initial.model  # its weights; the AdamW moments start at zero
        else:
            model = model_from_config(run_config)
            model.init_weights(cfg_m.init_seed)
        if writer:
            metrics_path.write_text("")

    if world is not None:
        from odin.distributed.spheres import DistributedSpheresTrainer

        trainer: SpheresTrainer = DistributedSpheresTrainer(model, cfg_t.batch_size, T, world, threads=n_threads)
    else:
        trainer = SpheresTrainer(model, cfg_t.batch_size, T, threads=n_threads)
    trainer.configure(lr=cfg_t.lr, min_lr=cfg_t.lr * cfg_t.min_lr_frac, warmup_steps=cfg_t.warmup_steps,
                      total_steps=cfg_t.steps, beta1=cfg_t.beta1, beta2=cfg_t.beta2, eps=cfg_t.eps,
                      weight_decay=cfg_t.weight_decay, grad_clip=cfg_t.grad_clip)
    trainer.set_step(step)
    signals.trainer = trainer
    if signals.signum is not None:  # a signal came while the trainer was being made
        trainer.stop()
    if on_trainer:
        on_trainer(trainer)
    init_note = {"init_from": str(Path(initial.path).resolve())} if initial is not None else {}
    if resumed is not None and "init_from" in resumed.trainer_state:
        init_note = {"init_from": resumed.trainer_state["init_from"]}

    def trainer_state() -> dict[str, Any]:
        return {"sampler": sampler.state_dict(), "reverse_answer": data.reverse, "data_dir": str(data_dir),
                "dataset": {"seed": manifest.get("seed"), "settings": manifest.get("settings")}, **init_note}

    saved_at: list[int] = []

    def last_kept() -> str:
        return (f"the last checkpoint ({ckpt_dir}, step {saved_at[-1]}) is intact" if saved_at
                else "no checkpoint was written in this run")

    def checkpoint() -> Path:
        if not writer:
            return ckpt_dir
        try:
            path = save_model_checkpoint(ckpt_dir, model, tokenizer, run_config, step=step,
                                         trainer_state=trainer_state())
        except OdinError as exc:
            raise type(exc)(f"{exc}; training stopped, {last_kept()}") from None
        saved_at.append(step)
        return path

    val_examples = data.val_examples
    eval_subset = val_examples[: cfg_t.eval_examples]
    bar = ProgressLine(cfg_t.steps, stream, progress)
    start_step, started = step, time.perf_counter()
    if progress:
        source = f", from the weights of {initial.path}" if initial is not None else ""
        stream.write(f"training {cfg_m.arch} L={cfg_m.n_layer} d={cfg_m.d_model} ({model.n_params:,} params) on "
                     f"{len(data.train_set):,} examples, batch {cfg_t.batch_size} x T={T}, {n_threads} threads"
                     f"{_ranks_note(world)}, {N_SPHERES} spheres{source}\n")
    last_loss = float("nan")
    tokens_done = 0  # input positions trained on (batches padded to their length)
    while step < cfg_t.steps and signals.signum is None:
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
                    np.random.default_rng([cfg_t.seed, step + first + i]), cfg_t.batch_size,
                    data.abacus_max_offset)) for i in range(len(group))])
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
        for rec in trainer.history(since_step=step - done) if writer else ():
            _append_jsonl(metrics_path, {"step": rec.step, "loss": rec.loss, "lr": rec.lr,
                                         "grad_norm": rec.grad_norm, "tokens_per_s": rec.tokens_per_s,
                                         "elapsed": time.perf_counter() - started})
        bar.update(step, start_step, snap)
        if signals.signum is not None:
            break
        if writer and cfg_t.eval_every and step % cfg_t.eval_every == 0 and step < cfg_t.steps:
            _periodic_eval(model, tokenizer, val_examples, eval_subset, eval_options(manifest), step, metrics_path,
                           stream, progress)
        wants_ckpt = trainer.take_checkpoint_request()
        if wants_ckpt or (cfg_t.checkpoint_every and step % cfg_t.checkpoint_every == 0):
            checkpoint()
        if snap.stopped:
            break
    bar.update(step, start_step, trainer.snapshot(), force=True)
    bar.finish()
    path = checkpoint()
    signals.trainer = None  # saved: a signal from here on interrupts at once
    signals.saved_note = f"checkpoint saved in {path} at step {step}"
    if signals.signum is not None:
        raise signals.interrupted(f"stopped at step {step}; checkpoint saved in {path} (continue with --resume)")
    seconds = time.perf_counter() - started
    tps = tokens_done / max(seconds, 1e-9)
    result = TrainResult(out_dir, path, step, last_loss, seconds, tps)
    if not writer:
        final_eval_splits = ()
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
        scored = evaluate_examples(model, tokenizer, examples, **eval_options(manifest))
        result.evals[split] = scored
        _append_jsonl(metrics_path, final_eval_record(step, split, scored))
    return result


def final_eval_record(step: int, split: str, scored: EvalResult) -> dict[str, Any]:
    """The metrics.jsonl record of a split scored with the final weights (``kind`` tells it
    from the per-step and periodic records; the dashboard shows it)."""
    def number(value: float) -> Optional[float]:
        return value if math.isfinite(value) else None  # JSON has no NaN

    return {"kind": "final_eval", "step": step, "split": split, "n": scored.n, "correct": scored.correct,
            "exact": number(scored.exact), "token_accuracy": number(scored.token_accuracy),
            "perplexity": number(scored.perplexity)}


def _periodic_eval(model: GPT, tokenizer: CharTokenizer, val_examples: list, subset: list, options: dict,
                   step: int, metrics_path: Path, stream: TextIO, progress: bool) -> None:
    stats = teacher_forced_stats(model, tokenizer, val_examples[:2000])
    exact = evaluate_examples(model, tokenizer, subset, **options).exact if subset else float("nan")
    _append_jsonl(metrics_path, {"step": step, "val_loss": stats.mean_loss, "val_exact": exact})
    if progress:
        stream.write(f"\n  [eval @ {step}] val loss {stats.mean_loss:.4f}  exact match {100 * exact:.1f}% "
                     f"on {len(subset)} val examples\n")
        stream.flush()
