"""The GPT model as Python sees it: a handle on the C model, with every parameter,
gradient and AdamW moment visible as a numpy view into the C blocks (no copies).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Iterator, Optional

import numpy as np

from odin.native import ArgumentError, DTypeError, ShapeError, check, ffi, lib
from odin.validate import ids_into, int_field, loss_mask, positive_float, token_ids


@dataclass(frozen=True)
class GPTShape:
    vocab_size: int
    context: int
    n_layer: int
    n_head: int
    d_model: int
    ln_eps: float = 1e-5
    # Abacus digit-position embeddings (odin/abacus.py): table size, 0 = off; the token ids
    # of "0" (digits are 10 consecutive ids) and of the prompt/answer separator "="
    n_abacus: int = 0
    digit_first: int = -1
    sep_id: int = -1
    # True: answer tokens carry the place they predict (odin/abacus.py, next_place)
    abacus_next: bool = False
    # False: no learned absolute positions (wpe held at zero), e.g. with Abacus for length
    # generalisation, where positions beyond the training lengths would be untrained
    learned_positions: bool = True
    # True: ALiBi attention biases (odin_gpt_set_alibi), relative distances instead of positions
    alibi: bool = False

    def __post_init__(self) -> None:
        # what a C int holds; the C side then checks what the sizes multiply to
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model"):
            int_field(getattr(self, name), f"{name}", 1)
        int_field(self.n_abacus, "n_abacus", 0)
        int_field(self.digit_first, "digit_first", -1)
        int_field(self.sep_id, "sep_id", -1)
        positive_float(self.ln_eps, "ln_eps")


def _block_view(ptr, n: int) -> np.ndarray:
    return np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)


@dataclass(frozen=True)
class WeightTypes:
    """What a model's weights are stored as: its matrices, and its token embedding (which is
    also the tied output head). "f32" or a block format of odin.quant (q8_0, q4_0, q4_1,
    q5_0, q5_1). Vectors (norms, biases, mixes, decays) and position tables stay float32."""
    matrix: str = "f32"
    embed: str = "f32"

    def __post_init__(self) -> None:
        from odin.quant import type_id
        type_id(self.matrix), type_id(self.embed)  # raises QuantError naming an unknown type

    @property
    def quantized(self) -> bool:
        return (self.matrix, self.embed) != ("f32", "f32")

    def ids(self) -> tuple[int, int]:
        from odin.quant import type_id
        return type_id(self.matrix), type_id(self.embed)

    def describe(self) -> str:
        if not self.quantized:
            return "f32"
        return self.matrix if self.matrix == self.embed else f"{self.matrix} (embedding {self.embed})"


F32 = WeightTypes()


class NativeModel:
    """What the architectures share on the Python side: a handle on a C model whose API is
    `<C_PREFIX>_create ... _free`, one parameter block with numpy views of every tensor
    (parameters, gradients, AdamW moments: no copies), a workspace sized on demand,
    backward, logits and the AdamW step. Not thread-safe: one trainer drives it at a time
    (the spheres trainer gives each of its threads its own C workspace)."""

    C_PREFIX = ""                           # "odin_gpt" or "odin_rwkv"
    NAME = ""                               # for error messages
    GLOBAL_TENSORS: tuple[str, ...] = ()    # tensor names outside the layers (no "h.<l>." prefix)

    def _c(self, function: str):
        return getattr(lib, f"{self.C_PREFIX}_{function}")

    def _attach(self, handle) -> None:
        """Own `handle` (freed with the object) and map its blocks and tensor table."""
        self._h = ffi.gc(handle, self._c("free"))
        self.n_params = int(self._c("num_params")(self._h))
        self.params = _block_view(self._c("params")(self._h), self.n_params)
        self._training_blocks: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None
        # float32 tensors: (name, offset in floats into params, shape)
        self.tensor_layout: list[tuple[str, int, tuple[int, ...]]] = []
        # quantized tensors: (name, offset in bytes into qblock, (rows, cols), type name)
        self.quant_layout: list[tuple[str, int, tuple[int, int], str]] = []
        qbytes = int(self._c("qbytes")(self._h))
        self.qblock = (np.frombuffer(ffi.buffer(self._c("qblock")(self._h), qbytes), dtype=np.uint8)
                       if qbytes else np.zeros(0, dtype=np.uint8))
        name_p, off_p, rows_p, cols_p = ffi.new("char **"), ffi.new("size_t *"), ffi.new("int *"), ffi.new("int *")
        type_p = ffi.new("int *")
        layer_of: dict[str, int] = {}
        for i in range(self._c("num_tensors")(self._h)):
            check(self._c("tensor_info")(self._h, i, name_p, off_p, rows_p, cols_p), f"{self.NAME}.tensor_info")
            check(self._c("tensor_type")(self._h, i, type_p), f"{self.NAME}.tensor_type")
            base = ffi.string(name_p[0]).decode()
            if base in self.GLOBAL_TENSORS:
                name = base
            else:
                layer = layer_of.get(base, 0)
                layer_of[base] = layer + 1
                name = f"h.{layer}.{base}"
            if type_p[0] != 0:
                from odin.quant import type_name
                self.quant_layout.append((name, int(off_p[0]), (rows_p[0], cols_p[0]), type_name(type_p[0])))
                continue
            shp = (rows_p[0],) if cols_p[0] == 1 else (rows_p[0], cols_p[0])
            self.tensor_layout.append((name, int(off_p[0]), shp))
        self._ws = None
        self._ws_shape = (0, 0)

    # ------------------------------------------------------------ quantized weights
    @property
    def is_quantized(self) -> bool:
        return bool(self.quant_layout)

    def named_qtensors(self) -> dict[str, tuple[np.ndarray, str]]:
        """name -> (uint8 [rows, row_bytes] view into the quantized block, type name)."""
        from odin.quant import row_bytes
        out = {}
        for name, off, (rows, cols), tname in self.quant_layout:
            rb = row_bytes(tname, cols)
            out[name] = (self.qblock[off:off + rows * rb].reshape(rows, rb), tname)
        return out

    # ------------------------------------------------------------ training blocks
    # Gradients and AdamW moments exist only once something trains (or reads them): a model
    # that only answers holds its parameters alone (the C side allocates them on first use).
    @property
    def has_training_blocks(self) -> bool:
        return self._training_blocks is not None

    def _training(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._training_blocks is None:
            check(self._c("enable_training")(self._h), f"{self.NAME} training memory")
            self._training_blocks = tuple(_block_view(self._c(name)(self._h), self.n_params)
                                          for name in ("grads", "adam_m", "adam_v"))  # type: ignore[assignment]
        return self._training_blocks

    @property
    def grads(self) -> np.ndarray:
        return self._training()[0]

    @property
    def adam_m(self) -> np.ndarray:
        return self._training()[1]

    @property
    def adam_v(self) -> np.ndarray:
        return self._training()[2]

    # ------------------------------------------------------------ tensor views
    def _views(self, block: np.ndarray) -> dict[str, np.ndarray]:
        return {name: block[off:off + math.prod(shp)].reshape(shp) for name, off, shp in self.tensor_layout}

    def named_params(self) -> dict[str, np.ndarray]:
        return self._views(self.params)

    def named_grads(self) -> dict[str, np.ndarray]:
        return self._views(self.grads)

    def named_moments(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self._views(self.adam_m), self._views(self.adam_v)

    def _reset_optimizer_state(self) -> None:
        for block in self._training_blocks or ():  # none yet: they start at zero when first used
            block[...] = 0.0

    # ------------------------------------------------------------ training
    def _workspace(self, B: int, T: int):
        if self._ws is None or B > self._ws_shape[0] or T > self._ws_shape[1]:
            B2, T2 = max(B, self._ws_shape[0]), max(T, self._ws_shape[1])
            out = ffi.new(f"{self.C_PREFIX}_ws **")
            self._ws = None  # free the old one first: they can be large
            check(self._c("ws_create")(out, self._h, B2, T2), f"{self.NAME}.workspace")
            self._ws = ffi.gc(out[0], self._c("ws_free"))
            self._ws_shape = (B2, T2)
        return self._ws

    def _targets_and_mask(self, targets: Optional[np.ndarray], mask: Optional[np.ndarray], B: int, T: int):
        """(targets, mask, their C pointers) checked against [B, T]."""
        tp = mp = ffi.NULL
        if mask is not None:
            mask = loss_mask(mask, "mask", (B, T))
            mp = ffi.cast("uint8_t *", ffi.from_buffer(mask))
        if targets is not None:
            targets = _i32_2d(targets, "targets", (B, T), self.shape.vocab_size, mask)
            tp = ffi.cast("int32_t *", ffi.from_buffer(targets))
        return targets, mask, tp, mp

    def logits(self) -> np.ndarray:
        """Logits [B,T,V] of the last forward (a copy)."""
        B, T = self._last_bt
        V = self.shape.vocab_size
        return _block_view(self._c("ws_logits")(self._ws), B * T * V).reshape(B, T, V).copy()

    def zero_grad(self) -> None:
        self.grads[...] = 0.0

    def backward(self, dloss: float = 1.0) -> None:
        """Accumulate d(loss)/d(params) of the last forward into self.grads."""
        if self._ws is None:
            raise RuntimeError("backward() needs a forward() with targets first")
        check(self._c("backward")(self._h, self._ws, self._c("grads")(self._h), float(dloss)),
              f"{self.NAME}.backward")

    def adamw_step(self, *, lr: float, step: int, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 1.0) -> float:
        """Clip, then AdamW (weight decay on matrices only). Returns the gradient norm before clipping."""
        # the C side takes a C int and checks step >= 1; beyond an int cffi raised OverflowError
        if isinstance(step, bool) or not isinstance(step, Integral) or abs(int(step)) > 2**31 - 1:
            raise ArgumentError(f"step must be an integer in [1, {2**31 - 1}], got {step!r}")
        step = int(step)
        norm = ffi.new("float *")
        check(self._c("adamw_step")(self._h, float(lr), float(beta1), float(beta2), float(eps),
                                    float(weight_decay), float(grad_clip), step, norm), f"{self.NAME}.adamw_step")
        return float(norm[0])


class GPT(NativeModel):
    """A GPT model in native memory."""

    C_PREFIX, NAME, GLOBAL_TENSORS = "odin_gpt", "GPT", ("wte", "wpe", "lnf_w", "lnf_b", "wab")

    def __init__(self, shape: GPTShape, weights: WeightTypes = F32) -> None:
        self.shape = shape
        self.weights = weights
        handle = ffi.new("odin_gpt **")
        if shape.n_abacus and (shape.digit_first < 0 or shape.sep_id < 0):
            raise ValueError("a model with Abacus embeddings needs digit_first and sep_id (token ids of '0' and '=')")
        check(lib.odin_gpt_create_q(handle, shape.vocab_size, shape.context, shape.n_layer, shape.n_head,
                                    shape.d_model, float(shape.ln_eps), shape.n_abacus, *weights.ids()), "GPT")
        self._attach(handle[0])
        check(lib.odin_gpt_set_learned_positions(self._h, int(shape.learned_positions)), "GPT")
        check(lib.odin_gpt_set_alibi(self._h, int(shape.alibi)), "GPT")

    def init_weights(self, seed: int) -> None:
        """GPT-2 initialisation: N(0, 0.02) matrices and embeddings, residual projections
        scaled by 1/sqrt(2 L), LayerNorm weights 1, biases 0. Deterministic from the seed."""
        rng = np.random.Generator(np.random.PCG64(seed))
        resid_std = 0.02 / math.sqrt(2 * self.shape.n_layer)
        for name, arr in self.named_params().items():
            base = name.rsplit(".", 1)[-1]
            if base.endswith("_b"):
                arr[...] = 0.0
            elif base in ("ln1_w", "ln2_w", "lnf_w"):
                arr[...] = 1.0
            else:
                std = resid_std if base in ("attproj_w", "fcproj_w") else 0.02
                arr[...] = rng.normal(0.0, std, size=arr.shape).astype(np.float32)
        if not self.shape.learned_positions:
            self.named_params()["wpe"][...] = 0.0
        self._reset_optimizer_state()

    def abacus_ids(self, tokens: np.ndarray, offsets: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Abacus ids for token rows (None for a model without Abacus embeddings)."""
        if not self.shape.n_abacus:
            return None
        from odin.abacus import abacus_ids

        return abacus_ids(tokens, self.shape.digit_first, self.shape.sep_id, self.shape.n_abacus, offsets,
                          next_place=self.shape.abacus_next)

    def forward(self, tokens: np.ndarray, targets: Optional[np.ndarray] = None,
                mask: Optional[np.ndarray] = None, ids: Optional[np.ndarray] = None) -> Optional[float]:
        """tokens/targets int32 [B,T], mask uint8 [B,T]; ids int32 [B,T] for Abacus models
        (computed with offset 0 when not given). Returns the mean loss (if targets)."""
        tokens = _i32_2d(tokens, "tokens", vocab_size=self.shape.vocab_size)
        B, T = tokens.shape
        if ids is None:
            ids = self.abacus_ids(tokens)
        ip = ffi.NULL
        if ids is not None:
            ids = _i32_2d(ids, "ids", (B, T))
            ip = ffi.cast("int32_t *", ffi.from_buffer(ids))
        if T > self.shape.context:
            raise ShapeError(f"tokens has T={T} positions but the model's context is {self.shape.context}")
        targets, mask, tp, mp = self._targets_and_mask(targets, mask, B, T)
        ws = self._workspace(B, T)
        # keep the inputs alive until backward: the C workspace points at them
        self._last_inputs = (tokens, ids, targets, mask)
        loss = ffi.new("float *")
        check(lib.odin_gpt_forward_ex(self._h, ws, ffi.cast("int32_t *", ffi.from_buffer(tokens)), ip, tp, mp, B, T,
                                      loss), "GPT.forward")
        self._last_bt = (B, T)
        return float(loss[0]) if targets is not None else None

    # ------------------------------------------------------------ generation
    def new_cache(self, batch: int = 1, threads: int = 1) -> "KVCache":
        return KVCache(self, batch, threads)

    def generate_greedy(self, prompts: list[list[int]], max_new: int, end_id: int,
                        batch: int = 64) -> list[list[int]]:
        """Greedy continuation of many prompts, batched in C. Returns generated ids (with end_id)."""
        results: list[list[int]] = []
        cache = None
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            B = len(chunk)
            if cache is None or cache.batch < B:
                cache = KVCache(self, max(B, min(batch, len(prompts))))
            longest = max(len(p) for p in chunk)
            arr = np.zeros((B, longest), np.int32)
            lens = np.array([len(p) for p in chunk], np.int32)
            for i, p in enumerate(chunk):
                arr[i, :len(p)] = p
            limit = self.shape.context - longest + 1
            n_new = max(1, min(max_new, limit))
            out = np.zeros((B, n_new), np.int32)
            out_lens = np.zeros(B, np.int32)
            ids = self.abacus_ids(arr)
            check(lib.odin_gpt_generate_greedy_ex(
                self._h, cache._h, ffi.cast("int32_t *", ffi.from_buffer(arr)),
                ffi.NULL if ids is None else ffi.cast("int32_t *", ffi.from_buffer(ids)),
                ffi.cast("int32_t *", ffi.from_buffer(lens)), B, longest, n_new, end_id, self.shape.digit_first,
                ffi.cast("int32_t *", ffi.from_buffer(out)), ffi.cast("int32_t *", ffi.from_buffer(out_lens))),
                "GPT.generate_greedy")
            results.extend(out[i, :out_lens[i]].tolist() for i in range(B))
        return results


