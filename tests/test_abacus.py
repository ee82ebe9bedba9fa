"""Abacus digit-position embeddings: the id rule, the C gradient against float64 numpy,
and generation (KV cache, batched greedy) agreeing with the full forward."""
from __future__ import annotations

import numpy as np
import pytest

import gpt_reference as ref
import odin.native as native
from odin.abacus import abacus_ids
from odin.config import ModelConfig
from odin.blueprint import Blueprint
from odin.checkpoint import model_from_config
from odin.model import GPT, GPTShape, Sampler, stream_tokens
from odin.tokenizers import CharTokenizer

TOK = CharTokenizer()
D0, SEP = TOK.encode("0")[0], TOK.encode("=")[0]
SHAPE = GPTShape(vocab_size=TOK.vocab_size, context=24, n_layer=2, n_head=2, d_model=16,
                 n_abacus=12, digit_first=D0, sep_id=SEP)


def _ids(text: str, offset: int = 0) -> list[int]:
    return abacus_ids(np.array([TOK.encode(text)]), D0, SEP, 32, np.array([offset]))[0].tolist()


def test_ids_count_significance_in_prompt_and_place_in_reversed_answer():
    # operands most-significant first: counted from the right; answer reversed: from the left
    assert _ids("123+45=861") == [3, 2, 1, 0, 2, 1, 0, 1, 2, 3]
    assert _ids("7*8=65") == [1, 0, 1, 0, 1, 2]
    assert _ids("12+3=51", offset=4) == [6, 5, 0, 5, 0, 5, 6]  # digits shift, others stay 0
    with pytest.raises(ValueError, match="n_abacus"):
        abacus_ids(np.array(TOK.encode("1234567+1=")), D0, SEP, 5)


def _model(seed: int = 0) -> GPT:
    m = GPT(SHAPE)
    m.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    for arr in m.named_params().values():
        arr += rng.normal(0, 0.1, arr.shape).astype(np.float32)
    return m


def _batch(B: int = 3, offsets=(0, 2, 5)):
    texts = ["123+45=861", "9+99=801", "5+5=01"]
    T = 11
    tokens = np.zeros((B, T + 1), np.int32)
    for b, t in enumerate(texts[:B]):
        enc = [TOK.bos_id] + TOK.encode(t) + [TOK.end_id]
        tokens[b, :len(enc)] = enc
    ids = abacus_ids(tokens[:, :-1], D0, SEP, SHAPE.n_abacus, np.array(offsets[:B]))
    mask = np.ones((B, T), np.uint8)
    return tokens[:, :-1].copy(), tokens[:, 1:].copy(), mask, ids


def test_blueprint_counts_the_table_and_matches_c():
    cfg = ModelConfig(n_layer=2, d_model=16, n_head=2, context=24, abacus=12)
    assert model_from_config(cfg).n_params == Blueprint(cfg).n_params == GPT(SHAPE).n_params
    assert Blueprint(cfg).param_shapes()[-1] == ("wab", (12, 16))


def test_abacus_gradient_matches_float64_reference(isa):
    m = _model()
    x, y, mask, ids = _batch()
    p64 = {k: v.astype(np.float64) for k, v in m.named_params().items()}
    loss_ref, grads_ref, _ = ref.forward_backward(p64, x, y, mask, SHAPE.n_layer, SHAPE.n_head, ids=ids)
    m.zero_grad()
    loss = m.forward(x, y, mask, ids=ids)
    m.backward()
    assert abs(loss - loss_ref) < 1e-5 * max(1, abs(loss_ref))
    for name, g in m.named_grads().items():
        err = np.abs(g - grads_ref[name]).max() / (np.abs(grads_ref[name]).max() + 1e-8)
        assert err < 2e-4, f"{name}: {err:.2e}"
    assert np.abs(m.named_grads()["wab"]).sum() > 0


def test_ids_change_the_output_and_are_validated():
    m = _model()
    x, y, mask, ids = _batch()
    a = m.forward(x, y, mask, ids=ids)
    b = m.forward(x, y, mask, ids=np.zeros_like(ids))
    assert a != b
    with pytest.raises(native.ArgumentError, match="ids"):
        m.forward(x, y, mask, ids=np.full_like(ids, SHAPE.n_abacus))
    plain = GPT(GPTShape(TOK.vocab_size, 24, 1, 2, 16))
    with pytest.raises(native.ArgumentError, match="no Abacus"):
        plain.forward(x, y, mask, ids=ids)


