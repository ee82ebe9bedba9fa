"""The RWKV-4 of csrc/rwkv.c compiled to WebAssembly (the same source as the native build)
against the native library, in both wasm builds: forward loss and logits, every gradient,
AdamW, the one-call training step (odin_wasm_rwkv_train_step), recurrent decoding past the
training context with a state that does not grow, and — through `odin export web` — the
exported weights giving the native model's logits and greedy tokens.

Tolerances as in test_wasm_gpt.py (SIMD128 has no FMA and sums 4 lanes at a time): loss
<= 1e-5 relative, gradients <= 1e-4 relative L2 per tensor, an AdamW update <= 1e-3
relative L2; greedy tokens identical. The scalar build runs the native scalar code, so
against native *scalar* on x86-64 the forward pass, every gradient, every AdamW update and
recurrent decoding agree bit for bit (the library calls no libm function whose last bit
differs between glibc and wasi-libc: see odin_logf and odin_bias_correction).
"""
from __future__ import annotations

import math
import platform

import numpy as np
import pytest

from odin import native
from odin.rwkv import RWKV, RWKVShape
from wasm_support import tiny_arith_model, wasm_path

SHAPE = RWKVShape(vocab_size=102, context=16, n_layer=2, d_model=36, d_ffn=100)
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="module", params=["simd128", "scalar"])
def rt(request, tmp_path_factory):
    from odin.web.wasmrt import WasmOdin

    return WasmOdin(wasm_path(request.param, tmp_path_factory))


@pytest.fixture
def native_isa(rt):
    """Native ISA to compare with: the best one for the SIMD module; scalar for the scalar build."""
    previous = native.current_isa()
    wanted = previous if rt.simd() else "scalar"
    native.set_isa(wanted)
    yield wanted
    native.set_isa(previous)


def wasm_rwkv(rt, shape: RWKVShape = SHAPE):
    from odin.web.wasmrt import WasmRWKV

    return WasmRWKV(rt, vocab_size=shape.vocab_size, n_layer=shape.n_layer, d_model=shape.d_model,
                    d_ffn=shape.d_ffn, ln_eps=shape.ln_eps, context=shape.context)


def make_pair(rt, seed=7, jitter=0.1):
    """A native model with RWKV-4 init plus jitter (every tensor gets a sizeable gradient and
    the logits are not all ~0, as they are with the tiny initial emb) and its wasm twin."""
    nat = RWKV(SHAPE)
    nat.init_weights(seed)
    rng = np.random.default_rng(seed + 100)
    for arr in nat.named_params().values():
        arr += rng.normal(0, jitter, arr.shape).astype(np.float32)
    was = wasm_rwkv(rt)
    assert was.n_params == nat.n_params
    was.params[...] = nat.params
    return nat, was


def batch(rng, B=3, T=12, V=102):
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    mask = (rng.random((B, T)) < 0.7).astype(np.uint8)
    return tokens, targets, mask


def assert_adamw_params_close(was, nat, *, lr: float, steps: int, noisy: np.ndarray) -> None:
    """Weights after AdamW steps agree to 1% of a step wherever every step's gradient was
    above float noise. Where a step's gradient was at the rounding level of its sums
    (``noisy``: under 1e-4 of the largest), Adam's normalised step g / (|g| + eps) turns
    that noise into a visible part of a step (seen on AVX2 against wasm: a gradient of
    -4.3e-9 vs -4.5e-9 moved one weight of 31968 by 0.30 vs 0.31 of lr); there only Adam's
    bound of about lr per step is asserted."""
    np.testing.assert_allclose(was.params[~noisy], nat.params[~noisy], rtol=0, atol=1e-2 * lr)
    assert np.abs(was.params - nat.params).max() <= 2 * lr * steps


