"""Run under mpirun (or alone) by tests/test_mpi.py: train a GPT, an RWKV and an Abacus GPT
through the Python API on an awkward batch (13 rows: slots of 2 and 1 rows, a loss mask, a
thread change midway) and print one line — the weights' hash, the loss, every sphere's
statistics — which must be the same on every rank and equal to the one-process line."""
from __future__ import annotations

import hashlib
import sys

import numpy as np

from odin.distributed import world
from odin.distributed.spheres import DistributedSpheresTrainer
from odin.model import GPT, GPTShape
from odin.rwkv import RWKV, RWKVShape
from odin.spheres import SpheresTrainer

B, T, STEPS = 13, 12, 6


def train(model, threads: int) -> str:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 16, (STEPS, B, T + 1)).astype(np.int32)
    mask = (rng.random((STEPS, B, T)) > 0.25).astype(np.uint8)
    ids = None
    if isinstance(model, GPT) and model.shape.n_abacus:  # Abacus ids travel with the steps too
        ids = np.stack([model.abacus_ids(tokens[i, :, :-1]) for i in range(STEPS)])
    model.init_weights(0)
    w = world()
    trainer = DistributedSpheresTrainer(model, B, T, w, threads=threads) if w else SpheresTrainer(model, B, T, threads)
    trainer.configure(lr=3e-3, min_lr=3e-4, warmup_steps=2, total_steps=8, weight_decay=0.1, grad_clip=1.0)
    trainer.run(tokens[:3], mask[:3], None if ids is None else ids[:3])
    trainer.set_threads(threads + 1)
    trainer.run(tokens[3:], mask[3:], None if ids is None else ids[3:])
    snap = trainer.snapshot()
    spheres = [(s.rows, s.microbatches, s.tokens, round(s.last_loss, 6), round(s.last_grad_norm, 6))
               for s in snap.spheres]
    history = [(r.step, r.loss, r.grad_norm, r.sphere_loss) for r in trainer.history()]
    return f"{hashlib.sha256(model.params.tobytes() + model.adam_v.tobytes()).hexdigest()[:24]} {snap.step} " \
           f"{snap.loss!r} {spheres} {hashlib.sha256(repr(history).encode()).hexdigest()[:12]}"


if __name__ == "__main__":
    threads = int(sys.argv[1])
    gpt = train(GPT(GPTShape(vocab_size=16, context=16, n_layer=2, n_head=2, d_model=32)), threads)
    rwkv = train(RWKV(RWKVShape(vocab_size=16, context=16, n_layer=2, d_model=32)), threads)
    abacus = train(GPT(GPTShape(vocab_size=16, context=16, n_layer=1, n_head=2, d_model=32, n_abacus=16,
                                digit_first=3, sep_id=14)), threads)
    print(f"gpt {gpt} | rwkv {rwkv} | abacus {abacus}", flush=True)
