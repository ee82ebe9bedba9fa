"""odin.evaluate: metric arithmetic on hand-made predictions, then on a real (tiny, briefly
trained) model and a built dataset."""
import json
import math

import numpy as np
import pytest

from odin.checkpoint import model_from_config, save_model_checkpoint
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.data.arithmetic import make_example
from odin.data.batching import BatchSampler, encode_examples, make_batch
from odin.data.dataset import build_dataset
from odin.data.examples import Example
from odin.evaluate import (
    EvalResult,
    TokenStats,
    decode_until_end,
    evaluate_checkpoint,
    evaluate_examples,
    format_summary,
    greedy_predictions,
    score_predictions,
    teacher_forced_stats,
    token_stats_from_logits,
    write_errors,
)
from odin.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer()


# ------------------------------------------------------------------ hand-made predictions
def test_exact_match_and_breakdowns():
    examples = [
        Example("1+2=", "3", "add", 1),
        Example("12+30=", "42", "add", 2),
        Example("9-3=", "6", "sub", 1),
        Example("7*8=", "56", "mul", 1),
        Example("99-1=", "98", "sub", 2),
    ]
    predictions = ["3", "43", "6", "56", "98"]
    ended = [True, True, True, False, True]  # "56" without <end> is not an exact match
    result = score_predictions(examples, predictions, ended=ended)
    assert (result.n, result.correct) == (5, 3)
    assert result.exact == pytest.approx(0.6)
    assert {k: (v.correct, v.count) for k, v in result.by_task.items()} == {"add": (1, 2), "mul": (0, 1), "sub": (2, 2)}
    assert {k: (v.correct, v.count) for k, v in result.by_difficulty.items()} == {1: (2, 3), 2: (1, 2)}
    assert result.by_task["add"].exact == pytest.approx(0.5)
    assert [(e.prompt, e.expected, e.got, e.task, e.difficulty, e.ended) for e in result.errors] == [
        ("12+30=", "42", "43", "add", 2, True), ("7*8=", "56", "56", "mul", 1, False)]
    assert result.errors[0].expected_display is None
    assert math.isnan(result.token_accuracy) and math.isnan(result.perplexity)


def test_comparison_is_exact_not_prefix():
    examples = [Example("5+5=", "10", "add", 1)] * 3
    result = score_predictions(examples, ["1", "100", "10 "])
    assert result.correct == 0 and len(result.errors) == 3


def test_reversed_answers_show_normal_order():
    examples = [make_example("add", 123, 456, reverse_answer=True), make_example("sub", 3, 7, reverse_answer=True)]
    assert examples[0].answer == "975"
    result = score_predictions(examples, ["985", "-4"], reverse_answer=True)  # compared in reversed form
    assert result.correct == 1  # "-4" reversed is "-4"
    error = result.errors[0]
    assert (error.expected, error.got, error.expected_display, error.got_display) == ("975", "985", "579", "589")


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        score_predictions([Example("1+1=", "2", "add", 1)], ["2", "2"])


def test_token_stats_from_hand_made_logits():
    # B=1, T=3, V=4; positions 1 and 2 are counted
    logits = np.log(np.array([[[0.25, 0.25, 0.25, 0.25],
                               [0.10, 0.70, 0.10, 0.10],
                               [0.50, 0.20, 0.20, 0.10]]]))
    targets = np.array([[0, 1, 2]])
    mask = np.array([[0, 1, 1]], np.uint8)
    stats = token_stats_from_logits(logits, targets, mask)
    assert (stats.correct, stats.total) == (1, 2)  # position 1 right (argmax 1), position 2 wrong (argmax 0)
    assert stats.nll_sum == pytest.approx(-math.log(0.7) - math.log(0.2))
    assert stats.accuracy == 0.5
    assert stats.perplexity == pytest.approx(math.exp((-math.log(0.7) - math.log(0.2)) / 2))
    empty = token_stats_from_logits(logits, targets, np.zeros_like(mask))
    assert empty.total == 0 and math.isnan(empty.perplexity)
    assert (stats + stats).total == 4


def test_decode_until_end():
    ids = TOKENIZER.encode("42") + [TOKENIZER.end_id] + TOKENIZER.encode("9")
    assert decode_until_end(TOKENIZER, ids) == ("42", True)
    assert decode_until_end(TOKENIZER, TOKENIZER.encode("42")) == ("42", False)
    assert decode_until_end(TOKENIZER, [TOKENIZER.encode("4")[0], 500]) == ("4\ufffd", False)