def test_decode_and_greedy_follow_the_id_rule():
    m = _model(seed=3)
    prompt = [TOK.bos_id] + TOK.encode("123+45=")
    # token-by-token with the Python rule == batched greedy with the C rule == full forward
    streamed = list(stream_tokens(m, prompt, 8, Sampler(temperature=0.0), stop_ids=(TOK.end_id,)))
    batched = m.generate_greedy([prompt, [TOK.bos_id] + TOK.encode("7+8=")], max_new=8, end_id=TOK.end_id)[0]
    assert streamed == batched
    seq = np.array([prompt + streamed[:-1]], np.int32) if len(streamed) > 1 else np.array([prompt], np.int32)
    m.forward(seq)  # ids computed with the same rule (offset 0)
    full = m.logits()[0]
    assert int(full[len(prompt) - 1].argmax()) == streamed[0]
    for i, tok in enumerate(streamed[1:], start=len(prompt)):
        assert int(full[i].argmax()) == tok


def test_no_learned_positions_keeps_wpe_exactly_zero_through_training():
    from odin.spheres import SpheresTrainer

    shape = GPTShape(**{**SHAPE.__dict__, "learned_positions": False})
    m = GPT(shape)
    m.init_weights(0)
    assert not m.named_params()["wpe"].any()
    x, y, mask, ids = _batch()
    tr = SpheresTrainer(m, 3, x.shape[1], threads=2)
    tr.configure(lr=1e-2, min_lr=1e-3, warmup_steps=0, total_steps=5, weight_decay=0.1)
    tokens = np.concatenate([x, y[:, -1:]], axis=1)[None].repeat(5, 0)
    tr.run(tokens, mask[None].repeat(5, 0), ids[None].repeat(5, 0))
    assert not m.named_params()["wpe"].any() and m.named_params()["wab"].any()


def test_shift_right_moves_sequences_and_masks_together():
    from odin.train import shift_right

    tokens = np.array([[1, 5, 6, 2, 0, 0, 0], [1, 5, 6, 7, 8, 9, 2]], np.int32)
    mask = np.array([[0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], np.uint8)
    shifts = set()
    for seed in range(30):
        t, m = tokens.copy(), mask.copy()
        shift_right(t, m, 0, np.random.default_rng(seed))
        s = int(np.argmax(t[0] == 1))
        shifts.add(s)
        assert t[0, s:s + 4].tolist() == [1, 5, 6, 2] and not t[0, :s].any()
        assert m[0, s + 1:s + 3].tolist() == [1, 1] and m[0].sum() == 2  # same targets still masked
        assert t[1].tolist() == tokens[1].tolist()  # a full row has no room to move
    assert shifts == {0, 1, 2, 3}


def test_next_place_ids_couple_the_predicting_token_with_its_operand_digits():
    ids = abacus_ids(np.array([TOK.encode("123+45=861")]), D0, SEP, 32, np.array([0]), next_place=True)[0]
    assert ids.tolist() == [3, 2, 1, 0, 2, 1, 1, 2, 3, 4]  # "=" predicts place 1, "8" place 2, ...
    shifted = abacus_ids(np.array([TOK.encode("12+3=51")]), D0, SEP, 32, np.array([4]), next_place=True)[0]
    assert shifted.tolist() == [6, 5, 0, 5, 5, 6, 7]  # the separator shifts with the digits
    with pytest.raises(ValueError, match="needs Abacus"):
        ModelConfig(abacus_answer="next")


def _digit_biased(shape: GPTShape) -> GPT:
    """A model whose next token is read off the Abacus id it is fed (id k -> digit (3k+1) % 10),
    so generation walks digit runs in which a wrong id changes the very next token."""
    m = GPT(shape)
    m.init_weights(5)
    params = m.named_params()
    for k in range(shape.n_abacus):
        params["wab"][k] = 20 * params["wte"][D0 + (3 * k + 1) % 10]
    return m


@pytest.mark.parametrize("next_place", [False, True])
def test_generation_feeds_the_training_ids_in_both_id_schemes(next_place):
    from dataclasses import replace

    m = _digit_biased(replace(SHAPE, abacus_next=next_place))
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in ("123+45=", "7+8=", "9999+1=")]
    for prompt in prompts:
        streamed = list(stream_tokens(m, prompt, 10, Sampler(temperature=0.0), stop_ids=(TOK.end_id,)))
        assert sum(D0 <= t < D0 + 10 for t in streamed) >= 4, "the test needs a digit run"
        batched = m.generate_greedy(prompts, max_new=10, end_id=TOK.end_id)[prompts.index(prompt)]
        assert streamed == batched
        m.forward(np.array([prompt + streamed[:-1]], np.int32))  # ids from abacus_ids, offset 0
        full = m.logits()[0]
        predicted = [int(full[i].argmax()) for i in range(len(prompt) - 1, len(prompt) + len(streamed) - 1)]
        assert predicted == streamed
    other = _digit_biased(replace(SHAPE, abacus_next=not next_place))  # same weights, other ids
    assert m.generate_greedy(prompts, 10, TOK.end_id) != other.generate_greedy(prompts, 10, TOK.end_id)
