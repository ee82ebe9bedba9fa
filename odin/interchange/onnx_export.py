"""``odin export onnx CHECKPOINT FILE``: an ONNX graph of the model, built with the ``onnx``
package's helper API (no torch), that a runtime can both score whole sequences with and
generate from token by token.

GPT — inputs ``input_ids`` int64 [batch, sequence] and, per layer i, ``past_key.i`` /
``past_value.i`` float [batch, heads, past, head_size] (``past`` may be 0: a whole sequence);
outputs ``logits`` [batch, sequence, vocab] and ``present_key.i`` / ``present_value.i`` (the
past with this call's keys and values appended). Positions continue from ``past``.

RWKV — inputs ``input_ids`` and the recurrent state, five float tensors [layers, batch,
d_model]: ``state_att_x`` and ``state_ffn_x`` (the previous token's normalised input to the
time-mix and channel-mix, zeros at the start), ``state_num``, ``state_den`` (WKV numerator and
denominator, zeros) and ``state_max`` (their common exponent, -1e38 at the start); outputs
``logits`` and the same five as ``new_state_*``. Time runs in an ONNX ``Scan``.

Opset 17 (LayerNormalization); weights float32, stored as [in, out] for MatMul.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from odin.checkpoint_io import load_checkpoint
from odin.config import ModelConfig
from odin.interchange.common import InterchangeError, run_command, write_file_atomically

OPSET = 17
RWKV_STATE = ("att_x", "num", "den", "max", "ffn_x")
RWKV_MAX_START = -1e38  # the exponent of an empty WKV sum


class OnnxExportError(InterchangeError):
    """A model this exporter cannot express; the message names the file and why."""


class _Graph:
    """Nodes and initializers of one (sub)graph, with fresh value names."""

    def __init__(self, prefix: str = "") -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._prefix = prefix

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}{hint}_{self._count}"

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1,
           out_names: list[str] | None = None, **attrs: Any) -> Any:
        from onnx import helper

        names = out_names or [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if len(names) == 1 else names

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        return name

    def scalar(self, value: float, dtype: Any = np.float32) -> str:
        return self.const(self.name("c"), np.array(value, dtype))

    def ints(self, values: list[int]) -> str:
        return self.const(self.name("i"), np.array(values, np.int64))

    def layer_norm(self, x: str, weight: str, bias: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, weight, bias], "ln", axis=-1, epsilon=float(eps))

    def linear(self, x: str, weight_in_out: str, bias: str | None = None) -> str:
        y = self.op("MatMul", [x, weight_in_out], "mm")
        return self.op("Add", [y, bias], "add") if bias else y


def _gelu_tanh(g: _Graph, x: str) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), ODIN's (and GPT-2's) GELU."""
    cube = g.op("Mul", [g.op("Mul", [x, x]), x])
    inner = g.op("Add", [x, g.op("Mul", [cube, g.scalar(0.044715)])])
    t = g.op("Tanh", [g.op("Mul", [inner, g.scalar(math.sqrt(2.0 / math.pi))])])
    return g.op("Mul", [g.op("Mul", [x, g.scalar(0.5)]), g.op("Add", [t, g.scalar(1.0)])])


