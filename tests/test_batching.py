import numpy as np
import pytest

from odin.data.arithmetic import ArithmeticConfig, sample_unique_examples
from odin.data.batching import (
    BatchSampler,
    encode_examples,
    make_batch,
    make_prompt_batch,
    max_sequence_length,
)
from odin.data.examples import Example
from odin.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer()


def _examples(n: int = 37, seed: int = 0) -> list[Example]:
    return sample_unique_examples(ArithmeticConfig(ops=("add", "mul"), max_digits=3), n, seed=seed)


def test_encoded_layout_and_lengths():
    examples = [Example("12+3=", "15", "add", 2), Example("7*8=", "56", "mul", 1)]
    encoded = encode_examples(examples, TOKENIZER)
    assert len(encoded) == 2
    assert encoded.tokens.dtype == np.int32
    first = encoded.sequence(0).tolist()
    assert first == [TOKENIZER.bos_id, *TOKENIZER.encode("12+3=15"), TOKENIZER.end_id]
    assert encoded.prompt_lengths.tolist() == [1 + 5, 1 + 4]
    # 1 + 5 + 2 + 1 = 9 tokens -> needs T = 8
    assert max_sequence_length(encoded) == 8


def test_mask_covers_exactly_answer_and_end_targets():
    examples = [Example("12+3=", "15", "add", 2), Example("7*8=", "56", "mul", 1)]
    encoded = encode_examples(examples, TOKENIZER)
    tokens, mask = make_batch(encoded, [0, 1], context=12)
    assert tokens.shape == (2, 13) and tokens.dtype == np.int32
    assert mask.shape == (2, 12) and mask.dtype == np.uint8
    for row, example in enumerate(examples):
        targets = tokens[row, 1:]
        answer_ids = TOKENIZER.encode(example.answer) + [TOKENIZER.end_id]
        assert targets[mask[row] == 1].tolist() == answer_ids
        # masked targets are exactly the positions holding answer/end, contiguous
        start = 1 + len(example.prompt) - 1
        expected = np.zeros(12, dtype=np.uint8)
        expected[start : start + len(answer_ids)] = 1
        assert mask[row].tolist() == expected.tolist()
        length = 1 + len(example.prompt) + len(example.answer) + 1
        assert (tokens[row, length:] == TOKENIZER.pad_id).all()
        assert tokens[row, 0] == TOKENIZER.bos_id


def test_mask_all_covers_every_non_pad_target():
    encoded = encode_examples([Example("12+3=", "15", "add", 2)], TOKENIZER)
    tokens, mask = make_batch(encoded, [0], context=12, loss_on="all")
    assert mask[0].tolist() == (tokens[0, 1:] != TOKENIZER.pad_id).astype(np.uint8).tolist()
    assert mask[0].sum() == 8
    with pytest.raises(ValueError, match="loss_on"):
        make_batch(encoded, [0], context=12, loss_on="prompt")


def test_too_long_example_names_index_and_lengths():
    examples = [Example("1+1=", "2", "add", 1), Example("123456+1=", "123457", "add", 6)]
    encoded = encode_examples(examples, TOKENIZER)
    with pytest.raises(ValueError, match=r"example 1 is 17 tokens .* context >= 16, but T = 10"):
        BatchSampler(encoded, batch_size=2, context=10, seed=0)
    with pytest.raises(ValueError, match=r"example 1 is 17 tokens"):
        make_batch(encoded, [1], context=10)


def _take(sampler: BatchSampler, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [sampler.next_batch() for _ in range(count)]


def test_sampler_deterministic_and_seed_dependent():
    encoded = encode_examples(_examples(), TOKENIZER)
    first = _take(BatchSampler(encoded, 8, 16, seed=5), 12)
    second = _take(BatchSampler(encoded, 8, 16, seed=5), 12)
    other = _take(BatchSampler(encoded, 8, 16, seed=6), 12)
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(first, second))
    assert any((a[0] != c[0]).any() for a, c in zip(first, other))


def test_sampler_epoch_is_a_permutation_without_drops():
    examples = _examples(40)
    encoded = encode_examples(examples, TOKENIZER)
    sampler = BatchSampler(encoded, batch_size=8, context=16, seed=1)
    indices = np.concatenate([sampler.next_indices() for _ in range(5)])
    assert sorted(indices.tolist()) == list(range(40))
    assert sampler.state_dict()["epoch"] == 1 and sampler.state_dict()["position"] == 0
    next_epoch = np.concatenate([sampler.next_indices() for _ in range(5)])
    assert sorted(next_epoch.tolist()) == list(range(40))
    assert next_epoch.tolist() != indices.tolist()


def test_sampler_resume_mid_epoch_matches_uninterrupted_run():
    encoded = encode_examples(_examples(37), TOKENIZER)  # 37 is not a multiple of 8: batches cross epochs
    reference = BatchSampler(encoded, 8, 16, seed=9)
    expected = _take(reference, 20)

    interrupted = BatchSampler(encoded, 8, 16, seed=9)
    _take(interrupted, 7)
    state = interrupted.state_dict()
    assert state["position"] != 0
    resumed = BatchSampler(encoded, 8, 16, seed=123)  # seed comes from the state
    resumed.load_state_dict(dict(state))
    for (tokens, mask), (want_tokens, want_mask) in zip(_take(resumed, 13), expected[7:]):
        assert (tokens == want_tokens).all() and (mask == want_mask).all()


def test_sampler_state_validation():
    encoded = encode_examples(_examples(10), TOKENIZER)
    sampler = BatchSampler(encoded, 4, 16, seed=0)
    with pytest.raises(ValueError, match="saved for 11 examples"):
        sampler.load_state_dict({"seed": 0, "epoch": 0, "position": 0, "n_examples": 11})
    with pytest.raises(ValueError, match="'position'"):
        sampler.load_state_dict({"seed": 0, "epoch": 0, "position": -1})


def test_small_set_fills_full_batches():
    encoded = encode_examples(_examples(3), TOKENIZER)
    tokens, mask = BatchSampler(encoded, batch_size=8, context=16, seed=0).next_batch()
    assert tokens.shape == (8, 17) and mask.shape == (8, 16)
    assert (mask.sum(axis=1) > 0).all()


def test_make_prompt_batch():
    prompts = ["1+2=", "33*4="]
    batch = make_prompt_batch(prompts, TOKENIZER)
    assert batch == [[TOKENIZER.bos_id, *TOKENIZER.encode(prompt)] for prompt in prompts]
