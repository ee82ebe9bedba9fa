"""Blueprint: every dimension derived from a ModelConfig, the exact parameter layout, and a
memory estimate.

Parameter layout (GPT, llm.c order — the C parameter block is laid out exactly like this,
contiguous float32, and checkpoints use these names)::

    wte[V, C]  wpe[context, C]
    per layer i: h.i.ln1_w[C] h.i.ln1_b[C] h.i.qkv_w[3C, C] h.i.qkv_b[3C]
                 h.i.attproj_w[C, C] h.i.attproj_b[C] h.i.ln2_w[C] h.i.ln2_b[C]
                 h.i.fc_w[4C, C] h.i.fc_b[4C] h.i.fcproj_w[C, 4C] h.i.fcproj_b[C]
    lnf_w[C]  lnf_b[C]

The LM head is tied to ``wte``. Total = V*C + context*C + L*(12*C*C + 13*C) + 2*C.
``Blueprint(config)`` returns an :class:`odin.blueprint_rwkv.RWKVBlueprint` for arch "rwkv".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from odin.config import ModelConfig

FLOAT_BYTES = 4
QUANT_BLOCK = 32  # weights per block of every quantized format (odin.quant)
GPT_MATRICES: tuple[str, ...] = ("qkv_w", "attproj_w", "fc_w", "fcproj_w")  # per layer


class TensorSpec(NamedTuple):
    """A tensor as a checkpoint stores it: name, shape, dtype ("float32" or "uint8": a
    quantized tensor's [rows, row bytes]) and weight type ("f32", "q8_0", ...)."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    type: str


LAYER_PARAM_NAMES: tuple[str, ...] = (
    "ln1_w", "ln1_b", "qkv_w", "qkv_b", "attproj_w", "attproj_b",
    "ln2_w", "ln2_b", "fc_w", "fc_b", "fcproj_w", "fcproj_b",
)


def format_bytes(n_bytes: float, digits: int = 2) -> str:
    """Binary units, e.g. 1536 -> '1.50 KiB' (digits after the point for KiB and up)."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class MemoryEstimate:
    """Formula-based estimate (not a measurement) of float32 memory for one (B, T)."""

    batch: int
    seq_len: int
    parameters: int  # bytes
    gradients: int
    adam_moments: int  # m and v together
    activations: int
    activation_parts: tuple[tuple[str, int], ...]  # (what, bytes), summed over layers

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.adam_moments + self.activations


class Blueprint:
    """Derived dimensions and parameter shapes of one model; validates the config."""

    def __new__(cls, config: "ModelConfig") -> "Blueprint":
        # one entry point for every architecture: Blueprint(config) picks the subclass
        if cls is Blueprint and config.arch == "rwkv":
            from odin.blueprint_rwkv import RWKVBlueprint

            return super().__new__(RWKVBlueprint)
        if cls is Blueprint and config.arch != "gpt":
            raise NotImplementedError(f"no blueprint for arch {config.arch!r} (known: 'gpt', 'rwkv')")
        return super().__new__(cls)

    def __init__(self, config: "ModelConfig") -> None:
        if config.d_ffn not in (0, 4 * config.d_model):
            raise ValueError(f"[model].d_ffn = {config.d_ffn}: the GPT MLP is 4 x d_model wide; "
                             f"leave d_ffn at 0 (or {4 * config.d_model}) for arch 'gpt'")
        if config.d_model % config.n_head != 0:
            raise ValueError(
                f"[model].d_model ({config.d_model}) must be divisible by [model].n_head "
                f"({config.n_head}); e.g. n_head = {_divisor_hint(config.d_model, config.n_head)}"
            )
        self.config = config
        self.n_layer = config.n_layer
        self.d_model = config.d_model
        self.n_head = config.n_head
        self.head_size = config.d_model // config.n_head
        self.context = config.context
        self.vocab_size = config.vocab_size
        self.d_ff = 4 * config.d_model
        self.abacus = getattr(config, "abacus", 0)

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        C, V = self.d_model, self.vocab_size
        shapes: list[tuple[str, tuple[int, ...]]] = [("wte", (V, C)), ("wpe", (self.context, C))]
        per_layer = {
            "ln1_w": (C,), "ln1_b": (C,), "qkv_w": (3 * C, C), "qkv_b": (3 * C,),
            "attproj_w": (C, C), "attproj_b": (C,), "ln2_w": (C,), "ln2_b": (C,),
            "fc_w": (4 * C, C), "fc_b": (4 * C,), "fcproj_w": (C, 4 * C), "fcproj_b": (C,),
        }
        for layer in range(self.n_layer):
            shapes.extend((f"h.{layer}.{name}", per_layer[name]) for name in LAYER_PARAM_NAMES)
        shapes.extend([("lnf_w", (C,)), ("lnf_b", (C,))])
        if self.abacus:
            shapes.append(("wab", (self.abacus, C)))
        return shapes

    def quantizable(self) -> dict[str, str]:
        """The tensors a quantized model keeps in block formats (csrc/gpt.c's odin_gpt_create_q):
        name -> "embed" (the token embedding, which is also the tied head: WeightTypes.embed) or
        "matrix" (the layers' matrices: WeightTypes.matrix). Every other tensor stays float32."""
        roles = {"wte": "embed"}
        for layer in range(self.n_layer):
            roles.update({f"h.{layer}.{name}": "matrix" for name in GPT_MATRICES})
        return roles

    def tensor_specs(self, weights: Any = None) -> list[TensorSpec]:
        """Every tensor as a checkpoint stores it, in parameter-block order: float32 of its
        shape, or, for a tensor `weights` (odin.model.WeightTypes; None: all float32) quantizes,
        uint8 [rows, bytes of a row of blocks]. A row that is not whole 32-weight blocks is a
        ValueError naming the tensor, its row length and the dimension behind it."""
        roles = self.quantizable() if weights is not None and weights.quantized else {}
        specs = []
        for name, shape in self.param_shapes():
            kind = getattr(weights, roles[name]) if name in roles else "f32"
            if kind == "f32":
                specs.append(TensorSpec(name, shape, "float32", "f32"))
                continue
            from odin.quant.formats import row_bytes

            rows, cols = shape
            if cols % QUANT_BLOCK:
                dim = "d_model" if cols == self.d_model else "d_ffn" if self.config.arch == "rwkv" else "4 x d_model"
                raise ValueError(f"cannot store {name} as {kind}: its rows hold {cols} weights ({dim} = {cols}) and "
                                 f"a {kind} block holds {QUANT_BLOCK}; {dim} must be a multiple of {QUANT_BLOCK}")
            specs.append(TensorSpec(name, (rows, row_bytes(kind, cols)), "uint8", kind))
        return specs

    def weight_bytes(self, weights: Any = None) -> int:
        """Bytes of every weight as stored with `weights` (None: float32)."""
        if weights is None or not weights.quantized:
            return self.n_params * FLOAT_BYTES
        return sum(math.prod(spec.shape) * (1 if spec.dtype == "uint8" else FLOAT_BYTES)
                   for spec in self.tensor_specs(weights))

    def param_offsets(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """name -> (offset in floats into the contiguous parameter block, shape)."""
        offsets: dict[str, tuple[int, tuple[int, ...]]] = {}
        position = 0
        for name, shape in self.param_shapes():
            offsets[name] = (position, shape)
            position += math.prod(shape)
        return offsets

    @property
    def n_params(self) -> int:
        C, V, L = self.d_model, self.vocab_size, self.n_layer
        return V * C + self.context * C + L * (12 * C * C + 13 * C) + 2 * C + self.abacus * C

    @property
    def params_per_layer(self) -> int:
        return 12 * self.d_model * self.d_model + 13 * self.d_model

    def describe_params(self) -> list[str]:
        """The header and parameter table of ``odin model info``."""
        return _gpt_param_lines(self)

    def check_sequence_length(self, n_tokens: int) -> None:
        """``n_tokens`` is the context a batch needs (see odin.data.batching.max_sequence_length)."""
        if n_tokens > self.context:
            raise ValueError(
                f"context must be >= the longest example ({n_tokens} tokens), but [model].context "
                f"is {self.context}; raise [model].context or shorten examples"
            )

    def generation_floats(self, batch: int = 1) -> int:
        """The KV cache of the whole context + a decode step's scratch (odin_gpt_cache_create)."""
        B, C = batch, self.d_model
        return 2 * self.n_layer * B * self.context * C + B * 14 * C + self.context + B * self.vocab_size

    def memory_estimate(self, batch: int, seq_len: int) -> MemoryEstimate:
        if batch < 1 or seq_len < 1:
            raise ValueError(f"batch and seq_len must be >= 1, got batch={batch}, seq_len={seq_len}")
        if seq_len > self.context:
            raise ValueError(f"seq_len ({seq_len}) must be <= [model].context ({self.context})")
        B, T, C, V, L, NH = batch, seq_len, self.d_model, self.vocab_size, self.n_layer, self.n_head
        BT = B * T
        # exactly the workspace csrc/gpt.c allocates (odin_gpt_ws_bytes; a test compares them)
        parts = (
            ("embedding output", BT * C),
            ("layer norms (out + mean/rstd)", L * 2 * (BT * C + 2 * BT)),
            ("qkv", L * 3 * BT * C),
            ("attention weights", L * B * NH * T * T),
            ("attention out", L * BT * C),
            ("residuals", L * 2 * BT * C),
            ("mlp fc + gelu", L * 2 * 4 * BT * C),
            ("final layer norm", BT * C + 2 * BT),
            ("logits, losses", BT * V + 2 * BT),
            ("backward buffers (shared by layers)", BT * (14 * C + V) + (T + 15) // 16 * 16 * (4 * (C // NH) + 2)),
        )
        parts_bytes = tuple((name, count * FLOAT_BYTES) for name, count in parts)
        param_bytes = self.n_params * FLOAT_BYTES
        return MemoryEstimate(
            batch=B,
            seq_len=T,
            parameters=param_bytes,
            gradients=param_bytes,
            adam_moments=2 * param_bytes,
            activations=sum(size for _, size in parts_bytes),
            activation_parts=parts_bytes,
        )


# the slot gradient buffers csrc/spheres.c keeps: one per slot with rows while they fit in this
# many bytes, else one per thread (SLOT_BUDGET_FLOATS there)
SLOT_BUDGET_BYTES = 256 << 20
N_SPHERES = 12


@dataclass(frozen=True)
class TrainingMemory:
    """What training on the spheres allocates (formula, float32): the model's four parameter
    blocks, the slot gradient buffers, one workspace per thread for a slot's rows."""

    threads: int
    model_blocks: int  # parameters, gradients, AdamW m and v (bytes)
    slot_buffers: int  # how many
    slot_bytes: int
    slot_rows: int  # rows of the largest slot: what each thread's workspace holds
    workspace_bytes: int  # per thread

    @property
    def total(self) -> int:
        return self.model_blocks + self.slot_bytes + self.threads * self.workspace_bytes


def slot_buffer_count(n_params: int, batch: int, threads: int) -> int:
    """csrc/spheres.c's automatic choice (odin_spheres_slot_buffers; a test compares them)."""
    slots = min(batch, N_SPHERES)
    if slots * n_params * FLOAT_BYTES > SLOT_BUDGET_BYTES and threads < slots:
        return threads
    return slots


def _divisor_hint(d_model: int, n_head: int) -> int:
    divisors = [d for d in range(1, d_model + 1) if d_model % d == 0]
    return min(divisors, key=lambda d: (abs(d - n_head), d))


def training_memory(blueprint: Blueprint, batch: int, seq_len: int, threads: int) -> TrainingMemory:
    """Memory of `odin train` on the spheres for this batch, sequence length and thread count."""
    rows = -(-batch // N_SPHERES)
    n_params = blueprint.n_params
    buffers = slot_buffer_count(n_params, batch, threads)
    return TrainingMemory(threads=threads, model_blocks=4 * n_params * FLOAT_BYTES, slot_buffers=buffers,
                          slot_bytes=buffers * n_params * FLOAT_BYTES, slot_rows=rows,
                          workspace_bytes=blueprint.memory_estimate(rows, seq_len).activations)


@dataclass(frozen=True)
class AnsweringMemory:
    """What a model that only answers allocates (odin-infer, odin eval, the chat): its weights
    (no gradients, no AdamW moments) and one sequence's generation state."""

    weights: int
    state: int

    @property
    def total(self) -> int:
        return self.weights + self.state


def answering_memory(blueprint: Blueprint, weights: Any = None) -> AnsweringMemory:
    """`weights`: the odin.model.WeightTypes the model holds (None: float32)."""
    return AnsweringMemory(weights=blueprint.weight_bytes(weights), state=blueprint.generation_floats(1) * FLOAT_BYTES)


def describe(blueprint: Blueprint, batch: int, seq_len: int, threads: int | None = None, weights: Any = None) -> str:
    """Human-readable summary for ``odin model info``; `weights` (odin.model.WeightTypes) of a
    quantized checkpoint: its stored bytes, and no training sections (it cannot train)."""
    lines = blueprint.describe_params() + [""] + _weight_lines(blueprint, weights) + [""]
    lines += _answering_lines(blueprint, weights) + [""]
    if weights is not None and weights.quantized:
        return "\n".join(lines + ["training: none; a quantized model answers but cannot train (train the float32 "
                                   "checkpoint it was made from)"])
    lines += _memory_lines(blueprint, batch, seq_len)
    if threads is not None:
        lines += [""] + _training_lines(blueprint, batch, seq_len, threads)
    return "\n".join(lines)


def _weight_lines(blueprint: Blueprint, weights: Any) -> list[str]:
    """The weight types and the bytes the weights take."""
    stored = blueprint.weight_bytes(weights)
    if weights is None or not weights.quantized:
        return [f"weights     float32, every tensor: {stored:,} B ({format_bytes(stored)})"]
    embed = "embedding (the tied head)"
    embed_type = "float32" if weights.embed == "f32" else weights.embed
    kinds = (f"{weights.matrix} matrices, {embed} {embed_type}" if weights.matrix != weights.embed
             else f"{weights.matrix} matrices and {embed}")
    f32 = blueprint.n_params * FLOAT_BYTES
    return [f"weights     {kinds}, other tensors float32: {stored:,} B ({format_bytes(stored)}; "
            f"float32: {format_bytes(f32)}, {f32 / stored:.2f}x)"]


def _answering_lines(blueprint: Blueprint, weights: Any = None) -> list[str]:
    memory = answering_memory(blueprint, weights)
    state = "KV cache of the whole context" if blueprint.config.arch == "gpt" else "recurrent state"
    formula = (f"{blueprint.n_params:,} x 4 B" if weights is None or not weights.quantized
               else weights.describe())
    rows = [("weights (no gradients, no AdamW moments)", formula, memory.weights),
            (f"{state}, 1 sequence", "", memory.state), ("total", "", memory.total)]
    lines = ["answering (odin-infer, odin eval, the dashboard chat): what the model allocates; the peak RSS "
             "adds the Python process (~40 MiB with odin and its libraries imported)"]
    for name, formula, size in rows:
        lines.append(f"  {name:<42}{formula:<26}{size:>16,} B  {format_bytes(size):>11}")
    return lines


def _training_lines(blueprint: Blueprint, batch: int, seq_len: int, threads: int) -> list[str]:
    memory = training_memory(blueprint, batch, seq_len, threads)
    P = blueprint.n_params
    s = "s" if threads > 1 else ""
    rows = [
        ("parameters, gradients, AdamW m, v", f"4 x {P:,} x 4 B", memory.model_blocks),
        (f"slot gradient buffers ({memory.slot_buffers})", f"{memory.slot_buffers} x {P:,} x 4 B", memory.slot_bytes),
        (f"workspaces ({threads} thread{s})", f"{threads} x activations({memory.slot_rows} x {seq_len})",
         threads * memory.workspace_bytes),
        ("total", "", memory.total),
    ]
    lines = [f"training on the spheres: batch {batch} x {seq_len} tokens, {threads} thread{s} (what odin "
             f"train allocates; its peak RSS adds the Python process: ~34 MiB with odin imported, plus the data)"]
    for name, formula, size in rows:
        lines.append(f"  {name:<36}{formula:<32}{size:>16,} B  {format_bytes(size):>11}")
    lines.append(f"  slot buffers: one per slot with rows (min(batch, {N_SPHERES})) while they fit in "
                 f"{format_bytes(SLOT_BUDGET_BYTES, 0)}, else one per thread; each thread's workspace "
                 f"holds one slot (ceil(batch / {N_SPHERES}) rows)")
    return lines


def _gpt_param_lines(blueprint: Blueprint) -> list[str]:
    config = blueprint.config
    C = blueprint.d_model
    lines = [
        f"model       {config.arch}: {blueprint.n_layer} layers, d_model {C}, "
        f"{blueprint.n_head} heads of {blueprint.head_size}, mlp {blueprint.d_ff}",
        f"            context {blueprint.context}, vocab {blueprint.vocab_size}, "
        f"ln_eps {config.ln_eps:g}, init_seed {config.init_seed}, LM head tied to wte",
        f"            positions {config.positions}"
        + {"learned": " (wpe)", "none": " (wpe held at zero)", "alibi": " (wpe held at zero, ALiBi biases)"}.get(
            config.positions, ""),
        "",
        "parameters",
        f"  {'wte':<22}{str([blueprint.vocab_size, C]):>16}{blueprint.vocab_size * C:>16,}",
        f"  {'wpe':<22}{str([blueprint.context, C]):>16}{blueprint.context * C:>16,}",
        f"  {'per layer':<22}{'':>16}{blueprint.params_per_layer:>16,}",
        f"  {f'x {blueprint.n_layer} layers':<22}{'':>16}{blueprint.n_layer * blueprint.params_per_layer:>16,}",
        f"  {'lnf (w, b)':<22}{f'2 x [{C}]':>16}{2 * C:>16,}",
        *([f"  {'wab (Abacus)':<22}{str([blueprint.abacus, C]):>16}{blueprint.abacus * C:>16,}"]
          if blueprint.abacus else []),
        f"  {'total':<22}{'':>16}{blueprint.n_params:>16,}",
    ]
    return lines


def _memory_lines(blueprint: Blueprint, batch: int, seq_len: int) -> list[str]:
    memory = blueprint.memory_estimate(batch, seq_len)
    lines = [f"memory for batch {batch} x {seq_len} tokens (formula-based estimate, float32)"]
    rows = [
        ("parameters", memory.parameters),
        ("gradients", memory.gradients),
        ("AdamW moments m, v", memory.adam_moments),
        ("activations", memory.activations),
    ]
    rows += [(f"  {name}", size) for name, size in memory.activation_parts]
    rows.append(("total", memory.total))
    for name, size in rows:
        lines.append(f"  {name:<34}{size:>16,} B  {format_bytes(size):>11}")
    return lines
