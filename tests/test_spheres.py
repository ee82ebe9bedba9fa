"""The kissing-spheres trainer: determinism across thread counts, live statistics from
another thread, control (pause / resume / stop / set_threads / checkpoint request), and
clean failure on NaN."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import odin.native as native
from odin.model import GPT, GPTShape
from odin.spheres import N_SPHERES, SpheresTrainer

SHAPE = GPTShape(vocab_size=16, context=16, n_layer=2, n_head=2, d_model=32)
B, T = 30, 12  # 30 rows over 12 slots: slots of 3 and 2 rows, exercising uneven cuts


def _data(steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SHAPE.vocab_size, (steps, B, T + 1)).astype(np.int32)
    mask = (rng.random((steps, B, T)) > 0.25).astype(np.uint8)
    return tokens, mask


def _trainer(threads: int, seed: int = 0) -> tuple[GPT, SpheresTrainer]:
    model = GPT(SHAPE)
    model.init_weights(seed)
    tr = SpheresTrainer(model, B, T, threads=threads)
    tr.configure(lr=3e-3, min_lr=3e-4, warmup_steps=2, total_steps=8, weight_decay=0.1, grad_clip=1.0)
    return model, tr


def test_weights_bit_identical_for_any_thread_count_and_midway_change():
    tokens, mask = _data(8)
    results = {}
    for threads in (1, 2, 3, 4, 12):
        model, tr = _trainer(threads)
        assert tr.run(tokens, mask) == 8
        results[threads] = model.params.copy()
    for threads, params in results.items():
        assert np.array_equal(params, results[1]), f"{threads} threads differ from 1"
    model, tr = _trainer(1)
    tr.run(tokens[:3], mask[:3])
    tr.set_threads(3)
    tr.run(tokens[3:6], mask[3:6])
    tr.set_threads(2)
    tr.run(tokens[6:], mask[6:])
    assert np.array_equal(model.params, results[1])
    assert not np.array_equal(results[1], _trainer(1)[0].params)  # training did change the weights


def test_spheres_equal_one_big_batch_on_the_model():
    """The 12 slot gradients summed by the root equal the gradient of the whole batch."""
    tokens, mask = _data(1, seed=3)
    model, tr = _trainer(2)
    ref = GPT(SHAPE)
    ref.params[...] = model.params
    tr.configure(lr=1e-3, min_lr=1e-3, warmup_steps=0, total_steps=0, grad_clip=0.0)
    tr.run(tokens, mask)
    ref.zero_grad()
    loss = ref.forward(tokens[0, :, :-1], tokens[0, :, 1:], mask[0])
    ref.backward()
    np.testing.assert_allclose(model.grads, ref.grads, rtol=1e-4, atol=1e-7)
    assert tr.snapshot().loss == pytest.approx(loss, rel=1e-5)


def test_statistics_are_readable_live_from_another_thread():
    tokens, mask = _data(60, seed=1)
    model, tr = _trainer(2)
    seen_steps, seen_states = [], set()
    done = threading.Event()

    def reader():
        while not done.is_set():
            s = tr.snapshot()
            seen_steps.append(s.step)
            seen_states.update(x.state for x in s.spheres)
            time.sleep(0.0005)

    th = threading.Thread(target=reader)
    th.start()
    tr.run(tokens, mask)
    done.set()
    th.join()
    snap = tr.snapshot()
    assert snap.step == 60
    assert len(set(seen_steps)) > 3, "the reader should see the step advance while C trains"
    assert seen_states & {"forward", "backward", "waiting", "reducing"}
    assert [s.rows for s in snap.spheres] == [3] * 6 + [2] * 6
    assert all(s.microbatches == 60 for s in snap.spheres)
    assert sum(s.tokens for s in snap.spheres) == 60 * B * T
    assert all(s.busy_seconds > 0 and np.isfinite(s.last_loss) and s.last_grad_norm > 0 for s in snap.spheres)
    hist = tr.history()
    assert [h.step for h in hist] == list(range(1, 61))
    assert len(hist[0].sphere_loss) == N_SPHERES
    assert hist[-1].loss == pytest.approx(snap.loss)
    assert tr.history(since_step=58)[0].step == 59


def test_pause_resume_stop_and_checkpoint_request_from_another_thread():
    tokens, mask = _data(400, seed=2)
    model, tr = _trainer(2)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("done", tr.run(tokens, mask)))
    th.start()
    while tr.snapshot().step < 3:
        time.sleep(0.001)
    tr.pause()
    time.sleep(0.05)
    paused_at = tr.snapshot().step
    time.sleep(0.1)
    snap = tr.snapshot()
    assert snap.paused and snap.step == paused_at, "no step may run while paused"
    tr.set_threads(1)
    tr.resume()
    while tr.snapshot().step < paused_at + 3:
        time.sleep(0.001)
    assert tr.snapshot().threads == 1
    tr.stop()
    th.join(timeout=30)
    assert not th.is_alive()
    assert out["done"] == tr.snapshot().step < 400
    assert tr.snapshot().stopped
    # a checkpoint request ends run() at the next step boundary, once
    tr.request_checkpoint()
    n = tr.run(tokens[:5], mask[:5])
    assert n == 1 and tr.take_checkpoint_request() and not tr.take_checkpoint_request()


def test_nan_stops_cleanly_naming_sphere_and_step_and_keeps_weights():
    tokens, mask = _data(4, seed=4)
    model, tr = _trainer(2)
    tr.run(tokens[:2], mask[:2])
    model.named_params()["wte"][tokens[2, 25, 0]] = np.nan  # row 25 lives in sphere 10
    before = model.params.copy()
    with pytest.raises(native.NanError, match=r"sphere \d+ failed at step 3"):
        tr.run(tokens[2:], mask[2:])
    assert np.array_equal(before, model.params, equal_nan=True), "a failed step must not touch the weights"
    assert tr.snapshot().step == 2


def test_bad_arguments():
    model = GPT(SHAPE)
    with pytest.raises(native.ArgumentError, match="threads"):
        SpheresTrainer(model, B, T, threads=0)
    with pytest.raises(native.ShapeError, match="seq_len"):
        SpheresTrainer(model, B, SHAPE.context + 1)
    _, tr = _trainer(1)
    with pytest.raises(native.ShapeError, match="tokens must have shape"):
        tr.run(np.zeros((1, B + 1, T + 1), np.int32))
    with pytest.raises(native.ArgumentError, match="loss_mask = 1"):
        tr.run(np.zeros((1, B, T + 1), np.int32), np.zeros((1, B, T), np.uint8))
    with pytest.raises(native.ArgumentError, match="lr_min"):
        tr.configure(lr=1e-3, min_lr=1e-2, warmup_steps=0, total_steps=10)


def test_shorter_batches_train_like_the_model_on_their_own_length():
    """Length buckets: a trainer made for T takes batches of any T' <= T, computes exactly
    the T'-token step (equal to the model's own forward/backward on it), and refuses T' > T."""
    tokens, mask = _data(2, seed=5)
    model, tr = _trainer(2)
    reference = GPT(SHAPE)
    reference.params[...] = model.params
    tr.configure(lr=1e-3, min_lr=1e-3, warmup_steps=0, total_steps=0, grad_clip=0.0)
    short = 7
    tr.run(tokens[:1, :, :short + 1], mask[:1, :, :short])
    reference.zero_grad()
    loss = reference.forward(tokens[0, :, :short], tokens[0, :, 1:short + 1], mask[0, :, :short])
    reference.backward()
    np.testing.assert_allclose(model.grads, reference.grads, rtol=1e-4, atol=1e-7)
    assert tr.snapshot().loss == pytest.approx(loss, rel=1e-5)
    assert tr.run(tokens[1:], mask[1:]) == 1  # back to the full length
    with pytest.raises(native.ShapeError, match=r"T <= 12"):
        tr.run(np.zeros((1, B, T + 2), np.int32))
    from odin.native import check, lib

    with pytest.raises(native.ShapeError, match=r"T must be in \[1, 12\]"):
        check(lib.odin_spheres_set_seq_len(tr._h, 0), "set_seq_len")


