"""Stage 4, train: keep training the pipeline's model on every new shard.

The model is built by :func:`odin.checkpoint.model_from_config` from the ``[model]``
preset with the tokenizer's vocabulary, and trained by :class:`odin.spheres.SpheresTrainer`
with the loss on every token. Each shard gets its ``steps`` (``[train].steps_per_shard``
for a full one); a ``replay_fraction`` of each batch is windows from shards trained
before, against forgetting. The windows of step *k* of a shard come from (seed, shard id,
k) alone (:func:`odin.pipeline.shards.sample_windows`), so a shard interrupted at step *k*
resumes at *k* with the same windows. After a shard: the validation loss on the held-out
tails of every trained shard (evenly subsampled to ``val_max_tokens``), then a checkpoint every
``checkpoint_every_shards`` shards (and every ``checkpoint_every_steps`` steps, and when
stopped).

**The checkpoint is the source of truth for training.** Its trainer state lists the shards
it has consumed, the shard in progress with the steps done, and the per-shard history.
At start-up pipeline.db is reconciled from it: shards the checkpoint has consumed are
*trained* (even if the process died before the database said so), the others are
*pending* (even if the database had recorded them: steps after the last checkpoint are
redone from the checkpoint, never counted twice). So each shard is in the model exactly
once, and ``step`` = the sum of the consumed shards' steps + the steps of the one in
progress.
"""
from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.checkpoint_io import CheckpointError
from odin.config import RunConfig
from odin.native import OdinError
from odin.pipeline.config import PipelineConfig, PipelinePaths
from odin.pipeline.shards import (
    ShardError, eval_windows, padded_window, read_shard, sample_windows, shard_seed,
)
from odin.pipeline.store import Store
from odin.pipeline.tokenize_stage import PipelineStateError
from odin.quant.checkpoint import refuse_training
from odin.distributed.world import current as current_world
from odin.spheres import SpheresTrainer, default_threads

STEPS_PER_CALL = 8  # steps per C call: few enough that the status line and a stop stay prompt
STATE_FORMAT = 1


@dataclass
class TrainStatus:
    """What the status line shows; written by the training thread only."""

    shard: Optional[str] = None
    done: int = 0  # steps of the current shard
    steps: int = 0
    step: int = 0  # global optimizer step
    loss: Optional[float] = None
    tokens_per_s: float = 0.0
    tokens_processed: int = 0
    val_loss: Optional[float] = None
    checkpoint_step: Optional[int] = None


@dataclass
class _State:
    """Saved in the checkpoint (trainer_state["pipeline"])."""

    tokenizer_sha256: str
    trained: list[str] = field(default_factory=list)
    current: Optional[dict[str, Any]] = None  # {"shard": id, "done": steps}
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens_processed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "_State":
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise PipelineStateError(f"{where} was not written by odin-pipeline (no pipeline trainer state)")
        return cls(data["tokenizer_sha256"], list(data["trained"]), data.get("current"),
                   list(data.get("history", [])), int(data.get("tokens_processed", 0)))