def gpt_graph(model: ModelConfig, params: dict[str, np.ndarray]) -> Any:
    from onnx import TensorProto, helper

    L, C, H, V = model.n_layer, model.d_model, model.n_head, model.vocab_size
    D = C // H
    g = _Graph()
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", V])]
    for i in range(L):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT,
                                                        ["batch", H, "past", D]))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}.{i}", TensorProto.FLOAT,
                                                         ["batch", H, "total", D]))
    for name, array in params.items():
        transposed = name.endswith(("qkv_w", "attproj_w", "fc_w", "fcproj_w"))
        g.const(name, array.T if transposed else array)

    ids_shape = g.op("Shape", ["input_ids"])
    seq = g.op("Gather", [ids_shape, g.ints([1])], axis=0)                       # [1]
    past = g.op("Gather", [g.op("Shape", ["past_key.0"]), g.ints([2])], axis=0)  # [1]
    total = g.op("Add", [past, seq])
    positions = g.op("Range", [g.op("Squeeze", [past]), g.op("Squeeze", [total]), g.const("one", np.array(1, np.int64))])
    x = g.op("Add", [g.op("Gather", ["wte", "input_ids"], axis=0), g.op("Gather", ["wpe", positions], axis=0)])
    # causal mask over [sequence, total]: query t (position past + t) sees keys up to it
    keys = g.op("Range", [g.const("zero", np.array(0, np.int64)), g.op("Squeeze", [total]), "one"])
    allowed = g.op("LessOrEqual", [g.op("Unsqueeze", [keys, g.ints([0])]), g.op("Unsqueeze", [positions, g.ints([1])])])
    mask = g.op("Where", [allowed, g.scalar(0.0), g.scalar(-np.inf)])
    heads_shape = g.op("Concat", [g.op("Gather", [ids_shape, g.ints([0])], axis=0), seq, g.ints([H, D])], axis=0)
    merged_shape = g.op("Concat", [g.op("Gather", [ids_shape, g.ints([0])], axis=0), seq, g.ints([C])], axis=0)
    scale = g.scalar(1.0 / math.sqrt(D))
    for i in range(L):
        p = f"h.{i}."
        h = g.layer_norm(x, p + "ln1_w", p + "ln1_b", model.ln_eps)
        qkv = g.linear(h, p + "qkv_w", p + "qkv_b")
        q, k, v = g.op("Split", [qkv, g.ints([C, C, C])], outputs=3, axis=-1)
        q, k, v = (g.op("Transpose", [g.op("Reshape", [t, heads_shape])], perm=[0, 2, 1, 3]) for t in (q, k, v))
        k_all = g.op("Concat", [f"past_key.{i}", k], out_names=[f"present_key.{i}"], axis=2)
        v_all = g.op("Concat", [f"past_value.{i}", v], out_names=[f"present_value.{i}"], axis=2)
        scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k_all], perm=[0, 1, 3, 2])]), scale])
        weights = g.op("Softmax", [g.op("Add", [scores, mask])], axis=-1)
        y = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [weights, v_all])], perm=[0, 2, 1, 3]), merged_shape])
        x = g.op("Add", [x, g.linear(y, p + "attproj_w", p + "attproj_b")])
        h = g.layer_norm(x, p + "ln2_w", p + "ln2_b", model.ln_eps)
        x = g.op("Add", [x, g.linear(_gelu_tanh(g, g.linear(h, p + "fc_w", p + "fc_b")), p + "fcproj_w", p + "fcproj_b")])
    x = g.layer_norm(x, "lnf_w", "lnf_b", model.ln_eps)
    g.op("MatMul", [x, g.op("Transpose", ["wte"], perm=[1, 0])], out_names=["logits"])
    return helper.make_graph(g.nodes, "odin_gpt", inputs, outputs, g.initializers)


