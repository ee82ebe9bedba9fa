"""The kissing-spheres trainer over the ranks of an MPI run, bit-identical to one process.

Each global batch's slots are cut into contiguous ranges, one per rank (rank 0 the first);
every rank reads the whole batch (the same data, deterministically) and runs the forward and
backward of its own slots on its own threads. The gradient is the one process's left fold
g0 + g1 + ... + g11, computed along a chain: rank 0 folds its slots and sends the partial sum
to rank 1, which adds its slots, in order, to each piece as it arrives and passes it on; the
last rank's sum is broadcast to all. Every rank then applies the same norm, clip and AdamW to
its own copy, so all hold the same weights, equal bit for bit to a one-process run's.
Per step a rank sends at most 4 x parameters bytes on the chain and the broadcast moves
(ranks - 1) copies of the gradient; docs/performance.md has the cost model.
"""
from __future__ import annotations

import zlib
from typing import Optional

import numpy as np

from odin import native
from odin.distributed.world import World
from odin.model import GPT
from odin.native import check, ffi, lib
from odin.rwkv import RWKV
from odin.spheres import Snapshot, SpheresTrainer

SEGMENT_FLOATS = 1 << 22  # 16 MiB pieces along the chain: the next rank adds while this one sends


def every_rank(error: Exception) -> Exception:
    """Mark an error that every rank raises at the same point (rank 0 alone reports it)."""
    error.every_rank = True  # type: ignore[attr-defined]
    return error


class DistributedSpheresTrainer(SpheresTrainer):
    """SpheresTrainer whose slots are spread over the ranks of `world`. Every rank calls the
    same methods in the same order (the training loop is the same on all of them)."""

    def __init__(self, model: GPT | RWKV, batch: int, seq_len: int, world: World,
                 threads: Optional[int] = None) -> None:
        super().__init__(model, batch, seq_len, threads)
        self.world = world
        n_work = min(batch, lib.ODIN_SPHERES_N)
        shape = (type(model).__name__, model.n_params, batch, seq_len)
        shapes = world.exchange(shape, "every rank's model and batch")
        for rank, other in enumerate(shapes):
            if other != shapes[0]:
                raise every_rank(ValueError(f"rank {rank} built a {other[0]} of {other[1]:,} parameters for batch {other[2]} x "
                                 f"T={other[3]}; rank 0 a {shapes[0][0]} of {shapes[0][1]:,} for batch "
                                 f"{shapes[0][2]} x T={shapes[0][3]}: every rank must train the same run"))
        if world.size > n_work:
            raise every_rank(ValueError(f"{world.size} ranks but a batch of {batch} fills only {n_work} slots: run "
                                        f"at most {n_work} ranks (mpirun -np {n_work}) or raise the batch size"))
        self.bounds = [r * n_work // world.size for r in range(world.size + 1)]
        self.lo, self.hi = self.bounds[world.rank], self.bounds[world.rank + 1]
        check(lib.odin_spheres_set_shard(self._h, self.lo, self.hi), "DistributedSpheresTrainer")
        self._segments = self._chain_segments()
        self._stop_wanted = False
        self._stopped = False
        # the weights and moments of rank 0 (fresh, resumed or --init-from) are everyone's
        for block in (model.params, model.adam_m, model.adam_v):
            world.broadcast_array(block, 0, "rank 0's weights")

    def _chain_segments(self) -> list[tuple[int, int, int, int]]:
        """(first chunk, end chunk, first float, end float) pieces of the gradient."""
        n = int(lib.odin_spheres_num_chunks(self._h))
        start, end = ffi.new("size_t *"), ffi.new("size_t *")
        segments, c0 = [], 0
        for c in range(n):
            check(lib.odin_spheres_chunk_span(self._h, c0, c + 1, start, end), "chunk span")
            if end[0] - start[0] >= SEGMENT_FLOATS or c == n - 1:
                segments.append((c0, c + 1, int(start[0]), int(end[0])))
                c0 = c + 1
        return segments

    def run(self, tokens: np.ndarray, loss_mask: Optional[np.ndarray] = None,
            ids: Optional[np.ndarray] = None) -> int:
        """As SpheresTrainer.run, every rank with the same arguments. A stop asked of any rank
        stops all of them after the same step."""
        steps = self._steps(tokens, loss_mask, ids)
        done = 0
        for i in range(steps.count):
            if self._stopped:
                break
            self._step(steps, i)
            done += 1
        return done

    def _step(self, steps, i: int) -> None:
        lib.odin_spheres_snapshot_get(self._h, self._snap)  # the step, without a Python snapshot
        world, step = self.world, self._snap.step + 1
        own = ffi.new("odin_spheres_slot_report *")
        failure = None
        try:
            check(lib.odin_spheres_shard_slots(self._h, *steps.at(i), own), "train step")
        except native.OdinError as exc:
            failure = (type(exc).__name__, str(exc))
        digest = 0
        for array in (steps.inputs_array, steps.targets_array, steps.mask_array, steps.ids_array):
            if array is not None:
                digest = zlib.crc32(np.ascontiguousarray(array[i]), digest)
        reports = world.exchange((failure, bytes(ffi.buffer(own)), digest, self._stop_wanted),
                                 f"the slot outcomes of step {step}")
        for rank, (failed, _, _, _) in enumerate(reports):
            if failed is not None:
                kind = getattr(native, failed[0], native.OdinError)
                raise every_rank(kind(f"rank {rank}: {failed[1]}"))
        for rank, (_, _, other, _) in enumerate(reports):
            if other != reports[0][2]:
                raise every_rank(ValueError(f"rank {rank} read other data than rank 0 for step {step}: every rank "
                                            f"must read the same dataset (the same --data folder contents)"))
        merged = ffi.new("odin_spheres_slot_report *")
        report = ffi.new("odin_spheres_slot_report *")
        for rank, (_, raw, _, _) in enumerate(reports):
            ffi.buffer(report)[:] = raw
            for s in range(self.bounds[rank], self.bounds[rank + 1]):
                merged.loss[s], merged.grad_norm[s], merged.seconds[s] = \
                    report.loss[s], report.grad_norm[s], report.seconds[s]
        self._fold_along_the_chain(step)
        check(lib.odin_spheres_shard_finish(self._h, merged), "train step")
        self._stopped = any(wanted for _, _, _, wanted in reports)

    def _fold_along_the_chain(self, step: int) -> None:
        world, grads = self.world, self.model.grads
        rank, last = world.rank, world.size - 1
        sends = []
        for k, (c0, c1, a, b) in enumerate(self._segments):
            if rank > 0:
                world.receive_array(grads[a:b], rank - 1, k, f"rank {rank - 1}'s partial gradient of step {step}")
                check(lib.odin_spheres_shard_fold(self._h, c0, c1), "train step")
            if rank < last:
                sends.append(world.send_array(grads[a:b], rank + 1, k))
        world.wait(sends, [rank + 1] if rank < last else [], f"rank {rank + 1} to take the partial gradient")
        world.broadcast_array(grads, last, f"the gradient of step {step} from rank {last}")

    # ---------------------------------------------------------------- control
    def stop(self) -> None:
        """Stop every rank after the step in progress (agreed at the next exchange)."""
        self._stop_wanted = True

    def pause(self) -> None:
        raise NotImplementedError("a run over several processes cannot pause (stop it and --resume instead)")

    def resume(self) -> None:
        raise NotImplementedError("a run over several processes cannot pause (stop it and --resume instead)")

    def snapshot(self) -> Snapshot:
        snap = super().snapshot()
        snap.stopped = self._stopped
        return snap
