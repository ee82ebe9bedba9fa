"""The RWKV-4 model as Python sees it: a handle on the C model (csrc/rwkv.c) with the same
methods as odin.model.GPT — every parameter, gradient and AdamW moment a numpy view into
the C blocks (no copies), forward / backward / adamw_step, and generation — so code
written for GPT drives it unchanged.

Generation runs the recurrent form: RWKVState holds, per layer and sequence, the two
token-shift vectors and the WKV accumulators, so a token costs the same at any length and
the state never grows. `context` is only the training sequence length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from odin.model import F32, NativeModel, WeightTypes, _i32_2d
from odin.native import ArgumentError, ShapeError, check, ffi, lib
from odin.validate import ids_into, int_field, positive_float

_GLOBAL_TENSORS = ("emb", "ln0_w", "ln0_b", "ln_out_w", "ln_out_b")


@dataclass(frozen=True)
class RWKVShape:
    vocab_size: int
    context: int         # training sequence length (sizes workspaces); generation has no limit
    n_layer: int
    d_model: int
    d_ffn: int = 0       # channel-mix width; 0 = 4 * d_model
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "d_model"):
            int_field(getattr(self, name), name, 1)
        if self.d_ffn == 0:
            object.__setattr__(self, "d_ffn", 4 * self.d_model)
        int_field(self.d_ffn, "d_ffn", 1)
        positive_float(self.ln_eps, "ln_eps")

    # What GPT-written code reads from a GPTShape: RWKV has no Abacus table and no positions.
    @property
    def n_abacus(self) -> int:
        return 0

    @property
    def digit_first(self) -> int:
        return -1

    @property
    def sep_id(self) -> int:
        return -1

    @property
    def learned_positions(self) -> bool:
        return False


class RWKV(NativeModel):
    """An RWKV-4 model in native memory (the shared machinery is odin.model.NativeModel)."""

    C_PREFIX, NAME, GLOBAL_TENSORS = "odin_rwkv", "RWKV", _GLOBAL_TENSORS

    def __init__(self, shape: RWKVShape, weights: WeightTypes = F32) -> None:
        self.shape = shape
        self.weights = weights
        handle = ffi.new("odin_rwkv **")
        check(lib.odin_rwkv_create_q(handle, shape.vocab_size, shape.n_layer, shape.d_model, shape.d_ffn,
                                     float(shape.ln_eps), *weights.ids()), "RWKV")
        self._attach(handle[0])

    def init_weights(self, seed: int) -> None:
        """RWKV-4 initialisation, deterministic from the seed. Per layer l of L, with
        r = l / (L - 1) (0 at the bottom, 1 at the top) and q = 1 - l / L:
          time_decay[c] = -5 + 8 (c / (C-1))^(0.7 + 1.3 r)   (slow to fast decays across channels,
                                                             faster higher up)
          time_first[c] = ln 0.3 + 0.5 ((c + 1) % 3 - 1)     (a zigzag around ln 0.3)
          mix_k = ramp^q, mix_v = ramp^q + 0.3 r, mix_r = ramp^(q/2), ffn mixes ramp^q,
          ramp[c] = c / C                                    (more shifted input at the bottom)
        Matrices N(0, 0.02), the two projections back into the residual stream (att_output_w,
        ffn_value_w) N(0, 0.02 / sqrt(2 L)); LayerNorm weights 1, biases 0. emb U(-1e-4, 1e-4):
        ln0 normalises it on the way in anyway, and as the tied head a larger emb would make the
        untrained model predict its input token (that logit is ~ d_model x std(emb), 15 nats
        at d_model 768 with std 0.02); small, the first loss is ln(vocab)."""
        rng = np.random.Generator(np.random.PCG64(seed))
        L, C = self.shape.n_layer, self.shape.d_model
        c = np.arange(C, dtype=np.float64)
        ramp = c / C
        resid_std = 0.02 / math.sqrt(2 * L)
        for name, arr in self.named_params().items():
            base = name.rsplit(".", 1)[-1]
            layer = int(name.split(".")[1]) if name.startswith("h.") else 0
            r01 = layer / (L - 1) if L > 1 else 0.0
            q = 1.0 - layer / L
            if base.endswith("_b"):
                value = 0.0
            elif base.startswith("ln") and base.endswith("_w"):
                value = 1.0
            elif base == "emb":
                value = rng.uniform(-1e-4, 1e-4, size=arr.shape)
            elif base == "att_time_decay":
                value = -5.0 + 8.0 * (c / max(C - 1, 1)) ** (0.7 + 1.3 * r01)
            elif base == "att_time_first":
                value = math.log(0.3) + 0.5 * ((c + 1) % 3 - 1)
            elif base in ("att_time_mix_k", "ffn_time_mix_k", "ffn_time_mix_r"):
                value = ramp ** q
            elif base == "att_time_mix_v":
                value = ramp ** q + 0.3 * r01
            elif base == "att_time_mix_r":
                value = ramp ** (0.5 * q)
            else:
                std = resid_std if base in ("att_output_w", "ffn_value_w") else 0.02
                value = rng.normal(0.0, std, size=arr.shape)
            arr[...] = np.asarray(value, np.float32)
        self._reset_optimizer_state()

    # ------------------------------------------------------------ training
    def abacus_ids(self, tokens: np.ndarray, offsets: Optional[np.ndarray] = None) -> None:
        """RWKV has no Abacus embeddings."""
        return None

    def forward(self, tokens: np.ndarray, targets: Optional[np.ndarray] = None,
                mask: Optional[np.ndarray] = None, ids: Optional[np.ndarray] = None) -> Optional[float]:
        """tokens/targets int32 [B,T], mask uint8 [B,T] (1 = counts). The parallel form: each
        row starts from the zero state; T may exceed shape.context (no position table).
        Returns the mean loss over counted tokens (if targets)."""
        if ids is not None:
            raise ArgumentError("ids: RWKV has no Abacus embeddings (pass ids=None)")
        tokens = _i32_2d(tokens, "tokens", vocab_size=self.shape.vocab_size)
        B, T = tokens.shape
        targets, mask, tp, mp = self._targets_and_mask(targets, mask, B, T)
        ws = self._workspace(B, T)
        self._last_inputs = (tokens, targets, mask)  # the C workspace points at them until backward
        loss = ffi.new("float *")
        check(lib.odin_rwkv_forward(self._h, ws, ffi.cast("int32_t *", ffi.from_buffer(tokens)), tp, mp, B, T, loss),
              "RWKV.forward")
        self._last_bt = (B, T)
        return float(loss[0]) if targets is not None else None

    # ------------------------------------------------------------ generation
    def new_cache(self, batch: int = 1, threads: int = 1) -> "RWKVState":
        return RWKVState(self, batch, threads)

    def generate_greedy(self, prompts: list[list[int]], max_new: int, end_id: int,
                        batch: int = 64) -> list[list[int]]:
        """Greedy continuation of many prompts, batched in C from the zero state. Returns the
        generated ids of each prompt (ending with end_id when it was produced)."""
        # a C int; the output buffer is max_new per prompt (2**40 asked numpy for 4 TiB)
        max_new = int_field(max_new, "max_new", 1)
        results: list[list[int]] = []
        state = None
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            B = len(chunk)
            if state is None or state.batch < B:
                state = RWKVState(self, max(B, min(batch, len(prompts))))
            if any(len(p) == 0 for p in chunk):
                raise ArgumentError("every prompt needs at least one token (e.g. <bos>)")
            longest = max(len(p) for p in chunk)
            arr = np.zeros((B, longest), np.int32)
            lens = np.array([len(p) for p in chunk], np.int32)
            for i, p in enumerate(chunk):
                arr[i, :len(p)] = p
            out = np.zeros((B, max_new), np.int32)
            out_lens = np.zeros(B, np.int32)
            check(lib.odin_rwkv_generate_greedy(
                self._h, state._h, ffi.cast("int32_t *", ffi.from_buffer(arr)),
                ffi.cast("int32_t *", ffi.from_buffer(lens)), B, longest, max_new, end_id,
                ffi.cast("int32_t *", ffi.from_buffer(out)), ffi.cast("int32_t *", ffi.from_buffer(out_lens))),
                "RWKV.generate_greedy")
            results.extend(out[i, :out_lens[i]].tolist() for i in range(B))
        return results


class RWKVState:
    """Recurrent state of `batch` sequences (per layer: two token-shift vectors and the WKV
    accumulators per channel): the RWKV counterpart of odin.model.KVCache, constant in size."""

    def __init__(self, model: RWKV, batch: int, threads: int = 1) -> None:
        batch = int_field(batch, "batch", 1)  # a C int; the C side checks what it multiplies to
        out = ffi.new("odin_rwkv_state **")
        check(lib.odin_rwkv_state_create(out, model._h, batch), "RWKVState")
        self._h = ffi.gc(out[0], lib.odin_rwkv_state_free)
        threads = int_field(threads, "threads", 1, 64)
        if threads != 1:  # decoding threads: each product's columns split over them, same logits
            check(lib.odin_rwkv_state_set_threads(self._h, threads), "RWKVState")
        self.model = model
        self.batch = batch
        self._logits = np.zeros((batch, model.shape.vocab_size), np.float32)
        self._tok = np.zeros(batch, np.int32)

    @property
    def nbytes(self) -> int:
        """Bytes of the recurrent state proper (B x n_layer x 5 x d_model floats)."""
        return int(lib.odin_rwkv_state_bytes(self._h))

    def step(self, tokens: list[int], positions: Optional[list[int]] = None,
             ids: Optional[list[int]] = None) -> np.ndarray:
        """Feed one token per sequence (the first len(tokens) sequences) and advance their
        states. `positions` is accepted for KVCache compatibility and ignored: a state simply
        moves on by one token. Returns the next-token logits [B, V] (a view, overwritten by
        the next step)."""
        if ids is not None:
            raise ArgumentError("ids: RWKV has no Abacus embeddings (pass ids=None)")
        B = len(tokens)
        if B > self.batch:
            raise ShapeError(f"tokens has {B} entries but the state holds {self.batch} sequences")
        ids_into(self._tok, tokens, "tokens", self.model.shape.vocab_size)
        check(lib.odin_rwkv_decode(self.model._h, self._h, ffi.cast("int32_t *", ffi.from_buffer(self._tok)), B,
                                   ffi.cast("float *", ffi.from_buffer(self._logits))), "RWKVState.step")
        return self._logits[:B]

    def reset(self, b: Optional[int] = None) -> None:
        """Back to the zero state: sequence b, or every sequence."""
        check(lib.odin_rwkv_state_reset(self._h, -1 if b is None else int(b)), "RWKVState.reset")