class KVCache:
    """Per-sequence key/value cache for token-by-token generation."""

    def __init__(self, model: GPT, batch: int, threads: int = 1) -> None:
        batch = int_field(batch, "batch", 1)  # a C int; the C side checks what it multiplies to
        out = ffi.new("odin_gpt_cache **")
        check(lib.odin_gpt_cache_create(out, model._h, batch), "KVCache")
        self._h = ffi.gc(out[0], lib.odin_gpt_cache_free)
        threads = int_field(threads, "threads", 1, 64)
        if threads != 1:  # decoding threads: each product's columns split over them, same logits
            check(lib.odin_gpt_cache_set_threads(self._h, threads), "KVCache")
        self.model = model
        self.batch = batch
        self._logits = np.zeros((batch, model.shape.vocab_size), np.float32)
        self._tok = np.zeros(batch, np.int32)
        self._pos = np.zeros(batch, np.int32)
        self._ids = np.zeros(batch, np.int32)

    def step(self, tokens: list[int], positions: list[int], ids: Optional[list[int]] = None) -> np.ndarray:
        """Feed one token per sequence (with its Abacus id for Abacus models); returns the
        next-token logits [B, V] (a view, overwritten by the next step)."""
        B = len(tokens)
        if B > self.batch:
            raise ShapeError(f"tokens has {B} entries but the cache holds {self.batch} sequences")
        ids_into(self._tok, tokens, "tokens", self.model.shape.vocab_size)
        ids_into(self._pos, positions, "positions", None, length=B)
        ip = ffi.NULL
        if ids is not None:
            ids_into(self._ids, ids, "ids", None, length=B)
            ip = ffi.cast("int32_t *", ffi.from_buffer(self._ids))
        check(lib.odin_gpt_decode_ex(self.model._h, self._h, ffi.cast("int32_t *", ffi.from_buffer(self._tok)),
                                     ffi.cast("int32_t *", ffi.from_buffer(self._pos)), ip, B,
                                     ffi.cast("float *", ffi.from_buffer(self._logits))), "KVCache.step")
        return self._logits[:B]


