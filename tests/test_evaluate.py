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
from odin.data.dataset import build_dataset, build_mixed_dataset, load_manifest
from odin.data.examples import Example
from odin.evaluate import (
    FAILURE_KINDS,
    EvalResult,
    TokenStats,
    classify_failure,
    decode_until_end,
    default_splits,
    eval_options,
    evaluate_checkpoint,
    evaluate_examples,
    format_summary,
    greedy_predictions,
    score_predictions,
    teacher_forced_counts,
    teacher_forced_stats,
    token_counts_from_logits,
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
        "expected_display": "46", "got_display": "56", "kind": "off_by_one", "positions": [1]}]
    assert [p.name for p in out.parent.iterdir()] == ["val.errors.jsonl"]  # atomic: no temp file left

    empty = EvalResult(n=0, correct=0, token_stats=None, by_task={}, by_difficulty={}, errors=[])
    table = format_summary({"val": result, "heldout": empty})
    lines = table.splitlines()
    assert lines[0].split() == ["split", "n", "exact", "%", "tok", "acc", "%", "ppl"]
    assert lines[1].split() == ["val", "2", "50.00", "75.00", "1.5"]
    assert lines[2].split() == ["heldout", "0", "-", "-", "-"]
    assert len({len(line) for line in lines[:3]}) == 1  # right-aligned columns
    # one task: no per-task table; the failure breakdown names the kind and the digit position
    assert lines[3:] == ["", "wrong answers by kind", "  val: off_by_one 1; digit positions 1:1"]
    assert format_summary({"val": result, "heldout": empty}, breakdown=False).splitlines() == lines[:3]
    assert result.to_dict()["by_difficulty"] == {"1": {"correct": 1, "count": 1, "exact": 1.0, "token_accuracy": None},
                                                 "2": {"correct": 0, "count": 1, "exact": 0.0, "token_accuracy": None}}


FAILURE_CASES = [  # (task, prompt, expected, got, kind, positions)
    ("add", "58+67=", "125", "115", "carry", (1,)),        # the tens column's carry was dropped
    ("add", "58+67=", "125", "25", "carry", (2,)),         # the hundreds digit is the final carry
    ("add", "12+34=", "46", "56", "off_by_one", (1,)),     # off by 10 but no carry there
    ("add", "58+67=", "125", "126", "off_by_one", (0,)),
    ("add", "5+5=", "10", "9", "off_by_one", (0, 1)),
    ("sub", "52-17=", "35", "45", "carry", (1,)),          # a borrow dropped
    ("sub", "3-7=", "-4", "4", "sign", ()),
    ("sub", "5-5=", "0", "-1", "off_by_one", (0,)),
    ("mul", "12*34=", "408", "4080", "length", (0, 1, 2, 3)),  # aligned from the units digit
    ("mul", "12*34=", "408", "5408", "length", (3,)),
    ("mul", "12*34=", "408", "1408", "off_by_one", (3,)),     # off by exactly 1000
    ("mul", "12*34=", "408", "418", "off_by_one", (1,)),
    ("mul", "12*34=", "408", "438", "digits", (1,)),
    ("mul", "12*34=", "408", "4o8", "format", None),
    ("add", "5+5=", "10", "010", "format", None),          # not canonical
    ("add", "5+5=", "10", "", "format", None),
    ("div", "17/5=", "3r2", "3r1", "remainder", (0,)),
    ("div", "17/5=", "3r2", "4r2", "off_by_one", (0,)),
    ("div", "17/5=", "3r2", "3", "format", None),
    ("linear", "3x+5=20?", "x=5", "x=-5", "sign", ()),
    ("linear", "3x+5=20?", "x=5", "x=15", "wrong_x", (1,)),
    ("linear", "3x+5=20?", "x=5", "5", "format", None),
    ("system", "2x+3y=12;x-y=1?", "x=3,y=2", "x=3,y=1", "wrong_y", (0,)),
    ("system", "2x+3y=12;x-y=1?", "x=3,y=2", "x=4,y=2", "wrong_x", (0,)),
    ("system", "2x+3y=12;x-y=1?", "x=3,y=2", "x=1,y=1", "wrong_xy", None),
    ("system", "2x+3y=12;x-y=1?", "x=3,y=2", "x=2,y=3", "swapped", None),
    ("system", "2x+3y=12;x-y=1?", "x=3,y=2", "x=-3,y=-2", "sign", None),
    ("system", "2x+3y=12;x-y=1?", "x=3,y=2", "x=3 y=2", "format", None),
    ("simplify", "3x+2-x+4=", "2x+6", "2x+5", "wrong_constant", None),
    ("simplify", "3x+2-x+4=", "2x+6", "3x+6", "wrong_coefficient", None),
    ("simplify", "3x+2-x+4=", "2x+6", "x+1", "wrong_both", None),
    ("simplify", "3x+2-x+4=", "2x+6", "-2x-6", "sign", None),
    ("simplify", "3x+2-x+4=", "2x+6", "1x+6", "format", None),    # not canonical
    ("simplify", "3x+2-x+4=", "2x+6", "6+2x", "format", None),
    ("code", "a=3\nprint(a*4)\n#out:", "12", "13", "off_by_one", (0,)),
    ("code", "s='ab'\nprint(s[::-1])\n#out:", "ba", "ab", "wrong_output", None),
    ("code", "a=3\nprint(a*4)\n#out:", "12", "", "format", None),
    ("poetry", "rhyme?", "moon", "june", "wrong", None),
]


