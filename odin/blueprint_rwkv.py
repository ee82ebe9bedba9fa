"""Blueprint of the RWKV-4 model: dimensions, the exact parameter layout, a memory estimate.

Parameter layout (the C block in csrc/rwkv.c, contiguous float32; checkpoints use these names)::

    emb[V, C]  ln0_w[C]  ln0_b[C]
    per layer i: h.i.ln1_w[C] h.i.ln1_b[C] h.i.att_time_decay[C] h.i.att_time_first[C]
                 h.i.att_time_mix_k[C] h.i.att_time_mix_v[C] h.i.att_time_mix_r[C]
                 h.i.att_key_w[C, C] h.i.att_value_w[C, C] h.i.att_receptance_w[C, C]
                 h.i.att_output_w[C, C] h.i.ln2_w[C] h.i.ln2_b[C] h.i.ffn_time_mix_k[C]
                 h.i.ffn_time_mix_r[C] h.i.ffn_key_w[F, C] h.i.ffn_receptance_w[C, C]
                 h.i.ffn_value_w[C, F]
    ln_out_w[C]  ln_out_b[C]

The head is tied to ``emb``. Total = V*C + 4*C + L*(5*C*C + 2*F*C + 11*C). There are no
position embeddings: ``context`` only sizes training sequences; generation runs the
recurrent form, whose state does not grow with the sequence.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from odin.blueprint import FLOAT_BYTES, Blueprint, MemoryEstimate

if TYPE_CHECKING:
    from odin.config import ModelConfig

RWKV_LAYER_PARAM_NAMES: tuple[str, ...] = (
    "ln1_w", "ln1_b", "att_time_decay", "att_time_first", "att_time_mix_k", "att_time_mix_v",
    "att_time_mix_r", "att_key_w", "att_value_w", "att_receptance_w", "att_output_w",
    "ln2_w", "ln2_b", "ffn_time_mix_k", "ffn_time_mix_r", "ffn_key_w", "ffn_receptance_w", "ffn_value_w",
)

RWKV_MATRICES: tuple[str, ...] = ("att_key_w", "att_value_w", "att_receptance_w", "att_output_w", "ffn_key_w",
                                  "ffn_receptance_w", "ffn_value_w")


class RWKVBlueprint(Blueprint):
    """Derived dimensions and parameter shapes of an RWKV-4 model."""

    def __init__(self, config: "ModelConfig") -> None:
        if config.abacus:
            raise ValueError("[model].abacus is a GPT option (digit-place embeddings); set abacus = 0 "
                             "for arch 'rwkv'")
        self.config = config
        self.n_layer = config.n_layer
        self.d_model = config.d_model
        self.n_head = 1
        self.head_size = config.d_model
        self.context = config.context
        self.vocab_size = config.vocab_size
        self.d_ff = config.d_ffn or 4 * config.d_model
        self.abacus = 0

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        C, V, F = self.d_model, self.vocab_size, self.d_ff
        shapes: list[tuple[str, tuple[int, ...]]] = [("emb", (V, C)), ("ln0_w", (C,)), ("ln0_b", (C,))]
        matrices = {"att_key_w": (C, C), "att_value_w": (C, C), "att_receptance_w": (C, C),
                    "att_output_w": (C, C), "ffn_key_w": (F, C), "ffn_receptance_w": (C, C),
                    "ffn_value_w": (C, F)}
        for layer in range(self.n_layer):
            shapes.extend((f"h.{layer}.{name}", matrices.get(name, (C,))) for name in RWKV_LAYER_PARAM_NAMES)
        shapes.extend([("ln_out_w", (C,)), ("ln_out_b", (C,))])
        return shapes

    def quantizable(self) -> dict[str, str]:
        """As Blueprint.quantizable (csrc/rwkv.c's odin_rwkv_create_q): emb and the seven matrices per layer."""
        roles = {"emb": "embed"}
        for layer in range(self.n_layer):
            roles.update({f"h.{layer}.{name}": "matrix" for name in RWKV_MATRICES})
        return roles

    @property
    def n_params(self) -> int:
        C, V = self.d_model, self.vocab_size
        return V * C + 4 * C + self.n_layer * self.params_per_layer

    @property
    def params_per_layer(self) -> int:
        C, F = self.d_model, self.d_ff
        return 5 * C * C + 2 * F * C + 11 * C

    def describe_params(self) -> list[str]:
        config, C, V = self.config, self.d_model, self.vocab_size
        return [
            f"model       rwkv (RWKV-4): {self.n_layer} layers, d_model {C}, channel-mix {self.d_ff}",
            f"            training context {self.context} (no position limit when generating), vocab {V}, "
            f"ln_eps {config.ln_eps:g}, init_seed {config.init_seed}, head tied to emb",
            "",
            "parameters",
            f"  {'emb':<22}{str([V, C]):>16}{V * C:>16,}",
            f"  {'ln0, ln_out (w, b)':<22}{f'4 x [{C}]':>16}{4 * C:>16,}",
            f"  {'per layer':<22}{'':>16}{self.params_per_layer:>16,}",
            f"  {f'x {self.n_layer} layers':<22}{'':>16}{self.n_layer * self.params_per_layer:>16,}",
            f"  {'total':<22}{'':>16}{self.n_params:>16,}",
        ]

    def generation_floats(self, batch: int = 1) -> int:
        """The recurrent state (L x 5 x C per sequence) + a decode step's scratch (odin_rwkv_state_create)."""
        B, C, F = batch, self.d_model, self.d_ff
        return self.n_layer * 5 * B * C + B * (12 * C + 2 * F + self.vocab_size) + 2 * B

    def memory_estimate(self, batch: int, seq_len: int) -> MemoryEstimate:
        if batch < 1 or seq_len < 1:
            raise ValueError(f"batch and seq_len must be >= 1, got batch={batch}, seq_len={seq_len}")
        if seq_len > self.context:
            raise ValueError(f"seq_len ({seq_len}) must be <= [model].context ({self.context})")
        BT, C, V, L, F = batch * seq_len, self.d_model, self.vocab_size, self.n_layer, self.d_ff
        # exactly the workspace csrc/rwkv.c allocates (odin_rwkv_ws_bytes; a test compares them)
        parts = (
            ("embedding + ln0", 2 * BT * C + 2 * BT),
            ("per layer: ln1, k, v, r, wkv, residuals, ln2, channel-mix", L * BT * (10 * C + F + 4)),
            ("ln_out, logits, losses", BT * C + 2 * BT + BT * V + 2 * BT),
            ("recomputed mixes (shared by layers)", BT * (4 * C + F)),
            ("backward buffers (shared by layers)", BT * (10 * C + F + V) + 3 * seq_len * C),
        )
        parts_bytes = tuple((name, count * FLOAT_BYTES) for name, count in parts)
        param_bytes = self.n_params * FLOAT_BYTES
        return MemoryEstimate(batch=batch, seq_len=seq_len, parameters=param_bytes, gradients=param_bytes,
                              adam_moments=2 * param_bytes, activations=sum(b for _, b in parts_bytes),
                              activation_parts=parts_bytes)

    def state_bytes(self, batch: int = 1) -> int:
        """Recurrent generation state: per layer two shift vectors and three WKV accumulators."""
        return batch * self.n_layer * 5 * self.d_model * FLOAT_BYTES
