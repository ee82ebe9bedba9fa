"""The ODIN WebAssembly module from Python, through the ``wasmtime`` package.

Used by the tests (the wasm kernels, GPT and RWKV against the native library) and by
tools/bench_wasm.py; the browser uses web/odin.js instead. Needs ``pip install wasmtime``.

    rt = WasmOdin("simd128")                 # or "scalar", or a path to a .wasm
    x = np.random.randn(1000).astype(np.float32)
    out = np.empty_like(x)
    rt.run("odin_gelu_forward", out, x, x.size)   # numpy arrays in, results copied back

``run`` passes numpy arrays through wasm memory: each is copied into a fresh ``malloc``
block, the function gets its address, and after the call every block is copied back into
its array (so output arguments fill in place) and freed. ``None`` is NULL. A non-zero
``odin_status`` raises :class:`WasmOdinError` with ``odin_last_error()``'s message.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from odin.web.build import DEFAULT_OUT, artifact_name

STATUS_NAMES = {0: "OK", 1: "BAD_SHAPE", 2: "BAD_ARG", 3: "NO_MEMORY", 4: "NAN_DETECTED",
                5: "UNSUPPORTED_ISA", 6: "IO", 7: "STATE"}


class WasmOdinError(RuntimeError):
    """A wasm ODIN call returned a non-OK odin_status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.status_name = STATUS_NAMES.get(status, str(status))


def _wasmtime():
    try:
        import wasmtime
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("running the wasm module from Python needs the 'wasmtime' package: "
                          "pip install wasmtime") from None
    return wasmtime


_ENGINE = None
_MODULES: dict[tuple[str, float], Any] = {}


def _engine():
    global _ENGINE
    if _ENGINE is None:
        wt = _wasmtime()
        config = wt.Config()
        config.wasm_simd = True
        _ENGINE = wt.Engine(config)
    return _ENGINE


def _module(path: Path):
    key = (str(path), path.stat().st_mtime)
    mod = _MODULES.get(key)
    if mod is None:
        mod = _wasmtime().Module.from_file(_engine(), str(path))
        _MODULES[key] = mod
    return mod


def artifact_path(variant_or_path: Union[str, Path]) -> Path:
    """'simd128' / 'scalar' -> web/wasm/odin-<variant>.wasm; anything else is a path."""
    if isinstance(variant_or_path, str) and variant_or_path in ("simd128", "scalar"):
        return DEFAULT_OUT / artifact_name(variant_or_path)
    return Path(variant_or_path)