@pytest.mark.parametrize("task,prompt,expected,got,kind,positions", FAILURE_CASES)
def test_failure_kinds_on_hand_made_answers(task, prompt, expected, got, kind, positions):
    example = Example(prompt, expected, task, 1)
    assert classify_failure(example, got) == (kind, positions)
    assert kind in FAILURE_KINDS
    result = score_predictions([example], [got])
    assert result.correct == 0 and result.failure_kinds == {kind: 1}
    assert (result.errors[0].kind, result.errors[0].positions) == (kind, positions)


def test_failure_analysis_reads_reversed_and_scratchpad_answers_in_normal_order():
    example = Example("58+67=", "521", "add", 2)  # reversed 125
    assert classify_failure(example, "511", is_reversed=True) == ("carry", (1,))
    steps = Example("58+67=", "8+7+0=15;5+6+1=12#125", "add", 2)
    assert classify_failure(steps, "8+7+0=15;5+6+0=11#115") == ("carry", (1,))
    assert classify_failure(steps, "8+7+0=15;5+6+1=12#125", ended=False) == ("no_end", None)


def test_scratchpad_exact_match_compares_final_results():
    examples = [Example("58+67=", "8+7+0=15;5+6+1=12#125", "add", 2)] * 4
    predictions = ["8+7+0=15;5+6+1=12#125", "8+7+0=14;5+6+1=12#125", "125", "8+7+0=15;5+6+1=12#124"]
    result = score_predictions(examples, predictions)
    assert result.correct == 3  # wrong steps but the right final result still count as correct
    assert [e.got for e in result.errors] == ["8+7+0=15;5+6+1=12#124"]
    assert result.errors[0].kind == "off_by_one"
    assert score_predictions(examples[:1], ["8+7+0=15;5+6+1=12#125"], ended=[False]).correct == 0


def test_mixed_dataset_reverses_and_displays_only_its_reversed_tasks():
    examples = [make_example("add", 12, 34, reverse_answer=True), Example("p\n#out:", "120", "code", 1)]
    result = score_predictions(examples, ["65", "121"], reverse_answer=True, reversed_tasks=("add",))
    add_error, code_error = result.errors
    assert (add_error.expected_display, add_error.got_display, add_error.kind) == ("46", "56", "off_by_one")
    assert (code_error.expected_display, code_error.got_display, code_error.kind) == (None, None, "off_by_one")
    assert eval_options({"settings": {"reverse_answer": True, "reversed_tasks": ["add"]}}) == {
        "reverse_answer": True, "reversed_tasks": ("add",)}
    assert eval_options({"settings": {"reverse_answer": True}}) == {"reverse_answer": True, "reversed_tasks": None}


def test_token_accuracy_by_task_and_difficulty():
    examples = [Example("1+2=", "3", "add", 1), Example("12+30=", "42", "add", 2), Example("9-3=", "6", "sub", 1)]
    counts = np.array([[2, 2, 0.1], [1, 3, 2.0], [0, 2, 3.0]])
    result = score_predictions(examples, ["3", "43", "5"], token_counts=counts)
    assert (result.token_stats.correct, result.token_stats.total) == (3, 7)
    assert result.token_stats.nll_sum == pytest.approx(5.1)
    assert result.by_task["add"].token_accuracy == pytest.approx(3 / 5)
    assert result.by_difficulty[1].token_accuracy == pytest.approx(2 / 4)
    assert result.by_task_difficulty["add"][2].token_accuracy == pytest.approx(1 / 3)
    assert result.by_task_difficulty["add"][2].exact == 0.0 and result.by_task_difficulty["add"][1].exact == 1.0
    data = json.loads(json.dumps(result.to_dict(with_errors=True)))
    assert data["by_task_difficulty"]["sub"]["1"] == {"correct": 0, "count": 1, "exact": 0.0, "token_accuracy": 0.0}
    assert data["failure_kinds"] == {"off_by_one": 2}
    assert data["failure_kinds_by_task"] == {"add": {"off_by_one": 1}, "sub": {"off_by_one": 1}}
    assert data["wrong_digit_positions"] == {"0": 2}
    assert [e["kind"] for e in data["errors"]] == ["off_by_one", "off_by_one"]
    with pytest.raises(ValueError, match="token_counts"):
        score_predictions(examples, ["3", "43", "5"], token_counts=counts[:2])


