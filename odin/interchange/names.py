"""One name map per architecture between ODIN's tensors and Hugging Face's, used by export
and import alike so the two directions cannot drift.

ODIN's GPT is GPT-2 (``gpt2``: pre-LN, tanh GELU, learned positions, tied head) and its RWKV
is RWKV-4 (``rwkv``, head tied to the embedding). The only differences are names and two
layouts: GPT-2's ``Conv1D`` keeps its weights as [in, out] where ODIN keeps [out, in], and
transformers' RWKV keeps the time-mix vectors as [1, 1, C]. Each :class:`TensorName` says how
an ODIN tensor becomes its HF tensor and back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from odin.blueprint import LAYER_PARAM_NAMES
from odin.blueprint_rwkv import RWKV_LAYER_PARAM_NAMES

TRANSPOSE = "transpose"   # GPT-2 Conv1D: [in, out] in HF, [out, in] in ODIN
ROW_1_1 = "row_1_1"       # RWKV time mix: [1, 1, C] in HF, [C] in ODIN
SAME = "same"


@dataclass(frozen=True)
class TensorName:
    odin: str
    hf: str
    layout: str = SAME

    def to_hf(self, array: np.ndarray) -> np.ndarray:
        if self.layout == TRANSPOSE:
            return np.ascontiguousarray(array.T)
        if self.layout == ROW_1_1:
            return array.reshape(1, 1, -1)
        return array

    def to_odin(self, array: np.ndarray, odin_shape: tuple[int, ...]) -> np.ndarray:
        """The HF tensor in ODIN's layout; ValueError when its shape does not fit ``odin_shape``."""
        expected = self.hf_shape(odin_shape)
        if tuple(array.shape) != expected:
            raise ValueError(f"tensor {self.hf!r} has shape {list(array.shape)}, the config needs {list(expected)}")
        if self.layout == TRANSPOSE:
            return np.ascontiguousarray(array.T)
        return np.ascontiguousarray(array.reshape(odin_shape))

    def hf_shape(self, odin_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.layout == TRANSPOSE:
            return tuple(reversed(odin_shape))
        if self.layout == ROW_1_1:
            return (1, 1, *odin_shape)
        return tuple(odin_shape)


_GPT2_LAYER: dict[str, tuple[str, str]] = {
    "ln1_w": ("ln_1.weight", SAME), "ln1_b": ("ln_1.bias", SAME),
    "qkv_w": ("attn.c_attn.weight", TRANSPOSE), "qkv_b": ("attn.c_attn.bias", SAME),
    "attproj_w": ("attn.c_proj.weight", TRANSPOSE), "attproj_b": ("attn.c_proj.bias", SAME),
    "ln2_w": ("ln_2.weight", SAME), "ln2_b": ("ln_2.bias", SAME),
    "fc_w": ("mlp.c_fc.weight", TRANSPOSE), "fc_b": ("mlp.c_fc.bias", SAME),
    "fcproj_w": ("mlp.c_proj.weight", TRANSPOSE), "fcproj_b": ("mlp.c_proj.bias", SAME),
}

_RWKV_LAYER: dict[str, tuple[str, str]] = {
    "ln1_w": ("ln1.weight", SAME), "ln1_b": ("ln1.bias", SAME),
    "att_time_decay": ("attention.time_decay", SAME), "att_time_first": ("attention.time_first", SAME),
    "att_time_mix_k": ("attention.time_mix_key", ROW_1_1), "att_time_mix_v": ("attention.time_mix_value", ROW_1_1),
    "att_time_mix_r": ("attention.time_mix_receptance", ROW_1_1),
    "att_key_w": ("attention.key.weight", SAME), "att_value_w": ("attention.value.weight", SAME),
    "att_receptance_w": ("attention.receptance.weight", SAME), "att_output_w": ("attention.output.weight", SAME),
    "ln2_w": ("ln2.weight", SAME), "ln2_b": ("ln2.bias", SAME),
    "ffn_time_mix_k": ("feed_forward.time_mix_key", ROW_1_1),
    "ffn_time_mix_r": ("feed_forward.time_mix_receptance", ROW_1_1),
    "ffn_key_w": ("feed_forward.key.weight", SAME), "ffn_receptance_w": ("feed_forward.receptance.weight", SAME),
    "ffn_value_w": ("feed_forward.value.weight", SAME),
}
assert tuple(_GPT2_LAYER) == LAYER_PARAM_NAMES and tuple(_RWKV_LAYER) == RWKV_LAYER_PARAM_NAMES

# the tied LM head: transformers drops it on save and ties it again on load
HF_HEAD = {"gpt": "lm_head.weight", "rwkv": "head.weight"}
HF_EMBEDDING = {"gpt": "transformer.wte.weight", "rwkv": "rwkv.embeddings.weight"}
HF_MODEL_TYPE = {"gpt": "gpt2", "rwkv": "rwkv"}
HF_ARCHITECTURE = {"gpt": "GPT2LMHeadModel", "rwkv": "RwkvForCausalLM"}


def tensor_names(arch: str, n_layer: int) -> list[TensorName]:
    """Every ODIN tensor of an ``arch`` model with ``n_layer`` layers (Abacus excluded: HF has
    no such table), in ODIN's parameter-block order, with its HF name."""
    if arch == "gpt":
        names = [TensorName("wte", "transformer.wte.weight"), TensorName("wpe", "transformer.wpe.weight")]
        for layer in range(n_layer):
            names += [TensorName(f"h.{layer}.{odin}", f"transformer.h.{layer}.{hf}", layout)
                      for odin, (hf, layout) in _GPT2_LAYER.items()]
        return names + [TensorName("lnf_w", "transformer.ln_f.weight"), TensorName("lnf_b", "transformer.ln_f.bias")]
    if arch == "rwkv":
        names = [TensorName("emb", "rwkv.embeddings.weight"), TensorName("ln0_w", "rwkv.blocks.0.pre_ln.weight"),
                 TensorName("ln0_b", "rwkv.blocks.0.pre_ln.bias")]
        for layer in range(n_layer):
            names += [TensorName(f"h.{layer}.{odin}", f"rwkv.blocks.{layer}.{hf}", layout)
                      for odin, (hf, layout) in _RWKV_LAYER.items()]
        return names + [TensorName("ln_out_w", "rwkv.ln_out.weight"), TensorName("ln_out_b", "rwkv.ln_out.bias")]
    raise ValueError(f"no Hugging Face name map for arch {arch!r} (known: 'gpt', 'rwkv')")
