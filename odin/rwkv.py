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

from odin.model import _block_view, _i32_2d
from odin.native import ArgumentError, ShapeError, check, ffi, lib

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
        if self.d_ffn == 0:
            object.__setattr__(self, "d_ffn", 4 * self.d_model)

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


class RWKV:
    """An RWKV-4 model in native memory. Not thread-safe: one trainer drives it at a time
    (the spheres trainer gives each thread its own C workspace on the same parameters)."""

    def __init__(self, shape: RWKVShape) -> None:
        self.shape = shape
        handle = ffi.new("odin_rwkv **")
        check(lib.odin_rwkv_create(handle, shape.vocab_size, shape.n_layer, shape.d_model, shape.d_ffn,
                                   float(shape.ln_eps)), "RWKV")
        self._h = ffi.gc(handle[0], lib.odin_rwkv_free)
        self.n_params = int(lib.odin_rwkv_num_params(self._h))
        self.params = _block_view(lib.odin_rwkv_params(self._h), self.n_params)
        self.grads = _block_view(lib.odin_rwkv_grads(self._h), self.n_params)
        self.adam_m = _block_view(lib.odin_rwkv_adam_m(self._h), self.n_params)
        self.adam_v = _block_view(lib.odin_rwkv_adam_v(self._h), self.n_params)
        self.tensor_layout: list[tuple[str, int, tuple[int, ...]]] = []
        name_p, off_p, rows_p, cols_p = ffi.new("char **"), ffi.new("size_t *"), ffi.new("int *"), ffi.new("int *")
        layer_of: dict[str, int] = {}
        for i in range(lib.odin_rwkv_num_tensors(self._h)):
            check(lib.odin_rwkv_tensor_info(self._h, i, name_p, off_p, rows_p, cols_p), "RWKV.tensor_info")
            base = ffi.string(name_p[0]).decode()
            if base in _GLOBAL_TENSORS:
                name = base
            else:
                layer = layer_of.get(base, 0)
                layer_of[base] = layer + 1
                name = f"h.{layer}.{base}"
            shp = (rows_p[0],) if cols_p[0] == 1 else (rows_p[0], cols_p[0])
            self.tensor_layout.append((name, int(off_p[0]), shp))
        self._ws = None
        self._ws_shape = (0, 0)

    # ------------------------------------------------------------ tensor views
    def _views(self, block: np.ndarray) -> dict[str, np.ndarray]:
        return {name: block[off:off + math.prod(shp)].reshape(shp) for name, off, shp in self.tensor_layout}

    def named_params(self) -> dict[str, np.ndarray]:
        return self._views(self.params)

    def named_grads(self) -> dict[str, np.ndarray]:
        return self._views(self.grads)

    def named_moments(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self._views(self.adam_m), self._views(self.adam_v)

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
        self.adam_m[...] = 0.0
        self.adam_v[...] = 0.0
        self.grads[...] = 0.0

    # ------------------------------------------------------------ training
    def _workspace(self, B: int, T: int):
        if self._ws is None or B > self._ws_shape[0] or T > self._ws_shape[1]:
            B2, T2 = max(B, self._ws_shape[0]), max(T, self._ws_shape[1])
            out = ffi.new("odin_rwkv_ws **")
            self._ws = None  # free the old one first: they can be large
            check(lib.odin_rwkv_ws_create(out, self._h, B2, T2), "RWKV.workspace")
            self._ws = ffi.gc(out[0], lib.odin_rwkv_ws_free)
            self._ws_shape = (B2, T2)
        return self._ws

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
        tokens = _i32_2d(tokens, "tokens")
        B, T = tokens.shape
        tp = mp = ffi.NULL
        if targets is not None:
            targets = _i32_2d(targets, "targets", (B, T))
            tp = ffi.cast("int32_t *", ffi.from_buffer(targets))
        if mask is not None:
            mask = np.ascontiguousarray(mask, dtype=np.uint8)
            if mask.shape != (B, T):
                raise ShapeError(f"mask must have shape {(B, T)}, got {mask.shape}")
            mp = ffi.cast("uint8_t *", ffi.from_buffer(mask))
        ws = self._workspace(B, T)
        self._last_inputs = (tokens, targets, mask)  # the C workspace points at them until backward
        loss = ffi.new("float *")
        check(lib.odin_rwkv_forward(self._h, ws, ffi.cast("int32_t *", ffi.from_buffer(tokens)), tp, mp, B, T, loss),
              "RWKV.forward")
        self._last_bt = (B, T)
        return float(loss[0]) if targets is not None else None

    def logits(self) -> np.ndarray:
        """Logits [B,T,V] of the last forward (a copy)."""
        B, T = self._last_bt
        V = self.shape.vocab_size
        return _block_view(lib.odin_rwkv_ws_logits(self._ws), B * T * V).reshape(B, T, V).copy()

    def zero_grad(self) -> None:
        self.grads[...] = 0.0

    def backward(self, dloss: float = 1.0) -> None:
        """Accumulate d(loss)/d(params) of the last forward into self.grads."""
        if self._ws is None:
            raise RuntimeError("backward() needs a forward() with targets first")
        check(lib.odin_rwkv_backward(self._h, self._ws, lib.odin_rwkv_grads(self._h), float(dloss)),
              "RWKV.backward")

    def adamw_step(self, *, lr: float, step: int, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 1.0) -> float:
        """Clip, then AdamW (weight decay on matrices only). Returns the gradient norm before clipping."""
        norm = ffi.new("float *")
        check(lib.odin_rwkv_adamw_step(self._h, float(lr), float(beta1), float(beta2), float(eps),
                                       float(weight_decay), float(grad_clip), int(step), norm), "RWKV.adamw_step")
        return float(norm[0])

    # ------------------------------------------------------------ generation
    def new_cache(self, batch: int = 1) -> "RWKVState":
        return RWKVState(self, batch)

    def generate_greedy(self, prompts: list[list[int]], max_new: int, end_id: int,
                        batch: int = 64) -> list[list[int]]:
        """Greedy continuation of many prompts, batched in C from the zero state. Returns the
        generated ids of each prompt (ending with end_id when it was produced)."""
        if max_new < 1:
            raise ArgumentError(f"max_new must be >= 1, got {max_new}")
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

    def __init__(self, model: RWKV, batch: int) -> None:
        out = ffi.new("odin_rwkv_state **")
        check(lib.odin_rwkv_state_create(out, model._h, batch), "RWKVState")
        self._h = ffi.gc(out[0], lib.odin_rwkv_state_free)
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
        self._tok[:B] = tokens
        check(lib.odin_rwkv_decode(self.model._h, self._h, ffi.cast("int32_t *", ffi.from_buffer(self._tok)), B,
                                   ffi.cast("float *", ffi.from_buffer(self._logits))), "RWKVState.step")
        return self._logits[:B]

    def reset(self, b: Optional[int] = None) -> None:
        """Back to the zero state: sequence b, or every sequence."""
        check(lib.odin_rwkv_state_reset(self._h, -1 if b is None else int(b)), "RWKVState.reset")