def test_per_row_token_counts_sum_to_the_set_stats(rng):
    logits = rng.normal(size=(3, 5, 7))
    targets = rng.integers(0, 7, size=(3, 5))
    mask = (rng.random((3, 5)) < 0.6).astype(np.uint8)
    mask[1] = 0  # a row with nothing counted
    counts = token_counts_from_logits(logits, targets, mask)
    stats = token_stats_from_logits(logits, targets, mask)
    assert counts.shape == (3, 3) and tuple(counts[1]) == (0, 0, 0)
    assert (int(counts[:, 0].sum()), int(counts[:, 1].sum())) == (stats.correct, stats.total)
    assert counts[:, 2].sum() == pytest.approx(stats.nll_sum)
    for row in range(3):
        single = token_stats_from_logits(logits[row:row + 1], targets[row:row + 1], mask[row:row + 1])
        assert (counts[row, 0], counts[row, 1]) == (single.correct, single.total)


def test_summary_has_a_task_table_and_failure_lines():
    examples = [Example("1+2=", "3", "add", 1), Example("3x=6?", "x=2", "linear", 1)]
    val = score_predictions(examples, ["3", "x=3"])
    held = score_predictions(examples[:1], ["4"])
    lines = format_summary({"val": val, "heldout_arith": held}).splitlines()
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["exact", "%", "by", "task", "val", "heldout_arith"]
    assert table[1].split() == ["add", "100.00", "0.00"]
    assert table[2].split() == ["linear", "0.00", "-"]
    assert "  val: wrong_x 1; digit positions 0:1" in lines
    assert "  heldout_arith: off_by_one 1; digit positions 0:1" in lines


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
    counts = teacher_forced_counts(model, TOKENIZER, examples, batch=8)  # per example, in input order
    assert counts[:, 1].tolist() == [len(e.answer) + 1 for e in examples]  # answer tokens + <end>
    assert counts[:, 2].sum() == pytest.approx(stats.nll_sum)


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


def test_evaluate_checkpoint_over_a_longer_context(tmp_path):
    """A model without learned positions, trained on a context too short for the held-out
    split: refused with the context it needs, scored over a longer one with context=."""
    config = RunConfig(model=ModelConfig(n_layer=1, d_model=32, n_head=2, context=12, positions="alibi"),
                       train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    data = tmp_path / "data"
    build_dataset(data, seed=1, n_examples=100, ops=["add"], max_digits=1, heldout_digits=4, n_heldout=5)
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=1)
    with pytest.raises(ValueError, match="heldout.*needs context >= 1[3-9]"):
        evaluate_checkpoint(tmp_path / "ckpt", data)
    results = evaluate_checkpoint(tmp_path / "ckpt", data, context=24)
    assert [results[s].n for s in results] == [10, 10, 5]
    learned = RunConfig(model=ModelConfig(n_layer=1, d_model=32, n_head=2, context=9), train=TrainConfig(steps=1))
    save_model_checkpoint(tmp_path / "learned", model_from_config(learned), TOKENIZER, learned, step=1)
    with pytest.raises(ValueError, match="learned positions"):
        evaluate_checkpoint(tmp_path / "learned", data, context=24)


def test_evaluate_checkpoint_finds_every_heldout_split_of_a_mixed_dataset(tmp_path, trained):
    config, model = trained
    data = tmp_path / "mixed"
    build_mixed_dataset(data, seed=3, n_examples=60, n_heldout=4, reverse_answer=True,
                        tasks={"arith": {"ops": ["add"], "max_digits": 1},
                               "algebra": {"kinds": ["linear"], "max_level": 1, "heldout_levels": 2}})
    manifest = load_manifest(data)
    assert default_splits(manifest) == ["val", "test", "heldout_algebra", "heldout_arith"]
    save_model_checkpoint(tmp_path / "ckpt", model, TOKENIZER, config, step=250, trainer_state={"reverse_answer": True})
    results = evaluate_checkpoint(tmp_path / "ckpt", data, errors_dir=tmp_path / "errors")
    assert list(results) == ["val", "test", "heldout_algebra", "heldout_arith"]
    assert [results[s].n for s in results] == [6, 6, 4, 4]
    assert set(results["val"].by_task) == {"add", "linear"}
    assert results["val"].by_task["add"].exact >= 0.6  # the model knows 1-digit addition...
    assert results["heldout_algebra"].by_task["linear"].exact == 0.0  # ...and no algebra at all
    for split, result in results.items():
        assert sum(result.failure_kinds.values()) == len(result.errors) == result.n - result.correct
        for error in result.errors:  # only the arithmetic answers are written reversed
            assert (error.expected_display is None) == (error.task == "linear")
        records = [json.loads(line) for line in (tmp_path / "errors" / f"{split}.errors.jsonl").read_text().splitlines()]
        assert [r["kind"] for r in records] == [e.kind for e in result.errors]
    assert "wrong answers by kind" in format_summary(results)


def test_fixed_width_answers_are_classified_by_their_digits():
    from odin.data.examples import Example
    from odin.evaluate import classify_failure

    example = Example(prompt="37572905+33911541=", answer="6444841700", task="add", difficulty=8)  # 71484446
    assert classify_failure(example, "6434841700", is_reversed=True) == classify_failure(
        Example(prompt=example.prompt, answer="64448417", task="add", difficulty=8), "64348417", is_reversed=True)
    kind, positions = classify_failure(example, "6434841700", is_reversed=True)
    assert kind == "off_by_one" and positions == (2,)  # the hundreds: 71484446 vs 71484346