class Sampler:
    """Temperature / top-k / top-p sampling in C with a seeded xorshift state."""

    def __init__(self, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> None:
        if not (isinstance(temperature, Real) and math.isfinite(temperature) and temperature >= 0):
            raise ArgumentError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if not (isinstance(top_p, Real) and 0.0 < top_p <= 1.0):
            raise ArgumentError(f"top_p must be in (0, 1], got {top_p!r}")
        self.temperature, self.top_k, self.top_p = float(temperature), int_field(top_k, "top_k", 0), float(top_p)
        self._state = ffi.new("uint64_t *", (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF)
        self._out = ffi.new("int32_t *")

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        check(lib.odin_sample(ffi.cast("float *", ffi.from_buffer(logits)), logits.shape[-1], self.temperature,
                              self.top_k, self.top_p, self._state, self._out), "sample")
        return int(self._out[0])


def position_limit(model: Any) -> Optional[int]:
    """How many positions a model can generate over: a GPT's context (its position table and
    KV cache end there); None for a recurrent model (RWKV), whose state does not grow."""
    return model.shape.context if isinstance(model, GPT) else None


def stream_tokens(model: Any, prompt: list[int], max_new: int, sampler: Sampler,
                  stop_ids: tuple[int, ...] = (), threads: int = 1) -> Iterator[int]:
    """Yield generated token ids one at a time (GPT: KV cache; RWKV: recurrent state; each
    step costs one token), decoding on `threads` threads (the same tokens for any count)."""
    if not prompt:
        raise ValueError("prompt must contain at least one token (e.g. <bos>)")
    limit = position_limit(model)
    if limit is not None and len(prompt) > limit:
        raise ShapeError(f"prompt has {len(prompt)} tokens but the context is {limit}")
    cache = model.new_cache(1, threads)
    logits = None
    prompt_ids = model.abacus_ids(np.asarray(prompt, np.int32))
    for pos, tok in enumerate(prompt):
        logits = cache.step([tok], [pos], None if prompt_ids is None else [int(prompt_ids[pos])])
    pos = len(prompt)
    shape = model.shape
    last_id = 0 if prompt_ids is None else int(prompt_ids[-1])
    prev_digit, first = False, True
    for _ in range(max_new):
        nxt = sampler(logits[0])
        yield nxt
        if nxt in stop_ids or (limit is not None and pos >= limit):
            return
        ids = None
        if shape.n_abacus:  # as the C decoder: digits count up along a run, the first from the prompt's last id
            is_digit = shape.digit_first <= nxt < shape.digit_first + 10
            if first:
                prompt_digit = shape.digit_first <= prompt[-1] < shape.digit_first + 10
                start = 1 if prompt_digit else last_id + 1
            else:
                start = last_id + 1 if prev_digit else 1
            last_id = min(start, shape.n_abacus - 1) if is_digit else 0
            prev_digit, first = is_digit, False
            ids = [last_id]
        logits = cache.step([nxt], [pos], ids)
        pos += 1


def _i32_2d(x: np.ndarray, name: str, shape: Optional[tuple[int, int]] = None,
            vocab_size: Optional[int] = None, counted: Optional[np.ndarray] = None) -> np.ndarray:
    """A [B, T] integer numpy array as int32, through odin.validate.token_ids (no wrapping,
    no truncation; ids in [0, vocab_size) where `counted` is set, when vocab_size is given)."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{name} must be an integer numpy array, got {type(x).__name__}")
    arr = token_ids(x, name, vocab_size, shape=shape, counted=counted)
    if arr.ndim != 2:
        raise ShapeError(f"{name} must be 2-D [B, T], got shape {arr.shape}")
    return arr