class WasmOdin:
    """One instance of the module (its own linear memory), single-threaded."""

    def __init__(self, variant_or_path: Union[str, Path] = "simd128", env: Optional[dict[str, str]] = None) -> None:
        wt = _wasmtime()
        self.path = artifact_path(variant_or_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found: build it with `python tools/build_wasm.py`")
        self.store = wt.Store(_engine())
        wasi = wt.WasiConfig()
        if env:
            wasi.env = [[k, v] for k, v in env.items()]
        self.store.set_wasi(wasi)
        linker = wt.Linker(_engine())
        linker.define_wasi()
        self.instance = linker.instantiate(self.store, _module(self.path))
        self._exports = self.instance.exports(self.store)
        self.memory = self._exports["memory"]
        self._funcs: dict[str, Any] = {}
        self.fn("_initialize")()  # C constructors: the kernel dispatch

    # ------------------------------------------------------------------ raw access
    def fn(self, name: str):
        f = self._funcs.get(name)
        if f is None:
            try:
                raw = self._exports[name]
            except KeyError:
                raise AttributeError(f"the wasm module has no export {name!r}") from None
            store = self.store
            f = lambda *args: raw(store, *args)  # noqa: E731
            self._funcs[name] = f
        return f

    def has(self, name: str) -> bool:
        try:
            self._exports[name]
            return True
        except KeyError:
            return False

    def memory_bytes(self) -> int:
        return int(self.memory.data_len(self.store))

    def bytes_view(self) -> np.ndarray:
        """The whole linear memory as uint8 (valid until the next call that may grow it)."""
        n = self.memory.data_len(self.store)
        ptr = self.memory.data_ptr(self.store)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), shape=(n,))

    def view(self, ptr: int, count: int, dtype=np.float32) -> np.ndarray:
        """A numpy view of count elements at ptr (no copy; re-take it after calls that allocate)."""
        dt = np.dtype(dtype)
        return self.bytes_view()[ptr:ptr + count * dt.itemsize].view(dt)

    def malloc(self, nbytes: int) -> int:
        p = int(self.fn("malloc")(int(nbytes)))
        if p == 0:
            raise MemoryError(f"wasm malloc({nbytes}) failed (memory is {self.memory_bytes() / 2**20:.0f} MiB)")
        return p

    def free(self, ptr: int) -> None:
        if ptr:
            self.fn("free")(int(ptr))

    def put(self, array: np.ndarray) -> int:
        a = np.ascontiguousarray(array)
        p = self.malloc(max(a.nbytes, 1))
        self.bytes_view()[p:p + a.nbytes] = a.view(np.uint8).reshape(-1)
        return p

    def get(self, ptr: int, count: int, dtype=np.float32) -> np.ndarray:
        return self.view(ptr, count, dtype).copy()

    def cstr(self, ptr: int) -> str:
        mem = self.bytes_view()
        end = ptr
        while mem[end]:
            end += 1
        return bytes(mem[ptr:end]).decode("utf-8", "replace")

    # ------------------------------------------------------------------ calls
    def last_error(self) -> str:
        return self.cstr(self.fn("odin_last_error")())

    def check(self, status: int, where: str) -> None:
        if status:
            raise WasmOdinError(f"{where}: {self.last_error()}", int(status))

    def call(self, name: str, *args) -> Any:
        return self.fn(name)(*args)

    def run(self, name: str, *args, check: bool = True) -> Any:
        """Call with numpy arrays copied in and back (see the module docstring)."""
        ptrs: list[tuple[int, Optional[np.ndarray]]] = []
        cargs: list[Any] = []
        try:
            for a in args:
                if isinstance(a, np.ndarray):
                    if not a.flags.c_contiguous:
                        raise ValueError(f"{name}: arrays must be C-contiguous")
                    p = self.put(a)
                    ptrs.append((p, a))
                    cargs.append(p)
                elif a is None:
                    cargs.append(0)
                elif isinstance(a, (bool, np.bool_)):
                    cargs.append(int(a))
                elif isinstance(a, (int, np.integer)):
                    cargs.append(int(a))
                elif isinstance(a, (float, np.floating)):
                    cargs.append(float(a))
                else:
                    raise TypeError(f"{name}: cannot pass {type(a).__name__}")
            result = self.fn(name)(*cargs)
            for p, a in ptrs:
                if a.flags.writeable and a.nbytes:
                    a.view(np.uint8).reshape(-1)[...] = self.bytes_view()[p:p + a.nbytes]
        finally:
            for p, _ in ptrs:
                self.free(p)
        if check and name.startswith("odin_") and isinstance(result, int):
            self.check(result, name)
        return result

    # ------------------------------------------------------------------ library info
    def version(self) -> str:
        return self.cstr(self.fn("odin_version")())

    def current_isa(self) -> str:
        return self.cstr(self.fn("odin_current_isa")())

    def available_isas(self) -> list[str]:
        return [s for s in self.cstr(self.fn("odin_available_isas")()).split(",") if s]

    def set_isa(self, name: str) -> None:
        p = self.put(np.frombuffer(name.encode() + b"\0", np.uint8))
        try:
            self.check(self.fn("odin_set_isa")(p), "set_isa")
        finally:
            self.free(p)

    def simd(self) -> bool:
        return bool(self.fn("odin_wasm_simd")())


