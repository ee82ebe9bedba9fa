"""GPT model in C: layout, gradient check against a float64 numpy model and finite
differences in every ISA, KV-cache generation consistency, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import odin.native as native
from odin.model import GPT, GPTShape, Sampler, stream_tokens
import gpt_reference as ref

TINY = GPTShape(vocab_size=11, context=9, n_layer=2, n_head=2, d_model=12)
# ALiBi instead of learned positions (wpe stays zero and gets no gradient); 3 heads: slopes
# that are not powers of two
ALIBI = GPTShape(vocab_size=11, context=9, n_layer=2, n_head=3, d_model=12, learned_positions=False, alibi=True)


def _model(shape: GPTShape = TINY, seed: int = 1, jitter: float = 0.1) -> GPT:
    m = GPT(shape)
    m.init_weights(seed)
    # the GPT-2 init makes most gradients tiny; jitter so every tensor matters
    rng = np.random.default_rng(seed + 100)
    for name, arr in m.named_params().items():
        if name != "wpe" or shape.learned_positions:
            arr += rng.normal(0, jitter, arr.shape).astype(np.float32)
    return m


def _batch(shape: GPTShape, B: int, T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, shape.vocab_size, (B, T)).astype(np.int32)
    tgt = rng.integers(0, shape.vocab_size, (B, T)).astype(np.int32)
    mask = (rng.random((B, T)) > 0.3).astype(np.uint8)
    mask[0, 0] = 1
    return tok, tgt, mask


def test_parameter_layout_matches_blueprint():
    from odin.blueprint import Blueprint
    from odin.config import ModelConfig

    cfg = ModelConfig(arch="gpt", n_layer=3, d_model=24, n_head=4, context=17, vocab_size=29, init_seed=0)
    bp = Blueprint(cfg)
    m = GPT(GPTShape(29, 17, 3, 4, 24))
    assert m.n_params == bp.n_params
    assert [(n, s) for n, _, s in m.tensor_layout] == [(n, tuple(s)) for n, s in bp.param_shapes()]
    # views are zero-copy windows on the one block
    views = m.named_params()
    views["h.1.fc_w"][0, 0] = 123.0
    name, off, _ = next(t for t in m.tensor_layout if t[0] == "h.1.fc_w")
    assert m.params[off] == 123.0


@pytest.mark.parametrize("shape", [TINY, ALIBI], ids=["learned", "alibi"])
@pytest.mark.parametrize("B,T", [(1, 1), (3, 7), (2, 9)])
def test_loss_and_every_gradient_match_float64_reference(isa, B, T, shape):
    m = _model(shape)
    tok, tgt, mask = _batch(shape, B, T, seed=B * 10 + T)
    p64 = {k: v.astype(np.float64) for k, v in m.named_params().items()}
    loss_ref, grads_ref, logits_ref = ref.forward_backward(p64, tok, tgt, mask, shape.n_layer, shape.n_head,
                                                           alibi=shape.alibi)
    if not shape.learned_positions:  # frozen: the C model gives wpe no gradient
        grads_ref["wpe"][...] = 0.0
    m.zero_grad()
    loss = m.forward(tok, tgt, mask)
    m.backward()
    # float32 forward over a few hundred terms: ~1e-6 relative is expected, 1e-5 is a bug's floor
    assert abs(loss - loss_ref) <= 1e-5 * max(1.0, abs(loss_ref))
    np.testing.assert_allclose(m.logits(), logits_ref, atol=2e-5)
    for name, g in m.named_grads().items():
        scale = np.abs(grads_ref[name]).max() + 1e-8
        err = np.abs(g - grads_ref[name]).max() / scale
        assert err < 2e-4, f"{name}: relative error {err:.2e} (isa {isa})"


def test_reference_gradient_matches_finite_differences():
    """The float64 reference's own backward against central differences, coordinate-wise."""
    m = _model()
    tok, tgt, mask = _batch(TINY, 2, 6, seed=3)
    p = {k: v.astype(np.float64) for k, v in m.named_params().items()}
    _, G, _ = ref.forward_backward(p, tok, tgt, mask, TINY.n_layer, TINY.n_head)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name, arr in p.items():
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in arr.shape)
            old = arr[idx]
            arr[idx] = old + eps
            lp = ref.loss_only(p, tok, tgt, mask, TINY.n_layer, TINY.n_head)
            arr[idx] = old - eps
            lm = ref.loss_only(p, tok, tgt, mask, TINY.n_layer, TINY.n_head)
            arr[idx] = old
            fd = (lp - lm) / (2 * eps)
            assert abs(fd - G[name][idx]) <= 1e-6 + 1e-5 * abs(fd), f"{name}{idx}: fd {fd} vs {G[name][idx]}"


