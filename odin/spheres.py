"""Python handle on the kissing-spheres trainer (csrc/spheres.c).

`SpheresTrainer.run(...)` is one C call for K steps; it releases the GIL, so the control
methods (pause, resume, stop, set_threads, request_checkpoint) and `snapshot()` work from
any other Python thread while the C threads train.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from odin.model import GPT
from odin.native import ShapeError, check, ffi, lib
from odin.rwkv import RWKV
from odin.validate import loss_mask as validated_mask
from odin.validate import int_field, token_ids

N_SPHERES = int(lib.ODIN_SPHERES_N)
STATE_NAMES = ("idle", "forward", "backward", "waiting", "reducing")


def default_threads() -> int:
    """min(12, cores this process may use)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(N_SPHERES, cores))


@dataclass
class SphereStats:
    state: str
    rows: int
    microbatches: int
    tokens: int
    last_loss: float
    last_grad_norm: float
    busy_seconds: float


@dataclass
class Snapshot:
    step: int
    lr: float
    loss: float
    grad_norm: float
    tokens_per_s: float
    step_seconds: float
    tokens: int
    threads: int
    running: bool
    paused: bool
    stopped: bool
    root_state: str
    spheres: list[SphereStats] = field(default_factory=list)


@dataclass(frozen=True)
class StepProfile:
    """Where the profiled steps' time went (SpheresTrainer.set_profiling). Thread-seconds
    summed over the worker threads for the parts of the work; root wall-clock seconds for the
    phases and the steps (whatever a step spent outside its three phases is the root's own
    work: the global norm, the clip factor, statistics)."""

    steps: int
    threads: int
    fwd_gemm: float
    fwd_other: float
    bwd_gemm: float
    bwd_other: float
    slot_buffers: float  # a slot without counted tokens zeroing its buffer; an MPI shard's slot norms
    reduce: float  # adding the slot buffers into the gradient in slot order; chunk and sphere norms
    update: float  # clip + AdamW
    wall_slots: float
    wall_reduce: float
    wall_update: float
    wall_steps: float


@dataclass
class _Steps:
    """K steps' arrays [K, B, T] and C pointers to them."""
    count: int
    per_step: int  # B x T
    inputs_array: np.ndarray
    targets_array: np.ndarray
    mask_array: Optional[np.ndarray]
    ids_array: Optional[np.ndarray] = None

    def pointers(self) -> "_Steps":
        self.inputs = ffi.cast("int32_t *", ffi.from_buffer(self.inputs_array))
        self.targets = ffi.cast("int32_t *", ffi.from_buffer(self.targets_array))
        self.mask = ffi.NULL if self.mask_array is None else ffi.cast("uint8_t *", ffi.from_buffer(self.mask_array))
        self.ids = ffi.NULL if self.ids_array is None else ffi.cast("int32_t *", ffi.from_buffer(self.ids_array))
        return self

    def at(self, i: int) -> tuple:
        """Step i's (inputs, ids, targets, mask) pointers."""
        o = i * self.per_step
        return (self.inputs + o, ffi.NULL if self.ids == ffi.NULL else self.ids + o, self.targets + o,
                ffi.NULL if self.mask == ffi.NULL else self.mask + o)


@dataclass
class StepRecord:
    step: int
    loss: float
    grad_norm: float
    lr: float
    tokens_per_s: float
    sphere_loss: list[float]
    sphere_grad_norm: list[float]