class _WasmModel:
    """What the GPT and the RWKV handles share: the C functions of both are named
    ``<prefix>_params``, ``<prefix>_ws_create``, ``<prefix>_forward`` ... with the same
    signatures, so only creation, the training-step call and generation differ."""

    prefix = ""

    def _init_handle(self, rt: WasmOdin, create_status: int, what: str) -> None:
        rt.check(create_status, what)
        self.h = int(rt.view(self._scratch, 1, np.uint32)[0])
        self.n_params = int(rt.fn(f"{self.prefix}_num_params")(self.h))
        self._ws = 0
        self._ws_shape = (0, 0)
        self._inputs: list[int] = []
        self._gen = 0    # KV cache (GPT) or recurrent state (RWKV)
        self._gen_b = 0

    def _free_gen(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        rt = self.rt
        for p in self._inputs:
            rt.free(p)
        self._inputs = []
        if self._ws:
            rt.fn(f"{self.prefix}_ws_free")(self._ws)
        if self._gen:
            self._free_gen()
        rt.fn(f"{self.prefix}_free")(self.h)
        rt.free(self._scratch)
        self._ws = self._gen = self.h = 0

    def _block(self, what: str) -> np.ndarray:
        return self.rt.view(int(self.rt.fn(f"{self.prefix}_{what}")(self.h)), self.n_params)

    @property
    def params(self) -> np.ndarray:
        return self._block("params")

    @property
    def grads(self) -> np.ndarray:
        return self._block("grads")

    @property
    def adam_m(self) -> np.ndarray:
        return self._block("adam_m")

    @property
    def adam_v(self) -> np.ndarray:
        return self._block("adam_v")

    def _workspace(self, B: int, T: int) -> int:
        if not self._ws or B > self._ws_shape[0] or T > self._ws_shape[1]:
            if self._ws:
                self.rt.fn(f"{self.prefix}_ws_free")(self._ws)
                self._ws = 0
            B2, T2 = max(B, self._ws_shape[0]), max(T, self._ws_shape[1])
            self.rt.check(self.rt.fn(f"{self.prefix}_ws_create")(self._scratch, self.h, B2, T2),
                          f"{self.prefix}_ws_create")
            self._ws = int(self.rt.view(self._scratch, 1, np.uint32)[0])
            self._ws_shape = (B2, T2)
        return self._ws

    def _checked(self, tokens: object, targets: object, mask: object
                 ) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """The int32 / uint8 buffers the module reads, checked as the native models check
        them (odin.validate): no id wrapped, truncated or out of the vocabulary."""
        from odin import validate

        tokens = validate.token_ids(tokens, "tokens", self.vocab_size, ndim=2)
        checked_mask = None if mask is None else validate.loss_mask(mask, "mask", tokens.shape)
        if targets is not None:
            targets = validate.token_ids(targets, "targets", self.vocab_size, shape=tokens.shape,
                                         counted=checked_mask)
        return tokens, targets, checked_mask

    def _set_inputs(self, *arrays: Optional[np.ndarray]) -> list[int]:
        for p in self._inputs:
            self.rt.free(p)
        self._inputs = [self.rt.put(a) if a is not None else 0 for a in arrays]
        return self._inputs

    def forward(self, tokens: np.ndarray, targets: Optional[np.ndarray] = None,
                mask: Optional[np.ndarray] = None) -> Optional[float]:
        tokens, targets, mask = self._checked(tokens, targets, mask)
        B, T = tokens.shape
        ws = self._workspace(B, T)
        tp, gp, mp = self._set_inputs(tokens, targets, mask)
        loss_p = self._scratch + 8
        self.rt.check(self.rt.fn(f"{self.prefix}_forward")(self.h, ws, tp, gp, mp, B, T, loss_p),
                      f"{self.prefix}_forward")
        self._bt = (B, T)
        return float(self.rt.view(loss_p, 1)[0]) if targets is not None else None

    def logits(self) -> np.ndarray:
        B, T = self._bt
        p = int(self.rt.fn(f"{self.prefix}_ws_logits")(self._ws))
        return self.rt.get(p, B * T * self.vocab_size).reshape(B, T, self.vocab_size)

    def zero_grad(self) -> None:
        self.grads[...] = 0.0

    def backward(self, dloss: float = 1.0) -> None:
        g = int(self.rt.fn(f"{self.prefix}_grads")(self.h))
        self.rt.check(self.rt.fn(f"{self.prefix}_backward")(self.h, self._ws, g, float(dloss)),
                      f"{self.prefix}_backward")

    def adamw_step(self, *, lr: float, step: int, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 1.0) -> float:
        norm_p = self._scratch + 12
        self.rt.check(self.rt.fn(f"{self.prefix}_adamw_step")(
            self.h, float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), float(grad_clip),
            int(step), norm_p), f"{self.prefix}_adamw_step")
        return float(self.rt.view(norm_p, 1)[0])

    def _train_call(self, ws: int, tp: int, gp: int, mp: int, B: int, T: int, hyper: tuple, loss_p: int,
                    norm_p: int) -> int:
        raise NotImplementedError

    def train_step(self, tokens: np.ndarray, targets: np.ndarray, mask: Optional[np.ndarray], *, lr: float,
                   step: int, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 1.0) -> tuple[float, float]:
        """odin_wasm_<arch>_train_step: zero grads, forward, backward, clip + AdamW. (loss, norm)."""
        tokens, targets, mask = self._checked(tokens, targets, mask)
        B, T = tokens.shape
        ws = self._workspace(B, T)
        tp, gp, mp = self._set_inputs(tokens, targets, mask)
        loss_p, norm_p = self._scratch + 8, self._scratch + 12
        hyper = (float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), float(grad_clip), int(step))
        self.rt.check(self._train_call(ws, tp, gp, mp, B, T, hyper, loss_p, norm_p), "wasm train step")
        self._bt = (B, T)
        return float(self.rt.view(loss_p, 1)[0]), float(self.rt.view(norm_p, 1)[0])

    def _greedy_call(self, arr: np.ndarray, lens: np.ndarray, B: int, longest: int, n_new: int, end_id: int,
                     out: np.ndarray, out_lens: np.ndarray) -> None:
        raise NotImplementedError

    def _max_new(self, longest: int, max_new: int) -> int:
        return max_new

    def generate_greedy(self, prompts: list[list[int]], max_new: int, end_id: int) -> list[list[int]]:
        """<prefix>_generate_greedy over all prompts in one batch (as the native generate_greedy)."""
        B = len(prompts)
        longest = max(len(p) for p in prompts)
        arr = np.zeros((B, longest), np.int32)
        for i, p in enumerate(prompts):
            arr[i, :len(p)] = p
        lens = np.array([len(p) for p in prompts], np.int32)
        n_new = self._max_new(longest, max_new)
        out = np.zeros((B, n_new), np.int32)
        out_lens = np.zeros(B, np.int32)
        self._greedy_call(arr, lens, B, longest, n_new, end_id, out, out_lens)
        return [out[i, :out_lens[i]].tolist() for i in range(B)]