def test_write_errors_jsonl_and_summary(tmp_path):
    examples = [make_example("add", 12, 34, reverse_answer=True), make_example("add", 1, 1, reverse_answer=True)]
    result = score_predictions(examples, ["65", "2"], reverse_answer=True,
                               token_stats=TokenStats(correct=3, total=4, nll_sum=4 * math.log(1.5)))
    out = tmp_path / "sub" / "val.errors.jsonl"
    write_errors(out, result)
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{
        "prompt": "12+34=", "expected": "64", "got": "65", "task": "add", "difficulty": 2, "ended": True,
        "expected_display": "46", "got_display": "56"}]
    assert [p.name for p in out.parent.iterdir()] == ["val.errors.jsonl"]  # atomic: no temp file left

    empty = EvalResult(n=0, correct=0, token_stats=None, by_task={}, by_difficulty={}, errors=[])
    table = format_summary({"val": result, "heldout": empty})
    lines = table.splitlines()
    assert lines[0].split() == ["split", "n", "exact", "%", "tok", "acc", "%", "ppl"]
    assert lines[1].split() == ["val", "2", "50.00", "75.00", "1.5"]
    assert lines[2].split() == ["heldout", "0", "-", "-", "-"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns
    assert result.to_dict()["by_difficulty"] == {"1": {"correct": 1, "count": 1, "exact": 1.0},
                                                 "2": {"correct": 0, "count": 1, "exact": 0.0}}


# ------------------------------------------------------------------ with a model
def _config(context=16) -> RunConfig:
    return RunConfig(model=ModelConfig(n_layer=2, d_model=64, n_head=4, context=context), train=TrainConfig(steps=250))


ALL_ONE_DIGIT = [make_example("add", a, b, reverse_answer=True) for a in range(10) for b in range(10)]


@pytest.fixture(scope="module")
def trained():
    """1-digit addition with reversed answers, memorised in ~250 steps (about a second)."""
    config = _config()
    model = model_from_config(config)
    model.init_weights(0)
    sampler = BatchSampler(encode_examples(ALL_ONE_DIGIT, TOKENIZER), 100, 7, seed=0)
    steps = config.train.steps
    for step in range(1, steps + 1):
        tokens, mask = sampler.next_batch()
        model.zero_grad()
        model.forward(tokens[:, :-1], tokens[:, 1:], mask)
        model.backward()
        model.adamw_step(lr=3e-3 * (1 - step / (steps + 1)), step=step, weight_decay=0.0)
    return config, model


def test_teacher_forced_loss_matches_native_loss():
    model = model_from_config(_config())
    model.init_weights(3)
    examples = ALL_ONE_DIGIT[:37]
    encoded = encode_examples(examples, TOKENIZER)
    tokens, mask = make_batch(encoded, range(len(examples)), 7)
    native_mean = model.forward(tokens[:, :-1], tokens[:, 1:], mask)
    stats = teacher_forced_stats(model, TOKENIZER, examples, batch=8)  # several batches of different T
    assert stats.total == int(mask.sum())
    assert stats.mean_loss == pytest.approx(native_mean, rel=1e-4)


def test_evaluate_trained_model(trained):
    _, model = trained
    result = evaluate_examples(model, TOKENIZER, ALL_ONE_DIGIT, reverse_answer=True, batch=32)
    assert result.n == 100
    assert result.exact >= 0.9
    assert result.token_accuracy >= 0.9
    assert 1.0 <= result.perplexity < 1.5
    assert sum(g.count for g in result.by_difficulty.values()) == 100
    # every exactly-matched example is also right token by token under teacher forcing
    right = [e for e in ALL_ONE_DIGIT if e.prompt not in {w.prompt for w in result.errors}]
    assert teacher_forced_stats(model, TOKENIZER, right).accuracy == 1.0
    # a greedy decode batched differently gives the same answers
    assert greedy_predictions(model, TOKENIZER, ALL_ONE_DIGIT, batch=7) == greedy_predictions(
        model, TOKENIZER, ALL_ONE_DIGIT, batch=256)


def test_untrained_model_scores_low_and_never_crashes():
    model = model_from_config(_config())
    model.init_weights(1)
    result = evaluate_examples(model, TOKENIZER, ALL_ONE_DIGIT[:20], reverse_answer=True, max_new=3)
    assert result.correct <= 2 and len(result.errors) == 20 - result.correct
    assert all(len(TOKENIZER.encode(e.got)) <= 3 for e in result.errors)


def test_prompt_longer_than_context_is_a_clear_error():
    model = model_from_config(_config(context=4))
    model.init_weights(0)
    with pytest.raises(ValueError, match="context"):
        evaluate_examples(model, TOKENIZER, [make_example("add", 12, 34)], reverse_answer=False)


def test_evaluate_checkpoint_on_built_dataset(tmp_path, trained):
    config, model = trained
    data = tmp_path / "data"
    build_dataset(data, seed=1, n_examples=100, ops=["add"], max_digits=1, reverse_answer=True,
                  heldout_digits=2, n_heldout=6)
    manifest = json.loads((data / "dataset.json").read_text())
    assert manifest["settings"]["reverse_answer"] is True
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=250, trainer_state={"reverse_answer": True})

    results = evaluate_checkpoint(tmp_path / "ckpt", data, errors_dir=tmp_path / "errors")
    assert list(results) == ["val", "test", "heldout"]
    assert [results[s].n for s in results] == [10, 10, 6]
    assert results["val"].exact >= 0.8 and results["test"].exact >= 0.8
    assert results["val"].reverse_answer
    for split, result in results.items():
        lines = (tmp_path / "errors" / f"{split}.errors.jsonl").read_text().splitlines()
        assert len(lines) == len(result.errors)
    assert format_summary(results).splitlines()[1].startswith("val ")

    limited = evaluate_checkpoint(tmp_path / "ckpt", data, splits=["test"], limit=3)
    assert list(limited) == ["test"] and limited["test"].n == 3

    # a dataset in the other answer format is refused, not silently scored as wrong
    plain = tmp_path / "plain"
    build_dataset(plain, seed=1, n_examples=100, ops=["add"], max_digits=1, n_heldout=0)
    with pytest.raises(ValueError, match="reverse_answer"):
        evaluate_checkpoint(tmp_path / "ckpt", plain)
    save_model_checkpoint(tmp_path / "ckpt2", model, TOKENIZER, config, step=1, with_optimizer=False)
    assert list(evaluate_checkpoint(tmp_path / "ckpt2", plain)) == ["val", "test"]  # no heldout split here