class SpheresTrainer:
    def __init__(self, model: GPT | RWKV, batch: int, seq_len: int, threads: Optional[int] = None) -> None:
        batch, seq_len = int_field(batch, "batch", 1), int_field(seq_len, "seq_len", 1)
        if threads is not None:
            threads = int_field(threads, "threads", -2**31)  # a C int; the C side checks the range
        if seq_len > model.shape.context:
            raise ShapeError(f"seq_len {seq_len} exceeds the model's context {model.shape.context}")
        self.model = model
        self.batch = batch
        self.seq_len = seq_len
        model._training()  # the gradients and AdamW moments (a model that only answered has none yet)
        out = ffi.new("odin_spheres **")
        create = lib.odin_spheres_create_rwkv if isinstance(model, RWKV) else lib.odin_spheres_create
        check(create(out, model._h, batch, seq_len, default_threads() if threads is None else threads), "SpheresTrainer")
        self._h = ffi.gc(out[0], lib.odin_spheres_free)
        self._snap = ffi.new("odin_spheres_snapshot *")
        self._run_len = seq_len

    def configure(self, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int,
                  beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                  weight_decay: float = 0.0, grad_clip: float = 1.0) -> None:
        # C ints; the C side checks the ranges (beyond an int, cffi raised OverflowError)
        warmup_steps = int_field(warmup_steps, "warmup_steps", -2**31)
        total_steps = int_field(total_steps, "total_steps", -2**31)
        check(lib.odin_spheres_set_schedule(self._h, lr, min_lr, warmup_steps, total_steps), "configure")
        check(lib.odin_spheres_set_optimizer(self._h, beta1, beta2, eps, weight_decay, grad_clip), "configure")

    def set_step(self, step: int) -> None:
        check(lib.odin_spheres_set_step(self._h, int_field(step, "step", -2**63, 2**63 - 1)), "set_step")

    def run(self, tokens: np.ndarray, loss_mask: Optional[np.ndarray] = None,
            ids: Optional[np.ndarray] = None) -> int:
        """Train on `tokens[K, batch, T + 1]`, T <= seq_len (inputs and shifted targets in one array)
        and `loss_mask[K, batch, T]` (and Abacus `ids[K, batch, T]` of the
        inputs for Abacus models). Returns the number of steps done (< K after a stop or
        checkpoint request)."""
        steps = self._steps(tokens, loss_mask, ids)
        done = ffi.new("int *")
        check(lib.odin_spheres_run_ex(self._h, steps.inputs, steps.ids, steps.targets, steps.mask, steps.count, done),
              "train step")
        return int(done[0])

    def _steps(self, tokens: np.ndarray, loss_mask: Optional[np.ndarray], ids: Optional[np.ndarray]) -> "_Steps":
        """K steps' inputs, checked, as C pointers (kept alive by the returned object)."""
        tokens = token_ids(tokens, "tokens", None)  # integer, int32-sized; the vocabulary below
        if tokens.ndim == 2:
            tokens = tokens[None]
            loss_mask = None if loss_mask is None else np.asarray(loss_mask)[None]
        if tokens.ndim != 3:
            raise ShapeError(f"tokens must have shape (K, {self.batch}, T + 1), got {tokens.shape}")
        K, B, T1 = tokens.shape
        if B != self.batch or not 1 <= T1 - 1 <= self.seq_len:
            raise ShapeError(f"tokens must have shape (K, {self.batch}, T + 1) with T <= {self.seq_len}, "
                             f"got {tokens.shape}")
        if T1 - 1 != self._run_len:  # a shorter batch (length buckets) computes only its own length
            check(lib.odin_spheres_set_seq_len(self._h, T1 - 1), "train step")
            self._run_len = T1 - 1
        # every input must be in the vocabulary; the last token is only a target, which a
        # mask may leave uncounted (as the C side checks targets)
        counted = np.ones(tokens.shape, np.uint8)
        if loss_mask is not None:
            loss_mask = validated_mask(loss_mask, "loss_mask", (K, B, T1 - 1))
            counted[:, :, -1] = loss_mask[:, :, -1]
        token_ids(tokens, "tokens", self.model.shape.vocab_size, counted=counted)
        steps = _Steps(K, B * (T1 - 1), np.ascontiguousarray(tokens[:, :, :-1], dtype=np.int32),
                       np.ascontiguousarray(tokens[:, :, 1:], dtype=np.int32), loss_mask)
        if ids is not None:
            steps.ids_array = token_ids(ids, "ids", None).reshape(K, B, T1 - 1)
        return steps.pointers()

    # ---------------------------------------------------------------- control (any thread)
    def set_threads(self, n: int) -> None:
        check(lib.odin_spheres_set_threads(self._h, int_field(n, "threads", -2**31)), "set_threads")

    def pause(self) -> None:
        lib.odin_spheres_pause(self._h)

    def resume(self) -> None:
        lib.odin_spheres_resume(self._h)

    def stop(self) -> None:
        lib.odin_spheres_stop(self._h)

    def request_checkpoint(self) -> None:
        lib.odin_spheres_request_checkpoint(self._h)

    def take_checkpoint_request(self) -> bool:
        return bool(lib.odin_spheres_take_checkpoint_request(self._h))

    # ---------------------------------------------------------------- memory (between runs)
    def set_slot_buffers(self, n: int) -> None:
        """Keep n slot gradient buffers (1..12, capped at the slots that have rows; 0 =
        automatic): memory n x the parameters. The weights are the same for any n."""
        check(lib.odin_spheres_set_slot_buffers(self._h, int_field(n, "slot_buffers", -2**31)), "set_slot_buffers")

    @property
    def slot_buffers(self) -> int:
        return int(lib.odin_spheres_slot_buffers(self._h))

    # ---------------------------------------------------------------- profiling (between runs)
    def set_profiling(self, enabled: bool) -> None:
        """On: count where the next runs' steps spend their time, from zero. Off: stop
        counting (profile() keeps the figures)."""
        check(lib.odin_spheres_set_profiling(self._h, 1 if enabled else 0), "set_profiling")

    def profile(self) -> StepProfile:
        p = ffi.new("odin_spheres_profile *")
        check(lib.odin_spheres_profile_get(self._h, p), "profile")
        threads = self.snapshot().threads
        return StepProfile(p.steps, threads, p.fwd_gemm, p.fwd_other, p.bwd_gemm, p.bwd_other, p.slot_buffers,
                           p.reduce, p.update, p.wall_slots, p.wall_reduce, p.wall_update, p.wall_steps)

    # ---------------------------------------------------------------- statistics (any thread)
    def snapshot(self) -> Snapshot:
        s = ffi.new("odin_spheres_snapshot *")  # per call: safe to call from several threads
        lib.odin_spheres_snapshot_get(self._h, s)
        spheres = [SphereStats(STATE_NAMES[x.state], x.rows, x.microbatches, x.tokens, x.last_loss,
                               x.last_grad_norm, x.busy_seconds) for x in s.spheres]
        return Snapshot(s.step, s.lr, s.loss, s.grad_norm, s.tokens_per_s, s.step_seconds, s.tokens, s.threads,
                        bool(s.running), bool(s.paused), bool(s.stopped), STATE_NAMES[s.root_state], spheres)

    def history(self, since_step: int = 0, limit: int = 100_000) -> list[StepRecord]:
        cap = min(limit, int(lib.odin_spheres_history_capacity()))
        buf = ffi.new("odin_spheres_record[]", cap)
        n = lib.odin_spheres_history(self._h, since_step, buf, cap)
        return [StepRecord(r.step, r.loss, r.grad_norm, r.lr, r.tokens_per_s, list(r.sphere_loss),
                           list(r.sphere_grad_norm)) for r in buf[0:n]]