class TrainerStage:
    def __init__(self, paths: PipelinePaths, config: PipelineConfig, store: Store,
                 on_event: Callable[[str, str, str], None]) -> None:
        self.paths, self.config, self.store, self.on_event = paths, config, store, on_event
        self.status = TrainStatus()
        self.model: Any = None
        self.trainer: Optional[SpheresTrainer] = None
        self.tokenizer: Any = None
        self.run_config: Optional[RunConfig] = None
        self.state: Optional[_State] = None
        self._saved_step: Optional[int] = None
        self._shards_since_save = 0
        self._lock = threading.Lock()  # trainer creation vs stop() from the signal handler
        self._stopping = False
        self._live_written = 0.0
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    # ------------------------------------------------------------------ start-up
    def _recover_checkpoint_dir(self) -> None:
        """Undo what an interrupted checkpoint save can leave (see odin.checkpoint_io):
        a complete old checkpoint parked under .latest.old-* with nothing at latest/."""
        target = self.paths.checkpoint
        parked = sorted(self.paths.checkpoints.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if not target.exists() and parked:
            parked[-1].rename(target)
            self.on_event("warn", "checkpoint", f"restored {target} from an interrupted save")
        for stale in self.paths.checkpoints.glob(f".{target.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)

    def start(self, tokenizer: Any, tokenizer_sha256: str) -> None:
        """Load the checkpoint (or make a new model) and reconcile pipeline.db with it."""
        self.tokenizer = tokenizer
        self.run_config = self._run_config(step=1)
        self._recover_checkpoint_dir()
        target = self.paths.checkpoint
        if target.exists():
            try:
                refuse_training(target)  # a quantized model answers but cannot train
                loaded = load_model_checkpoint(target, with_optimizer=True)
            except (CheckpointError, OSError) as error:
                raise PipelineStateError(f"cannot resume training: {error}") from None
            if loaded.run_config.model != self.run_config.model:
                raise PipelineStateError(
                    f"{target} holds a model configured as {loaded.run_config.model}, but pipeline.toml's "
                    f"[model] now gives {self.run_config.model}; restore the old [model] settings, or move "
                    f"{self.paths.checkpoints} away to start a new model")
            state = _State.from_json(loaded.trainer_state.get("pipeline"), str(target))
            if state.tokenizer_sha256 != tokenizer_sha256:
                raise PipelineStateError(f"{target} was trained with another tokenizer than {self.paths.tokenizer}")
            self.model, step = loaded.model, loaded.step
            self._saved_step = step
        else:
            self.model = model_from_config(self.run_config)
            self.model.init_weights(self.run_config.model.init_seed)
            state, step = _State(tokenizer_sha256), 0
        self.state = state
        expected = sum(h["steps"] for h in state.history) + (state.current or {}).get("done", 0)
        if expected != step:
            self.on_event("warn", "checkpoint", f"checkpoint step {step} differs from the steps of the shards it "
                                                f"lists ({expected})")
        self._reconcile(state)
        cfg = self.config.train
        world = current_world()
        if world is not None:  # rank 0 of an MPI run: the other ranks train each step with it
            from odin.distributed.pipeline import PipelineLeader

            self.trainer = PipelineLeader(self.model, self.run_config, cfg.batch_size, self.run_config.model.context,
                                          world, cfg.threads)
        else:
            self.trainer = SpheresTrainer(self.model, cfg.batch_size, self.run_config.model.context,
                                          threads=cfg.threads or default_threads())
        # constant learning rate after warm-up (total_steps 0): a stream has no planned end
        self.trainer.configure(lr=cfg.lr, min_lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=0,
                               weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)
        self.trainer.set_step(step)
        last = state.history[-1] if state.history else {}
        self.status = TrainStatus(step=step, tokens_processed=state.tokens_processed,
                                  val_loss=last.get("val_loss"), checkpoint_step=self._saved_step)
        if self._stopping:
            self.trainer.stop()

    def _run_config(self, step: int) -> RunConfig:
        """The model from [model] and the tokenizer; [train] mirrors the pipeline's settings so
        the checkpoint's config.json tells `odin` tools how it was trained."""
        base = self.config.run_config(self.tokenizer.vocab_size)
        cfg = self.config.train
        train = dataclasses.replace(base.train, steps=max(1, step), batch_size=cfg.batch_size, lr=cfg.lr,
                                    min_lr_frac=1.0, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                                    grad_clip=cfg.grad_clip, seed=cfg.seed, threads=cfg.threads, loss_on="all",
                                    eval_every=0, checkpoint_every=0)
        return dataclasses.replace(base, train=train)

    def _reconcile(self, state: _State) -> None:
        """Make pipeline.db agree with the checkpoint about which shards are trained."""
        known = {row["id"]: row for row in self.store.shards()}
        unknown = [sid for sid in state.trained if sid not in known]
        if unknown:
            raise PipelineStateError(
                f"{self.paths.checkpoint} has trained on shard(s) {', '.join(unknown[:3])} that pipeline.db does "
                f"not know: the database does not belong to this checkpoint (move {self.paths.checkpoints} away "
                f"to train a new model on what the database has)")
        history = {h["shard"]: h for h in state.history}
        fixed = 0
        with self.store.tx() as db:
            for sid, row in known.items():
                if sid in history:
                    h = history[sid]
                    if row["status"] != "trained" or row["step_end"] != h["step_end"]:
                        fixed += 1
                    db.execute("UPDATE shards SET status = 'trained', step_end = ?, val_loss = ?, train_loss = ?, "
                               "val_set_tokens = ?, tokens_processed = ?, seconds = ?, trained_at = ?, error = NULL "
                               "WHERE id = ?", (h["step_end"], h["val_loss"], h["train_loss"], h["val_set_tokens"],
                                                h["tokens_processed"], h["seconds"], h["trained_at"], sid))
                elif row["status"] != "quarantined":
                    if row["status"] == "trained":
                        fixed += 1
                    db.execute("UPDATE shards SET status = 'pending', step_end = NULL, val_loss = NULL, "
                               "train_loss = NULL, val_set_tokens = NULL, tokens_processed = NULL, seconds = NULL, "
                               "trained_at = NULL WHERE id = ?", (sid,))
            keys = [row[0] for row in db.execute("SELECT hash FROM items WHERE stage = 'train' "
                                                 "AND status != 'quarantined'")]
            done = set(self.store.items_done_training(keys))
            for key in keys:
                db.execute("UPDATE items SET status = ? WHERE hash = ?", ("done" if key in done else "pending", key))
        if fixed:
            self.on_event("warn", "checkpoint", f"pipeline.db corrected from the checkpoint: {fixed} shard(s) "
                                                f"{'marked trained' if len(state.trained) else 'set to retrain'}")

    # ------------------------------------------------------------------ training
    def next_shard(self) -> Optional[sqlite3.Row]:
        """The oldest shard not yet trained whose retry time has come."""
        return self.store.one("SELECT * FROM shards WHERE status IN ('pending', 'training') AND next_try <= ? "
                              "ORDER BY seq LIMIT 1", (time.time(),))

    def stop(self) -> None:
        """From any thread: stop at the next step boundary."""
        with self._lock:
            self._stopping = True
            if self.trainer is not None:
                self.trainer.stop()

    def train_shard(self, row: sqlite3.Row) -> bool:
        """Train one shard (continuing where the checkpoint left it). True when finished,
        False when stopped (a checkpoint with the partial progress is saved then)."""
        assert self.state is not None and self.trainer is not None and self.run_config is not None
        sid, steps = row["id"], int(row["steps"])
        state, status, cfg = self.state, self.status, self.config.train
        T, B = self.run_config.model.context, cfg.batch_size
        shard = read_shard(self.paths.shards, "train", sid, tokenizer_sha256=state.tokenizer_sha256)
        done = state.current["done"] if state.current and state.current["shard"] == sid else 0
        with self.store.tx() as db:
            db.execute("UPDATE shards SET status = 'training' WHERE id = ?", (sid,))
            db.execute("UPDATE items SET status = 'running', updated = ? WHERE stage = 'train' AND hash IN "
                       "(SELECT item FROM shard_items WHERE shard = ?) AND status != 'quarantined'", (time.time(), sid))
        status.shard, status.done, status.steps = sid, done, steps
        started, first_step, losses = time.perf_counter(), status.step, []
        while done < steps:
            n = min(STEPS_PER_CALL, steps - done)
            if cfg.checkpoint_every_steps:
                n = min(n, cfg.checkpoint_every_steps - status.step % cfg.checkpoint_every_steps)
            if len(shard.tokens) > T:
                # B - replay rows from the new shard, the rest replayed from earlier shards
                replay = round(B * cfg.replay_fraction) if state.trained else 0
                steps_batch = []
                for i in range(n):
                    own = sample_windows(shard.tokens, sid, cfg.seed, done + i, B, T)
                    old = self._replay(sid, done + i, replay, T)
                    steps_batch.append(own if old is None else np.concatenate([own[: B - len(old)], old]))
                batch = np.stack(steps_batch)
                mask = None  # no mask: the loss is on every token
            else:  # a shard shorter than one window: the whole shard, padded and masked
                window, row_mask = padded_window(shard.tokens, T, self.tokenizer.pad_id)
                batch = np.broadcast_to(window, (n, B, T + 1))
                mask = np.broadcast_to(row_mask, (n, B, T))
            ran = self.trainer.run(batch, mask)
            done += ran
            status.step += ran
            status.done = done
            status.tokens_processed += ran * B * T
            state.tokens_processed += ran * B * T
            state.current = {"shard": sid, "done": done}
            records = self.trainer.history(since_step=status.step - ran)
            losses.extend(r.loss for r in records)
            snap = self.trainer.snapshot()
            status.loss, status.tokens_per_s = snap.loss, snap.tokens_per_s
            if time.monotonic() - self._live_written > 0.5:  # for `odin-pipeline status`; not every call
                self._live_written = time.monotonic()
                self.store.set_meta("train_live", {"shard": sid, "done": done, "steps": steps, "step": status.step,
                                                   "loss": snap.loss, "tokens_per_s": snap.tokens_per_s,
                                                   "time": time.time()})
            if ran < n or self._stopping:
                if status.step != self._saved_step:
                    self.save()
                return False
            if cfg.checkpoint_every_steps and status.step % cfg.checkpoint_every_steps == 0 and done < steps:
                self.save()
        val_loss, val_tokens = self.validation_loss([*state.trained, sid])
        seconds = time.perf_counter() - started
        train_loss = float(np.mean(losses)) if losses else None
        entry = {"shard": sid, "steps": steps, "step_end": status.step, "val_loss": val_loss,
                 "train_loss": train_loss, "val_set_tokens": val_tokens,
                 "tokens_processed": (status.step - first_step) * B * T, "seconds": round(seconds, 3),
                 "trained_at": time.time()}
        state.trained.append(sid)
        state.history.append(entry)
        state.current = None
        status.val_loss = val_loss
        self._shards_since_save += 1
        if self._shards_since_save >= cfg.checkpoint_every_shards:
            self.save()
        with self.store.tx() as db:
            db.execute("UPDATE shards SET status = 'trained', step_end = ?, val_loss = ?, train_loss = ?, "
                       "val_set_tokens = ?, tokens_processed = ?, seconds = ?, trained_at = ?, error = NULL "
                       "WHERE id = ?", (entry["step_end"], val_loss, train_loss, val_tokens,
                                        entry["tokens_processed"], entry["seconds"], entry["trained_at"], sid))
            keys = [r["item"] for r in self.store.shard_item_rows(sid)]
            for key in self.store.items_done_training(keys):
                db.execute("UPDATE items SET status = 'done', updated = ?, note = NULL WHERE hash = ? "
                           "AND status != 'quarantined'", (time.time(), key))
            for key in keys:  # items that continue in a shard still to come
                db.execute("UPDATE items SET status = 'pending' WHERE hash = ? AND status = 'running'", (key,))
        status.shard = None
        return True

    def validation_loss(self, shard_ids: list[str]) -> tuple[Optional[float], int]:
        """Mean next-token loss on the held-out tails of ``shard_ids``: all of them, or, past
        ``val_max_tokens``, windows spread evenly over all of them (so the score covers
        everything trained so far, old shards as much as new ones). Returns (loss, tokens)."""
        assert self.run_config is not None
        T, cap = self.run_config.model.context, self.config.train.val_max_tokens
        parts = [self._tokens("val", sid) for sid in shard_ids]
        held_out = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
        windows = eval_windows(held_out, T)
        if cap and len(windows) * T > cap:
            keep = max(1, cap // T)
            windows = windows[np.linspace(0, len(windows) - 1, keep).round().astype(np.int64)]
        if not len(windows):
            return None, 0
        total, count, B = 0.0, 0, self.config.train.batch_size
        for start in range(0, len(windows), B):
            chunk = windows[start:start + B]
            loss = self.model.forward(chunk[:, :-1], chunk[:, 1:])
            total += loss * chunk[:, 1:].size
            count += chunk[:, 1:].size
        return total / count, int(windows.shape[0] * (windows.shape[1] - 1))

    def _tokens(self, split: str, sid: str) -> np.ndarray:
        """A shard's tokens, cached (val parts are small; train shards are memory-mapped
        by np.fromfile's page cache anyway and re-read cheaply)."""
        key = (split, sid)
        tokens = self._cache.get(key)
        if tokens is None:
            try:
                tokens = read_shard(self.paths.shards, split, sid).tokens
            except ShardError as error:
                self.on_event("warn", sid, f"{split} part unreadable, left out: {error}")
                tokens = np.zeros(0, np.uint16)
            if len(self._cache) > 256:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = tokens
        return tokens

    def _replay(self, sid: str, step: int, rows: int, T: int) -> Optional[np.ndarray]:
        """``rows`` windows from shards trained before ``sid`` for step ``step`` (deterministic
        from seed, shard and step, like the shard's own windows); None when there are none."""
        assert self.state is not None
        earlier = [old for old in self.state.trained if len(self._tokens("train", old)) > T]
        if not rows or not earlier:
            return None
        rng = np.random.default_rng([self.config.train.seed, shard_seed(sid), step, 1])
        out = np.empty((rows, T + 1), np.int32)
        for row in range(rows):
            tokens = self._tokens("train", earlier[int(rng.integers(len(earlier)))])
            start = int(rng.integers(0, len(tokens) - T))
            out[row] = tokens[start:start + T + 1]
        return out

    def save(self) -> None:
        """Checkpoint now (atomic directory; the trainer state says which shards it holds)."""
        assert self.state is not None
        step = self.status.step
        save_model_checkpoint(self.paths.checkpoint, self.model, self.tokenizer, self._run_config(step),
                              step=step, trainer_state={"pipeline": self.state.to_json()})
        self._saved_step = step
        self.status.checkpoint_step = step
        self._shards_since_save = 0
        self.on_event("info", "checkpoint", f"checkpoint at step {step} ({len(self.state.trained)} shards"
                                            + (f", shard {self.state.current['shard']} at step "
                                               f"{self.state.current['done']}" if self.state.current else "") + ")")

    def finish(self) -> None:
        """On shutdown: save if anything was trained since the last checkpoint."""
        if self.state is not None and self.status.step != self._saved_step:
            self.save()

    def failed(self, row: sqlite3.Row, error: Exception, max_attempts: int, backoff: float) -> bool:
        """A shard's training raised (NaN/Inf, out of memory, unreadable shard). The model
        goes back to the last checkpoint; after ``max_attempts`` the shard is quarantined.
        Returns True when it was quarantined."""
        attempts = int(row["attempts"]) + 1
        quarantine = attempts >= max_attempts or isinstance(error, ShardError)
        with self.store.tx() as db:
            db.execute("UPDATE shards SET status = ?, attempts = ?, error = ?, next_try = ? WHERE id = ?",
                       ("quarantined" if quarantine else "pending", attempts, str(error),
                        time.time() + backoff * 2 ** (attempts - 1), row["id"]))
        if isinstance(error, OdinError) and self.tokenizer is not None:
            self.start(self.tokenizer, self.state.tokenizer_sha256 if self.state else "")
        return quarantine