@pytest.mark.parametrize("threads", [1, 3])
def test_profiling_accounts_for_the_steps_and_changes_no_weight(threads):
    tokens, mask = _data(6)
    plain, tr_plain = _trainer(threads)
    tr_plain.run(tokens, mask)
    model, tr = _trainer(threads)
    tr.run(tokens[:2], mask[:2])  # not counted: profiling starts after it
    tr.set_profiling(True)
    tr.run(tokens[2:5], mask[2:5])
    tr.set_profiling(False)
    tr.run(tokens[5:], mask[5:])  # not counted either
    assert np.array_equal(model.params, plain.params)  # the clocks never touch the numbers
    p = tr.profile()
    assert p.steps == 3 and p.threads == threads
    parts = [p.fwd_gemm, p.fwd_other, p.bwd_gemm, p.bwd_other, p.slot_buffers, p.reduce, p.update]
    assert all(x > 0 for x in parts), p
    phases = p.wall_slots + p.wall_reduce + p.wall_update
    assert 0 < phases <= p.wall_steps
    # a thread cannot be busy longer than the phases it worked in lasted
    assert p.fwd_gemm + p.fwd_other + p.bwd_gemm + p.bwd_other + p.slot_buffers <= p.wall_slots * threads * 1.001
    assert p.reduce <= p.wall_reduce * threads * 1.001 and p.update <= p.wall_update * threads * 1.001
    tr.set_profiling(True)  # on again: counted from zero
    assert tr.profile().steps == 0 and tr.profile().wall_steps == 0.0