def _rwkv_step(g: _Graph, model: ModelConfig, x: str, state: dict[str, str]) -> tuple[str, dict[str, str]]:
    """One token [batch, C] through every layer; ``state`` maps RWKV_STATE names to [L, batch, C]."""
    layers: dict[str, list[str]] = {key: [] for key in RWKV_STATE}
    eps = model.ln_eps
    for i in range(model.n_layer):
        p = f"h.{i}."
        s = {key: g.op("Gather", [state[key], g.ints([i])], axis=0) for key in RWKV_STATE}  # [1, B, C]
        s = {key: g.op("Squeeze", [value, g.ints([0])]) for key, value in s.items()}
        a = g.layer_norm(x, p + "ln1_w", p + "ln1_b", eps)

        def mix(current: str, previous: str, name: str) -> str:
            return g.op("Add", [g.op("Mul", [current, p + name]), g.op("Mul", [previous, p + name + ".rest"])])

        k = g.linear(mix(a, s["att_x"], "att_time_mix_k"), p + "att_key_w")
        v = g.linear(mix(a, s["att_x"], "att_time_mix_v"), p + "att_value_w")
        r = g.op("Sigmoid", [g.linear(mix(a, s["att_x"], "att_time_mix_r"), p + "att_receptance_w")])
        # WKV with a running exponent (RWKV-4's numerically safe form)
        bonus = g.op("Add", [k, p + "att_time_first"])
        top = g.op("Max", [s["max"], bonus])
        e1, e2 = g.op("Exp", [g.op("Sub", [s["max"], top])]), g.op("Exp", [g.op("Sub", [bonus, top])])
        num = g.op("Add", [g.op("Mul", [e1, s["num"]]), g.op("Mul", [e2, v])])
        den = g.op("Add", [g.op("Mul", [e1, s["den"]]), e2])
        wkv = g.op("Div", [num, den])
        decayed = g.op("Add", [s["max"], p + "att_time_decay.w"])
        top = g.op("Max", [decayed, k])
        e1, e2 = g.op("Exp", [g.op("Sub", [decayed, top])]), g.op("Exp", [g.op("Sub", [k, top])])
        layers["num"].append(g.op("Add", [g.op("Mul", [e1, s["num"]]), g.op("Mul", [e2, v])]))
        layers["den"].append(g.op("Add", [g.op("Mul", [e1, s["den"]]), e2]))
        layers["max"].append(top)
        layers["att_x"].append(a)
        x = g.op("Add", [x, g.linear(g.op("Mul", [r, wkv]), p + "att_output_w")])
        b = g.layer_norm(x, p + "ln2_w", p + "ln2_b", eps)
        hidden = g.op("Relu", [g.linear(mix(b, s["ffn_x"], "ffn_time_mix_k"), p + "ffn_key_w")])
        value = g.linear(g.op("Mul", [hidden, hidden]), p + "ffn_value_w")
        gate = g.op("Sigmoid", [g.linear(mix(b, s["ffn_x"], "ffn_time_mix_r"), p + "ffn_receptance_w")])
        x = g.op("Add", [x, g.op("Mul", [gate, value])])
        layers["ffn_x"].append(b)
    stacked = {key: g.op("Concat", [g.op("Unsqueeze", [t, g.ints([0])]) for t in values], axis=0)
               for key, values in layers.items()}
    return x, stacked


