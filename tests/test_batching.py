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


def _mixed_lengths(n: int = 83) -> list[Example]:
    """Examples from 1 to ~40 tokens: where length buckets matter."""
    return [Example(prompt=f"{'7' * (1 + i % 29)}+{i}=", answer=str(i) * (1 + i % 4), task="add", difficulty=1)
            for i in range(n)]


def test_bucketed_pools_hold_the_plain_stream_with_batches_of_similar_length():
    encoded = encode_examples(_mixed_lengths(), CharTokenizer())
    context = max_sequence_length(encoded)
    plain = BatchSampler(encoded, 8, context, seed=4)
    bucketed = BatchSampler(encoded, 8, context, seed=4, bucket_pool=5)
    pools = [[plain.next_indices() for _ in range(5)] for _ in range(3)]
    bucketed_T, plain_T = 0, 0
    for pool in pools:
        got = [bucketed.next_batch() for _ in range(5)]
        # the same examples as the plain stream's next 5 batches, regrouped by length
        rows = sorted(tuple(row[row != encoded.pad_id]) for tokens, _ in got for row in tokens)
        expected = sorted(tuple(encoded.sequence(int(i))) for batch in pool for i in batch)
        assert rows == expected
        for tokens, mask in got:
            lengths = (tokens != encoded.pad_id).sum(axis=1)
            assert tokens.shape[1] == lengths.max() and mask.shape == (8, tokens.shape[1] - 1)
            bucketed_T += tokens.shape[1] - 1
        plain_T += 5 * context
    assert bucketed_T < 0.8 * plain_T
    assert bucketed.state_dict()["pool_index"] == 0 and bucketed.state_dict()["bucket_pool"] == 5


def test_bucketed_sampler_resumes_exactly_mid_pool_and_refuses_other_batching():
    encoded = encode_examples(_mixed_lengths(), CharTokenizer())
    context = max_sequence_length(encoded)
    straight = BatchSampler(encoded, 8, context, seed=9, bucket_pool=4)
    reference = [straight.next_batch() for _ in range(23)]
    first = BatchSampler(encoded, 8, context, seed=9, bucket_pool=4)
    for _ in range(14):  # 3 pools and 2 batches of the fourth
        first.next_batch()
    state = first.state_dict()
    assert state["pool_index"] == 2
    resumed = BatchSampler(encoded, 8, context, seed=9, bucket_pool=4)
    resumed.load_state_dict(state)
    for want in reference[14:]:
        got = resumed.next_batch()
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="bucket_pool"):
        BatchSampler(encoded, 8, context, seed=9).load_state_dict(state)
    with pytest.raises(ValueError, match="batch size"):
        BatchSampler(encoded, 4, context, seed=9, bucket_pool=4).load_state_dict(state)
    with pytest.raises(ValueError, match="bucket_pool must be"):
        BatchSampler(encoded, 8, context, seed=9, bucket_pool=-1)