def test_weights_bit_identical_for_any_slot_buffer_count_and_thread_count():
    # a large model keeps fewer slot buffers than slots and runs the slots in waves; the
    # slot gradients are still added in slot order, so no count changes a bit
    tokens, mask = _data(5, seed=4)
    reference, tr = _trainer(1)
    assert tr.slot_buffers == N_SPHERES  # this model is small: a buffer per slot
    tr.run(tokens, mask)
    for buffers in (1, 2, 5, 7, 12):
        for threads in (1, 2, 3):
            model, tr = _trainer(threads)
            tr.set_slot_buffers(buffers)
            assert tr.slot_buffers == buffers
            tr.run(tokens[:2], mask[:2])
            tr.set_threads(4 - threads)  # a thread change between runs too
            tr.run(tokens[2:], mask[2:])
            assert np.array_equal(model.params, reference.params), (buffers, threads)
    with pytest.raises(native.OdinError, match=r"slot buffers must be in \[0, 12\]"):
        tr.set_slot_buffers(13)


def test_threads_started_between_runs_never_run_a_task_of_the_next_phase():
    # A thread started between runs used to take the last phase of the previous run as new
    # work; once counted active it could claim task 0 of the next phase and run it as the old
    # phase (an extra AdamW update on one chunk, a slot never run). The window is a few
    # instructions wide (seen in about 1 in 20 runs of the slot-buffer test above on a loaded
    # 2-core machine, not reproduced on demand): many thread starts give it many chances.
    tokens, mask = _data(2, seed=9)
    reference, tr = _trainer(1)
    tr.run(tokens, mask)
    for attempt in range(40):
        model, tr = _trainer(1)
        tr.run(tokens[:1], mask[:1])
        tr.set_threads(12)  # 11 threads start at the next run's first step boundary
        tr.run(tokens[1:], mask[1:])
        assert np.array_equal(model.params, reference.params), attempt


def test_a_batch_smaller_than_the_spheres_keeps_buffers_only_for_slots_with_rows():
    model = GPT(SHAPE)
    model.init_weights(0)
    tr = SpheresTrainer(model, 5, T, threads=2)
    assert tr.slot_buffers == 5  # slots 5..11 have no rows: their gradient is zero, never stored
    tr.configure(lr=1e-3, min_lr=1e-3, warmup_steps=0, total_steps=0, grad_clip=0.0)
    tokens = np.random.default_rng(0).integers(0, SHAPE.vocab_size, (1, 5, T + 1)).astype(np.int32)
    ref = GPT(SHAPE)
    ref.params[...] = model.params
    tr.run(tokens)
    snap = tr.snapshot()
    assert [s.microbatches for s in snap.spheres] == [1] * 5 + [0] * 7
    assert [s.last_loss for s in snap.spheres][5:] == [0.0] * 7
    # the summed slot gradients are the gradient of the 5 rows on the model alone
    ref.zero_grad()
    loss = ref.forward(tokens[0, :, :-1], tokens[0, :, 1:])
    ref.backward()
    np.testing.assert_allclose(model.grads, ref.grads, rtol=1e-4, atol=1e-7)
    assert snap.loss == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize("arch", ["gpt", "rwkv"])
@pytest.mark.parametrize("threads,buffers", [(1, 12), (2, 2), (3, 5)])
def test_slot_gradients_and_sphere_norms_match_the_model_on_later_steps(arch, threads, buffers):
    """A slot's backward writes its buffer without zeroing it first and the reduce takes each
    sphere's norm: on the 3rd step (buffers full of the 2nd step's gradients, waves of
    `buffers` slots, a slot whose every target is masked) the gradient is still the model's
    own for the whole batch and each sphere's norm its slot's own gradient norm."""
    from odin.rwkv import RWKV, RWKVShape

    def make():
        if arch == "gpt":
            return GPT(SHAPE)
        return RWKV(RWKVShape(vocab_size=SHAPE.vocab_size, context=T, n_layer=2, d_model=32))

    tokens, mask = _data(3, seed=7)
    mask[2, 0:3] = 0  # slot 0 (rows 0..2) counts no token on step 3: its gradient is zero
    model = make()
    model.init_weights(1)
    tr = SpheresTrainer(model, B, T, threads=threads)
    tr.set_slot_buffers(buffers)
    tr.configure(lr=0.0, min_lr=0.0, warmup_steps=0, total_steps=0, grad_clip=0.0)  # weights stay put
    assert tr.run(tokens, mask) == 3
    ref = make()
    ref.params[...] = model.params
    x, y, m = tokens[2, :, :-1], tokens[2, :, 1:], mask[2]
    ref.zero_grad()
    ref.forward(x, y, m)
    ref.backward()
    np.testing.assert_allclose(model.grads, ref.grads, rtol=1e-4, atol=1e-7)
    # sphere s: the gradient of its own rows' mean loss (the trainer's rescaled share)
    norms = tr.history()[-1].sphere_grad_norm
    assert norms[0] == 0.0
    first = 0
    for s in range(N_SPHERES):
        rows = B // N_SPHERES + (s < B % N_SPHERES)
        sl = slice(first, first + rows)
        first += rows
        if s == 0:
            continue
        ref.zero_grad()
        ref.forward(x[sl], y[sl], m[sl])
        ref.backward()
        assert norms[s] == pytest.approx(float(np.linalg.norm(ref.grads.astype(np.float64))), rel=1e-4), s