def rel_l2(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def test_forward_backward_adamw(rt, rng, native_isa):
    nat, was = make_pair(rt)
    tokens, targets, mask = batch(rng)
    exact = native_isa == "scalar" and X86
    noisy = np.zeros(nat.params.shape, bool)
    for step in (1, 2):
        before = nat.params.copy()
        loss_n = nat.forward(tokens, targets, mask)
        loss_w = was.forward(tokens, targets, mask)
        nat.zero_grad()
        was.zero_grad()
        nat.backward()
        was.backward()
        ln, lw = nat.logits(), was.logits()
        np.testing.assert_allclose(lw, ln, rtol=0, atol=1e-5 * np.abs(ln).max())
        if exact:
            assert np.array_equal(lw, ln), f"step {step}: scalar wasm logits differ from native scalar"
        assert loss_w == pytest.approx(loss_n, rel=1e-5)
        gw, gn = was.grads.copy(), nat.grads.copy()
        noisy |= np.abs(gn) < 1e-4 * np.abs(gn).max()
        if exact:
            assert np.array_equal(gw, gn), f"step {step}: scalar wasm gradients differ from native scalar"
        for name, off, shp in nat.tensor_layout:
            n = math.prod(shp)
            err = rel_l2(gw[off:off + n], gn[off:off + n])
            assert err <= 1e-4, f"step {step}: gradient of {name} differs by {err:.3g} (relative L2)"
        norm_n = nat.adamw_step(lr=1e-2, step=step, weight_decay=0.1, grad_clip=1.0)
        norm_w = was.adamw_step(lr=1e-2, step=step, weight_decay=0.1, grad_clip=1.0)
        assert norm_w == pytest.approx(norm_n, rel=1e-5)
        assert rel_l2(was.params - before, nat.params - before) <= 1e-3
        assert_adamw_params_close(was, nat, lr=1e-2, steps=step, noisy=noisy)
        assert rel_l2(was.adam_m, nat.adam_m) <= 1e-3 and rel_l2(was.adam_v, nat.adam_v) <= 1e-3
        if exact:
            assert np.array_equal(was.params, nat.params) and np.array_equal(was.adam_v, nat.adam_v)
    was.close()


def test_train_step_call_matches_separate_calls(rt, rng, native_isa):
    """odin_wasm_rwkv_train_step = zero_grad + forward + backward + adamw_step, natively too."""
    nat, was = make_pair(rt, seed=3)
    losses_n, losses_w, norms_n, norms_w = [], [], [], []
    for step in range(1, 6):
        tokens, targets, mask = batch(rng, B=4, T=10)
        nat.zero_grad()
        losses_n.append(nat.forward(tokens, targets, mask))
        nat.backward()
        norms_n.append(nat.adamw_step(lr=3e-3, step=step, weight_decay=0.1))
        loss, norm = was.train_step(tokens, targets, mask, lr=3e-3, step=step, weight_decay=0.1)
        losses_w.append(loss)
        norms_w.append(norm)
    np.testing.assert_allclose(losses_w, losses_n, rtol=1e-5)
    np.testing.assert_allclose(norms_w, norms_n, rtol=1e-4)
    np.testing.assert_allclose(was.params, nat.params, rtol=0, atol=1e-2 * 3e-3 * 5)
    if native_isa == "scalar" and X86:
        assert losses_w == losses_n and np.array_equal(was.params, nat.params)
    # the inputs are freed after the call: a second call with other shapes is fine too
    tokens, targets, mask = batch(rng, B=2, T=20)  # longer than the training context: RWKV has no position table
    loss, _ = was.train_step(tokens, targets, mask, lr=3e-3, step=6)
    assert np.isfinite(loss)
    was.close()


def test_recurrent_decode_matches_native_past_the_context(rt, rng, native_isa):
    """Token by token through the recurrent state, 3 sequences, 2.5x the training context:
    the same logits as the native state, and neither the state nor the heap grows."""
    nat, was = make_pair(rt, seed=5)
    steps = int(2.5 * SHAPE.context)
    toks = rng.integers(0, SHAPE.vocab_size, (3, steps))
    state = nat.new_cache(3)
    first = None
    heap = None
    for t in range(steps):
        ln = state.step(toks[:, t].tolist()).copy()
        lw = was.decode(toks[:, t].tolist())
        np.testing.assert_allclose(lw, ln, rtol=0, atol=1e-5 * np.abs(ln).max(), err_msg=f"token {t}")
        if native_isa == "scalar" and X86:
            assert np.array_equal(lw, ln), f"token {t}: scalar wasm logits differ from native scalar"
        if t == 0:
            first = lw.copy()
            heap = rt.fn("odin_wasm_heap_in_use")()
    assert rt.fn("odin_wasm_heap_in_use")() == heap, "the heap grew while decoding"
    assert was.state_bytes() == state.nbytes == SHAPE.n_layer * 5 * SHAPE.d_model * 4 * 3
    was.reset()  # back to the zero state: the first token gives the first logits again
    np.testing.assert_array_equal(was.decode(toks[:, 0].tolist()), first)
    was.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small RWKV trained natively on 2-digit addition, saved as a checkpoint and exported;
    the native side is the model loaded back from the checkpoint."""
    from odin.checkpoint import load_model_checkpoint, save_model_checkpoint
    from odin.web.export import export_web, load_export

    model, config, tok, examples = tiny_arith_model("rwkv")
    d = tmp_path_factory.mktemp("rwkv-export")
    save_model_checkpoint(d / "ckpt", model, tok, config, step=300, trainer_state={})
    manifest = export_web(d / "ckpt", d / "web", examples=16, demo_prompts=2)
    manifest2, weights = load_export(d / "web")
    assert manifest2 == manifest
    loaded = load_model_checkpoint(d / "ckpt")
    return manifest, weights, loaded.model, tok, examples


def test_export_format(exported):
    manifest, weights, model, tok, _ = exported
    m = manifest["model"]
    assert m["arch"] == "rwkv" and m["d_ffn"] == model.shape.d_ffn == 4 * m["d_model"]
    assert manifest["n_params"] == model.n_params == weights.size
    # the parameter-block order of csrc/rwkv.c (blueprint order), offsets included
    assert [(t["name"], t["offset"], tuple(t["shape"])) for t in manifest["tensors"]] == \
        [(n, off, tuple(s)) for n, off, s in model.tensor_layout]
    assert np.array_equal(weights, model.params)
    assert manifest["abacus"] is None and manifest["special"] == {"pad": tok.pad_id, "bos": tok.bos_id,
                                                                  "end": tok.end_id}


def test_exported_checkpoint_logits_and_greedy(rt, exported, native_isa):
    manifest, weights, model, tok, examples = exported
    m = manifest["model"]
    was = wasm_rwkv(rt, RWKVShape(vocab_size=m["vocab_size"], context=m["context"], n_layer=m["n_layer"],
                                  d_model=m["d_model"], d_ffn=m["d_ffn"], ln_eps=m["ln_eps"]))
    assert was.n_params == manifest["n_params"]
    was.params[...] = weights
    # the parallel form's logits on the prompts
    prompts = [[tok.bos_id, *tok.encode(e.prompt)] for e in examples[:24]]
    T = max(len(p) for p in prompts)
    arr = np.array([p + [tok.pad_id] * (T - len(p)) for p in prompts], np.int32)
    model.forward(arr)
    was.forward(arr)
    ln, lw = model.logits(), was.logits()
    np.testing.assert_allclose(lw, ln, rtol=0, atol=1e-5 * np.abs(ln).max())
    if native_isa == "scalar" and X86:
        assert np.array_equal(lw, ln)
    # greedy: the batched C generator and token by token (what web/odin.js does)
    expected = model.generate_greedy(prompts, max_new=6, end_id=tok.end_id)
    assert sum(1 for g in expected if g and g[-1] == tok.end_id) >= len(expected) // 2  # the model learned to stop
    assert was.generate_greedy(prompts, max_new=6, end_id=tok.end_id) == expected
    for p, want in zip(prompts[:4], expected[:4]):
        was.reset()
        for t in p:
            logits = was.decode([t])
        out = []
        while len(out) < len(want):
            out.append(int(np.argmax(logits[0])))
            if out[-1] == tok.end_id:
                break
            logits = was.decode([out[-1]])
        assert out == want
    # no length limit: 3x the training context without stopping, still the native tokens
    long_native = model.generate_greedy(prompts[:3], max_new=3 * m["context"], end_id=-1)
    assert all(len(g) == 3 * m["context"] for g in long_native)
    assert was.generate_greedy(prompts[:3], max_new=3 * m["context"], end_id=-1) == long_native
    was.close()
