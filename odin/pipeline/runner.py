"""`odin-pipeline run`: the stages as threads around one pipeline.db.

One thread per stage, each with its own SQLite connection, so a slow download or a
training shard never holds up the others:

=========== ==================================================================
intake      ready inbox files -> raw/<hash><suffix> (crawl, local); URL lists expanded
fetch       pages from the web (crawl, remote), several hosts at once, one request per host
preprocess  raw -> clean/<hash>.txt, duplicates recognised
tokenize    trains/loads the tokenizer, packs clean texts into shards
train       trains the model on each new shard, checkpoints
=========== ==================================================================

The main thread starts them, draws the status line, and stops them on SIGINT/SIGTERM
(the trainer stops at the next step boundary and checkpoints). With ``once`` it stops by
itself when everything that can be done is done. A file lock keeps a second pipeline off
the same folder. A stage that raises an unexpected exception fails the item (retried,
then quarantined, traceback in pipeline.log); a broken folder state stops the pipeline.
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from odin.native import OdinError
from odin.runlock import FolderInUseError, FolderLock, lock_folder
from odin.pipeline.config import PipelineConfig, PipelinePaths
from odin.pipeline.errors import StageError
from odin.pipeline.fetch_stage import FetchStage
from odin.pipeline.inbox_fs import write_with_mode
from odin.pipeline.intake import Intake
from odin.pipeline.preprocess import Deduper, clean_document
from odin.pipeline.quarantine import fail_item, quarantine_item, reconcile_quarantine
from odin.pipeline.shards import ShardError
from odin.pipeline.status import Console, status_line
from odin.pipeline.store import Store
from odin.pipeline.tokenize_stage import PipelineStateError, TokenizeStage
from odin.pipeline.trainer_stage import TrainerStage
from odin.pipeline.watcher import InboxWatcher

WORKERS = ("intake", "fetch", "preprocess", "tokenize", "train")


class PipelineBusy(RuntimeError):
    """Another odin-pipeline holds the folder."""


class _HeldLocks:
    """pipeline.lock and the folder lock, released together by close()."""

    def __init__(self, handle: Any, folder_lock: FolderLock) -> None:
        self.handle, self.folder_lock = handle, folder_lock

    def close(self) -> None:
        self.handle.close()
        self.folder_lock.release()


class Runner:
    def __init__(self, folder: str | Path, config: PipelineConfig, *, once: bool = False,
                 stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.paths = PipelinePaths.of(folder, config.folders)
        self.config, self.once = config, once
        self.console = Console(stream, self.paths.log, quiet=quiet)
        self.stop_event = threading.Event()
        self.busy = dict.fromkeys(WORKERS, False)
        self.current: dict[str, str] = {}
        self.fatal: Optional[BaseException] = None
        self.stop_reason = ""
        self._lock_handle: Any = None
        self._threads: list[threading.Thread] = []
        self._idle_flushed = False

    # ------------------------------------------------------------------ helpers
    def notifier(self, store: Store) -> Callable[..., None]:
        def notify(level: str, stage: str, name: Optional[str], message: str, *, item: Optional[str] = None,
                   code: Optional[str] = None) -> None:
            self.console.notify(level, stage, name, message)
            try:
                store.event(level, message, stage=stage, item=item, name=name, code=code)
            except Exception as error:  # the message is on the console; the database may be busy
                self.console.log_only(f"could not record event: {error}")
        return notify

    def _internal(self, where: str, error: BaseException) -> StageError:
        self.console.log_only(f"internal error in {where}:\n" + "".join(traceback.format_exception(error)))
        return StageError("internal", f"internal error in {where}: {type(error).__name__}: {error} "
                                      f"(traceback in pipeline.log)")

    def _acquire_lock(self) -> None:
        # the folder itself is locked (odin.runlock), so deleting pipeline.lock lets no second
        # pipeline (nor an `odin train --out` here) in; pipeline.lock is still locked and holds
        # the pid, for `odin-pipeline status`
        deadline = time.monotonic() + 2.0  # `status` holds a shared lock for an instant
        while True:
            try:
                folder_lock = lock_folder(self.paths.root, "odin-pipeline")
                break
            except FolderInUseError as error:
                if time.monotonic() > deadline:
                    who = error.who if error.who.startswith("odin") else "ODIN process"
                    pid = error.pid if error.pid is not None else "?"
                    raise PipelineBusy(f"another {who} (pid {pid}) is running on {self.paths.root}") from None
                time.sleep(0.1)
        handle = open(self.paths.lock, "a+")
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline + 2.0:  # held by a pipeline from before the folder lock
                    handle.seek(0)
                    owner = handle.read().strip() or "?"
                    handle.close()
                    folder_lock.release()
                    raise PipelineBusy(f"another odin-pipeline (pid {owner}) is running on {self.paths.root}") from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = _HeldLocks(handle, folder_lock)

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        """Run until stopped (or, with ``once``, until idle). Returns the exit status."""
        self.paths.make()
        try:
            self._acquire_lock()
        except PipelineBusy as error:
            self.console.notify("error", "pipeline", None, f"not started: {error}")
            return 1
        store = Store(self.paths.db)
        notify = self.notifier(store)
        try:
            resumed = store.reset_running()
            store.prune_events()
            fixed = reconcile_quarantine(store, self.paths)
            # start-up runs here, in the main thread; each worker then rewires the callbacks
            # to its own connection's notifier
            self.tokenize = TokenizeStage(self.paths, self.config, Store(self.paths.db),
                                          lambda level, name, msg: notify(level, "tokenize", name, msg),
                                          lambda row, err: None)
            removed = self.tokenize.remove_unrecorded_shards()
            self.trainer = TrainerStage(self.paths, self.config, Store(self.paths.db),
                                        lambda level, name, msg: notify(level, "train", name, msg))
            tok = self.tokenize.load_existing()
            if tok is not None:
                self.trainer.start(tok, self.tokenize.tok_sha or "")
            store.set_meta("pid", os.getpid())
            self._banner(notify, resumed, fixed, removed)
            self.watcher = InboxWatcher(self.paths.inbox, settle_seconds=self.config.watch.settle_seconds,
                                        rescan_seconds=self.config.watch.rescan_seconds,
                                        ignore=self.config.watch.ignore, mode=self.config.watch.mode)
            self.watcher.start()
            self._install_signals()
            for name in WORKERS:
                thread = threading.Thread(target=self._worker, args=(name,), name=f"odin-pipeline-{name}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            self._main_loop(store)
        except (PipelineStateError, PipelineBusy) as error:
            self.fatal = error
        finally:
            self._shutdown(store)
        if self.fatal is not None:
            self.console.notify("error", "pipeline", None, f"stopped: {self.fatal}")
            return 1
        return 0

    def _banner(self, notify: Callable[..., None], resumed: int, fixed: int, removed: int) -> None:
        model = self.config.model.get("preset")
        mode = "until idle (--once)" if self.once else "until stopped (Ctrl-C)"
        notify("info", "pipeline", None, f"watching {self.paths.inbox} ({self.config.watch.mode}) {mode}; "
                                         f"model preset {model!r}; pid {os.getpid()}")
        if resumed or fixed or removed:
            notify("info", "pipeline", None, f"resumed: {resumed} interrupted item(s) to redo, "
                                             f"{fixed} quarantine record(s) completed, {removed} unrecorded "
                                             f"shard file(s) removed")

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_event.is_set():  # second signal: the user means it
                os._exit(130)
            self.request_stop(signal.Signals(signum).name)
        self._old_handlers = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(self, reason: str = "") -> None:
        self.stop_reason = reason
        self.stop_event.set()
        if getattr(self, "trainer", None) is not None:
            self.trainer.stop()

    def _main_loop(self, store: Store) -> None:
        quiet_checks = 0
        while not self.stop_event.is_set():
            self._draw(store)
            if self.once:
                quiet_checks = quiet_checks + 1 if self._nothing_left(store) else 0
                if quiet_checks >= 3:
                    break
            self.stop_event.wait(0.25)

    def _draw(self, store: Store, force: bool = False) -> None:
        try:
            counts = store.counts()
            shards = store.query("SELECT COUNT(*) FROM shards WHERE status = 'trained' UNION ALL "
                                 "SELECT COUNT(*) FROM shards")
        except Exception:  # busy for longer than the timeout: skip one frame
            return
        status = self.trainer.status
        current = ", ".join(f"{stage} {name}" for stage, name in self.current.copy().items() if name)
        if status.shard:
            current = (current + ", " if current else "") + f"training {status.shard} {status.done}/{status.steps}"
        waiting = self.tokenize.waiting if counts.get("tokenize") else None
        line = status_line(counts, self.watcher.pending(), current, status, waiting,
                           (shards[0][0], shards[1][0]))
        self.console.status(line, force)

    def _nothing_left(self, store: Store) -> bool:
        """--once: every stage is idle and nothing it could do remains."""
        if self.watcher.pending() or any(self.busy.values()) or self.fatal:
            return False
        upstream = store.scalar("SELECT COUNT(*) FROM items WHERE stage IN ('crawl', 'preprocess') AND "
                                "status IN ('pending', 'running', 'failed')", default=0)
        if upstream:
            return False
        tokenize = store.one("SELECT SUM(status = 'failed'), SUM(status IN ('pending', 'running')) FROM items "
                             "WHERE stage = 'tokenize'")
        if tokenize[0]:
            return False
        if tokenize[1] and self.tokenize.tok is not None and not self._idle_flushed:
            return False
        shards = store.scalar("SELECT COUNT(*) FROM shards WHERE status IN ('pending', 'training')", default=0)
        return not (shards and self.tokenize.tok is not None)

    def _shutdown(self, store: Store) -> None:
        self.stop_event.set()
        if getattr(self, "trainer", None) is not None:
            self.trainer.stop()
        if getattr(self, "watcher", None) is not None:
            self.watcher.stop()
            self.watcher.prune_empty_folders(min_age=self.config.watch.settle_seconds)
        for thread in self._threads:
            # the fetch thread may sit in a network timeout: it is a daemon, not waited for long
            thread.join(timeout=2.0 if thread.name.endswith("fetch") else None)
        if getattr(self, "watcher", None) is not None:
            self._draw(store, force=True)
        self.console.end_status()
        for sig, old in getattr(self, "_old_handlers", {}).items():
            signal.signal(sig, old)
        try:
            store.set_meta("pid", None)
            why = f" ({self.stop_reason})" if self.stop_reason else ""
            if self.fatal is None:
                self.notifier(store)("info", "pipeline", None, f"stopped{why}")
        finally:
            store.close()
            if self._lock_handle is not None:
                self._lock_handle.close()

    # ------------------------------------------------------------------ workers
    def _worker(self, name: str) -> None:
        store = Store(self.paths.db)
        notify = self.notifier(store)
        try:
            getattr(self, f"_{name}_loop")(store, notify)
        except BaseException as error:  # a bug or a broken folder: stop everything, say why
            if not isinstance(error, PipelineStateError):
                self.console.log_only(f"{name} thread failed:\n" + "".join(traceback.format_exception(error)))
            self.fatal = error if isinstance(error, PipelineStateError) else \
                RuntimeError(f"the {name} stage failed: {type(error).__name__}: {error} (see pipeline.log)")
            self.request_stop("error")
        finally:
            self.busy[name] = False
            store.close()

    # intake: inbox files -> raw/ --------------------------------------------------
    def _intake_loop(self, store: Store, notify: Callable[..., None]) -> None:
        intake = Intake(self.paths, self.config, store, self.watcher, notify, self.current)
        while not self.stop_event.is_set():
            self.watcher.maybe_rescan()
            ready = self.watcher.ready()
            retries = store.due("crawl", kind="file")
            if not ready and not retries:
                self.stop_event.wait(0.1)
                continue
            self.busy["intake"] = True
            try:
                for path in ready:
                    if self.stop_event.is_set():
                        break
                    intake.take(path)
                for row in retries:
                    intake.retry(row)
            finally:
                self.current.pop("crawl", None)
                self.busy["intake"] = False

    # fetch: pages -> raw/ -------------------------------------------------------
    def _fetch_loop(self, store: Store, notify: Callable[..., None]) -> None:
        FetchStage(self.paths, self.config, store, notify, self.current, self.busy, self.stop_event,
                   self._internal).run()

    # preprocess: raw -> clean/ ------------------------------------------------------
    def _preprocess_loop(self, store: Store, notify: Callable[..., None]) -> None:
        deduper = Deduper(store, self.config.preprocess)
        while not self.stop_event.is_set():
            row = store.claim("preprocess")
            if row is None:
                self.stop_event.wait(0.1)
                continue
            self.busy["preprocess"], self.current["preprocess"] = True, row["name"]
            try:
                self._preprocess(store, notify, deduper, row)
            except StageError as error:
                fail_item(store, self.paths, self.config.retry, row, "preprocess", error, notify)
            except Exception as error:
                fail_item(store, self.paths, self.config.retry, row, "preprocess",
                          self._internal("preprocess", error), notify)
            finally:
                self.current.pop("preprocess", None)
                self.busy["preprocess"] = False

    def _preprocess(self, store: Store, notify: Callable[..., None], deduper: Deduper, row: Any) -> None:
        key, ext = row["hash"], row["ext"] or ""
        raw = self.paths.raw / f"{key}{ext}"
        try:
            data = raw.read_bytes()
            raw_mode = raw.stat().st_mode
        except OSError as error:
            raise StageError("io-error", f"cannot read the raw copy {raw.name}: {error}") from None
        cleaned = clean_document(data, ext, self.config.preprocess, row["charset"])
        signature = deduper.signature(cleaned.text)
        duplicate = deduper.find(key, cleaned, signature)
        if duplicate is not None:
            other = store.item(duplicate.of)
            note = f"{duplicate.kind} of {other['name'] if other else duplicate.of[:12]}"
            if duplicate.kind == "near-duplicate":
                note += f" (estimated similarity {duplicate.similarity:.2f})"
            store.update_item(key, status="done", reason=duplicate.kind, note=note, chars=len(cleaned.text))
            notify("info", "preprocess", row["name"], f"skipped: {note}", item=key, code=duplicate.kind)
            return
        # readable by no more people than the original (see Intake.take)
        write_with_mode(self.paths.clean / f"{key}.txt", cleaned.text.encode("utf-8"), raw_mode)
        with store.tx():
            deduper.record(key, cleaned, signature)
            store.advance(key, "tokenize", chars=len(cleaned.text))
        notify("info", "preprocess", row["name"], f"{len(cleaned.text):,} characters of clean text"
               + (" (from HTML)" if cleaned.html else ""), item=key)

    # tokenize: clean/ -> shards/ -----------------------------------------------------
    def _tokenize_loop(self, store: Store, notify: Callable[..., None]) -> None:
        stage = self.tokenize
        stage.on_event = lambda level, name, msg: notify(level, "tokenize", name, msg)
        stage.on_item_error = lambda row, error: fail_item(store, self.paths, self.config.retry, row, "tokenize",
                                                           error, notify)
        last_busy = time.monotonic()
        while not self.stop_event.is_set():
            # pages still being fetched do not hold the part-filled shard (see Store.busy_upstream)
            upstream = (self.watcher.pending() or self.busy["intake"] or self.busy["preprocess"]
                        or store.busy_upstream())
            if upstream:
                last_busy = time.monotonic()
                self._idle_flushed = False
            idle = time.monotonic() - last_busy >= self.config.watch.idle_seconds
            self.busy["tokenize"] = True
            try:
                if stage.tok is not None or stage.try_train():
                    stage.pack(flush=idle)
                    self._idle_flushed = idle
            except StageError as error:
                notify("error", "tokenize", None, str(error), code=error.code)
            finally:
                self.busy["tokenize"] = False
            self.stop_event.wait(0.2)

    # train: shards -> checkpoints/ -------------------------------------------------------
    def _train_loop(self, store: Store, notify: Callable[..., None]) -> None:
        trainer = self.trainer
        trainer.on_event = lambda level, name, msg: notify(level, "train", name, msg)
        try:
            while not self.stop_event.is_set():
                if trainer.state is None:
                    if self.tokenize.tok is None:
                        self.stop_event.wait(0.3)
                        continue
                    trainer.start(self.tokenize.tok, self.tokenize.tok_sha or "")
                row = trainer.next_shard()
                if row is None:
                    self.stop_event.wait(0.2)
                    continue
                self.busy["train"] = True
                try:
                    finished = trainer.train_shard(row)
                except (OdinError, ShardError, OSError) as error:
                    self._training_failed(store, notify, row, error)
                    continue
                finally:
                    self.busy["train"] = False
                if not finished:
                    break
                done = store.shard(row["id"])
                val = f", val loss {done['val_loss']:.4f}" if done["val_loss"] is not None else ""
                rate = done["tokens_processed"] / max(done["seconds"] or 0.0, 1e-9)
                notify("info", "train", f"shard {row['id']}",
                       f"{done['steps']} steps -> step {done['step_end']}, train loss {done['train_loss']:.4f}{val} "
                       f"({done['seconds']:.1f} s, {rate / 1e3:.1f}k tokens/s)")
        finally:
            if trainer.state is not None and not isinstance(self.fatal, PipelineStateError):
                trainer.finish()
            trainer.status.shard = None

    def _training_failed(self, store: Store, notify: Callable[..., None], row: Any, error: Exception) -> None:
        retry = self.config.retry
        quarantined = self.trainer.failed(row, error, retry.max_attempts, retry.backoff_seconds)
        notify("error", "train", row["id"], f"training failed: {error}"
               + (" -> shard quarantined" if quarantined else "; model reloaded from the last checkpoint, retrying"))
        if quarantined:
            for span in store.shard_item_rows(row["id"]):
                item = store.item(span["item"])
                if item is not None and item["status"] != "quarantined":
                    quarantine_item(store, self.paths, item, "train",
                                    StageError("training", f"its shard {row['id']} could not be trained: {error}"),
                                    int(row["attempts"]) + 1, notify)