def test_c_gradient_matches_finite_differences_of_c_forward(isa):
    """Directional derivative of the float32 C loss along a random direction per tensor.
    With eps=1e-2 on O(1) directions the float32 rounding (~1e-7/1e-2) and the curvature
    term (~eps^2) both stay near 1e-4..1e-3 of the slope, so 2e-2 relative is a safe bound."""
    m = _model()
    tok, tgt, mask = _batch(TINY, 2, 8, seed=5)
    m.zero_grad()
    m.forward(tok, tgt, mask)
    m.backward()
    grads = {k: v.copy() for k, v in m.named_grads().items()}
    rng = np.random.default_rng(1)
    for name, arr in m.named_params().items():
        d = rng.normal(size=arr.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        slope = float((grads[name].astype(np.float64) * d).sum())
        orig = arr.copy()
        eps = 1e-2
        arr[...] = orig + eps * d
        lp = m.forward(tok, tgt, mask)
        arr[...] = orig - eps * d
        lm = m.forward(tok, tgt, mask)
        arr[...] = orig
        fd = (lp - lm) / (2 * eps)
        assert abs(fd - slope) <= 2e-2 * abs(slope) + 2e-5, f"{name}: fd {fd:.6g} vs analytic {slope:.6g}"


def test_backward_accumulates_and_zero_count_is_zero_gradient():
    m = _model()
    tok, tgt, mask = _batch(TINY, 2, 5)
    m.zero_grad()
    m.forward(tok, tgt, mask)
    m.backward()
    once = m.grads.copy()
    m.forward(tok, tgt, mask)
    m.backward()
    np.testing.assert_allclose(m.grads, 2 * once, rtol=1e-6, atol=1e-9)
    m.zero_grad()
    assert m.forward(tok, tgt, np.zeros_like(mask)) == 0.0
    m.backward()
    assert not m.grads.any()


@pytest.mark.parametrize("shape", [TINY, ALIBI], ids=["learned", "alibi"])
def test_kv_cache_logits_equal_full_forward(isa, shape):
    m = _model(shape)
    tok, _, _ = _batch(shape, 2, 9, seed=7)
    m.forward(tok)
    full = m.logits()
    cache = m.new_cache(2)
    for t in range(9):
        step = cache.step(tok[:, t].tolist(), [t, t])
        np.testing.assert_allclose(step, full[:, t], atol=2e-5, err_msg=f"position {t}")


def test_greedy_batch_matches_token_by_token_argmax():
    m = _model(jitter=0.5)
    prompts = [[1, 4, 5], [2], [3, 3, 3, 3, 7]]
    out = m.generate_greedy(prompts, max_new=4, end_id=0)
    for prompt, got in zip(prompts, out):
        want = list(stream_tokens(m, prompt, 4, Sampler(temperature=0.0), stop_ids=(0,)))
        assert got == want


def test_sampler_is_seeded_and_respects_top_k():
    logits = np.linspace(-1, 1, 10).astype(np.float32)
    a = [Sampler(temperature=1.0, seed=5)(logits) for _ in range(1)]
    s1, s2 = Sampler(temperature=1.0, seed=5), Sampler(temperature=1.0, seed=5)
    assert [s1(logits) for _ in range(50)] == [s2(logits) for _ in range(50)]
    topk = Sampler(temperature=1.0, top_k=2, seed=1)
    assert {topk(logits) for _ in range(200)} <= {8, 9}
    assert Sampler(temperature=0.0)(logits) == 9
    assert a


def test_bad_input_is_a_clear_error():
    m = _model()
    tok = np.zeros((2, 4), np.int32)
    tok[1, 2] = TINY.vocab_size
    with pytest.raises(native.ArgumentError, match=r"tokens\[6\]"):
        m.forward(tok)
    with pytest.raises(native.ShapeError, match="context"):
        m.forward(np.zeros((1, TINY.context + 1), np.int32))
    with pytest.raises(TypeError, match="tokens"):
        m.forward(np.zeros((1, 3), np.float32))
    with pytest.raises(native.ShapeError, match="d_model"):
        GPT(GPTShape(10, 8, 1, 3, 16))
    cache = m.new_cache(1)
    with pytest.raises(native.ArgumentError, match="pos"):
        cache.step([1], [TINY.context])


def test_nan_weights_stop_with_nan_error():
    m = _model()
    m.named_params()["lnf_b"][0] = np.nan
    tok, tgt, mask = _batch(TINY, 1, 4)
    with pytest.raises(native.NanError):
        m.forward(tok, tgt, np.ones_like(mask))