class WasmGPT(_WasmModel):
    """The GPT of csrc/gpt.c inside a wasm instance: the same calls as odin.model.GPT."""

    prefix = "odin_gpt"

    def __init__(self, rt: WasmOdin, vocab_size: int, context: int, n_layer: int, n_head: int, d_model: int,
                 ln_eps: float = 1e-5) -> None:
        self.rt = rt
        self.vocab_size, self.context = vocab_size, context
        self._scratch = rt.malloc(64)  # out-parameters: handles, loss, norm
        self._init_handle(rt, rt.fn("odin_gpt_create")(self._scratch, vocab_size, context, n_layer, n_head, d_model,
                                                       float(ln_eps)), "gpt_create")

    def _free_gen(self) -> None:
        self.rt.fn("odin_gpt_cache_free")(self._gen)

    def _train_call(self, ws, tp, gp, mp, B, T, hyper, loss_p, norm_p):
        return self.rt.fn("odin_wasm_gpt_train_step")(self.h, ws, tp, 0, gp, mp, B, T, *hyper, loss_p, norm_p)

    def _cache_for(self, B: int) -> int:
        if not self._gen or self._gen_b < B:
            if self._gen:
                self._free_gen()
                self._gen = 0
            self.rt.check(self.rt.fn("odin_gpt_cache_create")(self._scratch, self.h, B), "gpt_cache_create")
            self._gen = int(self.rt.view(self._scratch, 1, np.uint32)[0])
            self._gen_b = B
        return self._gen

    def decode(self, tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        """One KV-cache step for B sequences; returns logits [B, V]."""
        B = len(tokens)
        cache = self._cache_for(B)
        tp = self.rt.put(np.asarray(tokens, np.int32))
        pp = self.rt.put(np.asarray(positions, np.int32))
        lp = self.rt.malloc(4 * B * self.vocab_size)
        try:
            self.rt.check(self.rt.fn("odin_gpt_decode")(self.h, cache, tp, pp, B, lp), "gpt_decode")
            return self.rt.get(lp, B * self.vocab_size).reshape(B, self.vocab_size)
        finally:
            for p in (tp, pp, lp):
                self.rt.free(p)

    def _max_new(self, longest: int, max_new: int) -> int:
        return max(1, min(max_new, self.context - longest + 1))

    def _greedy_call(self, arr, lens, B, longest, n_new, end_id, out, out_lens):
        self.rt.run("odin_gpt_generate_greedy", self.h, self._cache_for(B), arr, lens, B, longest, n_new, end_id,
                    out, out_lens)


class WasmRWKV(_WasmModel):
    """The RWKV-4 of csrc/rwkv.c inside a wasm instance: the same calls as odin.rwkv.RWKV;
    generation through the recurrent state (no length limit)."""

    prefix = "odin_rwkv"

    def __init__(self, rt: WasmOdin, vocab_size: int, n_layer: int, d_model: int, d_ffn: int = 0,
                 ln_eps: float = 1e-5, context: int = 0) -> None:
        self.rt = rt
        self.vocab_size, self.context = vocab_size, context
        self.d_ffn = d_ffn or 4 * d_model
        self._scratch = rt.malloc(64)
        self._init_handle(rt, rt.fn("odin_rwkv_create")(self._scratch, vocab_size, n_layer, d_model, self.d_ffn,
                                                        float(ln_eps)), "rwkv_create")

    def _free_gen(self) -> None:
        self.rt.fn("odin_rwkv_state_free")(self._gen)

    def _train_call(self, ws, tp, gp, mp, B, T, hyper, loss_p, norm_p):
        return self.rt.fn("odin_wasm_rwkv_train_step")(self.h, ws, tp, gp, mp, B, T, *hyper, loss_p, norm_p)

    def state(self, B: int) -> int:
        """The recurrent state of (at least) B sequences, created on first use."""
        if not self._gen or self._gen_b < B:
            if self._gen:
                self._free_gen()
                self._gen = 0
            self.rt.check(self.rt.fn("odin_rwkv_state_create")(self._scratch, self.h, B), "rwkv_state_create")
            self._gen = int(self.rt.view(self._scratch, 1, np.uint32)[0])
            self._gen_b = B
        return self._gen

    def state_bytes(self) -> int:
        return int(self.rt.fn("odin_rwkv_state_bytes")(self.state(1)))

    def reset(self, b: int = -1) -> None:
        self.rt.check(self.rt.fn("odin_rwkv_state_reset")(self.state(1), int(b)), "rwkv_state_reset")

    def decode(self, tokens: Sequence[int]) -> np.ndarray:
        """Feed one token per sequence and advance the state; returns logits [B, V]."""
        B = len(tokens)
        state = self.state(B)
        tp = self.rt.put(np.asarray(tokens, np.int32))
        lp = self.rt.malloc(4 * B * self.vocab_size)
        try:
            self.rt.check(self.rt.fn("odin_rwkv_decode")(self.h, state, tp, B, lp), "rwkv_decode")
            return self.rt.get(lp, B * self.vocab_size).reshape(B, self.vocab_size)
        finally:
            self.rt.free(tp)
            self.rt.free(lp)

    def _greedy_call(self, arr, lens, B, longest, n_new, end_id, out, out_lens):
        self.rt.run("odin_rwkv_generate_greedy", self.h, self.state(B), arr, lens, B, longest, n_new, end_id,
                    out, out_lens)