def rwkv_graph(model: ModelConfig, params: dict[str, np.ndarray]) -> Any:
    from onnx import TensorProto, helper

    L, C, V = model.n_layer, model.d_model, model.vocab_size
    g = _Graph()
    for name, array in params.items():
        base = name.rsplit(".", 1)[-1]
        if base.endswith("_w") and array.ndim == 2 and base != "emb":
            g.const(name, array.T)
        elif base == "att_time_decay":
            g.const(name + ".w", -np.exp(array.astype(np.float64)).astype(np.float32))
        else:
            g.const(name, array)
        if "time_mix" in base:
            g.const(name + ".rest", (1.0 - array).astype(np.float32))
    state_shape = [L, "batch", C]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])]
    inputs += [helper.make_tensor_value_info(f"state_{key}", TensorProto.FLOAT, state_shape) for key in RWKV_STATE]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", V])]
    outputs += [helper.make_tensor_value_info(f"new_state_{key}", TensorProto.FLOAT, state_shape)
                for key in RWKV_STATE]

    # the Scan body: one time step; weights are read from the outer graph by name
    body = _Graph("step_")
    body_state = {key: f"in_{key}" for key in RWKV_STATE}
    y, new_state = _rwkv_step(body, model, "x_t", body_state)
    body_outputs = [body.op("Identity", [new_state[key]], out_names=[f"out_{key}"]) for key in RWKV_STATE]
    body.op("Identity", [y], out_names=["y_t"])
    body_graph = helper.make_graph(
        body.nodes, "rwkv_step",
        [helper.make_tensor_value_info(f"in_{key}", TensorProto.FLOAT, state_shape) for key in RWKV_STATE]
        + [helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["batch", C])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, state_shape) for name in body_outputs]
        + [helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["batch", C])],
        body.initializers)

    x = g.layer_norm(g.op("Gather", ["emb", "input_ids"], axis=0), "ln0_w", "ln0_b", model.ln_eps)
    scanned = g.op("Scan", [f"state_{key}" for key in RWKV_STATE] + [g.op("Transpose", [x], perm=[1, 0, 2])],
                   out_names=[f"new_state_{key}" for key in RWKV_STATE] + ["hidden_tbc"],
                   body=body_graph, num_scan_inputs=1)
    hidden = g.op("Transpose", [scanned[-1]], perm=[1, 0, 2])
    x = g.layer_norm(hidden, "ln_out_w", "ln_out_b", model.ln_eps)
    g.op("MatMul", [x, g.op("Transpose", ["emb"], perm=[1, 0])], out_names=["logits"])
    return helper.make_graph(g.nodes, "odin_rwkv", inputs, outputs, g.initializers)


def onnx_unsupported(model: ModelConfig) -> str | None:
    if model.arch == "gpt" and model.abacus:
        return "Abacus digit-place embeddings ([model].abacus) need ids computed from the digits around each token"
    if model.arch == "gpt" and model.positions == "alibi":
        return "ALiBi attention biases ([model].positions = \"alibi\") are not in this exporter's graph"
    if model.arch not in ("gpt", "rwkv"):
        return f"no ONNX graph for arch {model.arch!r}"
    return None


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the ONNX file ``out`` from an ODIN checkpoint directory (checked by onnx's checker)."""
    try:
        import onnx
        from onnx import helper
    except ImportError:
        raise OnnxExportError("the onnx package writes the file and is not installed: "
                              "pip install 'odin[interchange]' (or pip install onnx)") from None
    loaded = load_checkpoint(checkpoint)
    model = loaded.run_config().model
    reason = onnx_unsupported(model)
    if reason is not None:
        raise OnnxExportError(f"{Path(checkpoint) / 'config.json'}: cannot export to ONNX: {reason}")
    target = Path(out)
    if target.is_dir():  # before building the graph (write_file_atomically checks again)
        raise OnnxExportError(f"{target} is a directory; give the .onnx file to write")
    graph = gpt_graph(model, loaded.params) if model.arch == "gpt" else rwkv_graph(model, loaded.params)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="odin")
    proto.ir_version = 8  # readable by onnxruntime releases back to 1.14
    onnx.checker.check_model(proto, full_check=True)
    return write_file_atomically(target, lambda staging: onnx.save_model(proto, str(staging)), OnnxExportError,
                                 ".onnx")


def _cmd_export(args: argparse.Namespace) -> int:
    def action() -> str:
        written = export_onnx(args.checkpoint, args.out)
        return f"wrote {written} ({written.stat().st_size / 2**20:.2f} MiB; onnxruntime.InferenceSession({str(written)!r}))"

    return run_command("export onnx", action)


def add_export_parser(esub: "argparse._SubParsersAction") -> None:
    p = esub.add_parser("onnx", help="an ONNX graph (GPT with past key/values, RWKV with its state)")
    p.add_argument("checkpoint", help="ODIN checkpoint directory")
    p.add_argument("out", help="the .onnx file to write")
    p.set_defaults(func=_cmd_export)


__all__ = ["OnnxExportError", "RWKV_STATE", "RWKV_MAX_START", "export_onnx", "gpt_graph", "onnx_unsupported",
           "rwkv_graph"]
