import argparse
import json
import random

import pytest

from odin.data import cli as data_cli
from odin.data.arithmetic import (
    ArithmeticConfig,
    answer_to_display,
    count_distinct_problems,
    iter_all_problems,
    make_example,
    reverse_answer_digits,
    sample_unique_examples,
)
from odin.data.dataset import (
    DatasetFormatError,
    DatasetNotFoundError,
    build_dataset,
    load_manifest,
    load_split,
)

SPLITS = ("train", "val", "test", "heldout")


def _evaluate(prompt: str) -> str:
    """Independent recomputation from the prompt text with Python ints."""
    assert prompt.endswith("=")
    body = prompt[:-1]
    for symbol in "+-*/":
        if symbol in body:
            left_text, right_text = body.split(symbol)
            left, right = int(left_text), int(right_text)
            if symbol == "+":
                return str(left + right)
            if symbol == "-":
                return str(left - right)
            if symbol == "*":
                return str(left * right)
            return f"{left // right}r{left % right}"
    raise AssertionError(prompt)


def _build(path, **overrides):
    settings = dict(seed=7, n_examples=400, ops=("add", "sub", "mul", "div"), max_digits=2)
    settings.update(overrides)
    return build_dataset(path, **settings)


def test_same_seed_builds_are_byte_identical(tmp_path):
    _build(tmp_path / "a")
    _build(tmp_path / "b")
    for name in (*(f"{split}.jsonl" for split in SPLITS), "dataset.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_different_seed_differs(tmp_path):
    _build(tmp_path / "a", seed=1)
    _build(tmp_path / "b", seed=2)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "b" / "train.jsonl").read_bytes()


def test_no_prompt_shared_between_splits_and_answers_correct(tmp_path):
    manifest = _build(tmp_path)
    seen: dict[str, str] = {}
    for split in SPLITS:
        examples = load_split(tmp_path, split)
        assert len(examples) == manifest["splits"][split]["count"] > 0
        for example in examples:
            assert example.prompt not in seen, (example.prompt, split, seen.get(example.prompt))
            seen[example.prompt] = split
            assert example.answer == _evaluate(example.prompt)
            operands = example.prompt[:-1].replace("+", " ").replace("*", " ").replace("/", " ")
            operands = operands.replace("-", " ").split()
            assert example.difficulty == max(len(text) for text in operands)
            assert example.task in ("add", "sub", "mul", "div")


def test_jsonl_line_format(tmp_path):
    _build(tmp_path)
    raw = (tmp_path / "train.jsonl").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    first = raw.split(b"\n")[0].decode()
    assert list(json.loads(first)) == ["answer", "difficulty", "prompt", "task"]
    assert first.startswith('{"answer":')


def test_heldout_digits_are_larger(tmp_path):
    manifest = _build(tmp_path, max_digits=2)
    assert manifest["settings"]["heldout_digits"] == [3, 4]
    train_max = max(example.difficulty for example in load_split(tmp_path, "train"))
    heldout = load_split(tmp_path, "heldout")
    assert train_max <= 2
    assert min(example.difficulty for example in heldout) >= 3
    assert max(example.difficulty for example in heldout) <= 4


def test_reversed_answers_round_trip(tmp_path):
    _build(tmp_path, reverse_answer=True)
    for example in load_split(tmp_path, "train"):
        assert answer_to_display(example.answer, True) == _evaluate(example.prompt)
    assert reverse_answer_digits("579") == "975"
    assert reverse_answer_digits("-120") == "-021"
    assert reverse_answer_digits("30r3") == "03r3"
    assert answer_to_display("03r3", True) == "30r3"
    assert answer_to_display("975", False) == "975"


def test_division_format_and_no_zero_divisor():
    assert make_example("div", 17, 5).answer == "3r2"
    assert make_example("div", 17, 5).prompt == "17/5="
    assert make_example("div", 8, 4).answer == "2r0"
    config = ArithmeticConfig(ops=("div",), min_digits=1, max_digits=1)
    prompts = [f"{left}/{right}=" for _, left, right in iter_all_problems(config)]
    assert len(prompts) == count_distinct_problems(config) == 10 * 9
    assert not any(prompt.endswith("/0=") for prompt in prompts)
    examples = sample_unique_examples(ArithmeticConfig(ops=("div",), max_digits=2), 300, seed=3)
    assert all(not example.prompt.endswith("/0=") for example in examples)


def test_sampling_unique_and_deterministic():
    config = ArithmeticConfig(ops=("add", "mul"), min_digits=2, max_digits=3)
    first = sample_unique_examples(config, 500, seed=11)
    assert first == sample_unique_examples(config, 500, seed=11)
    assert first != sample_unique_examples(config, 500, seed=12)
    assert len({example.prompt for example in first}) == 500
    assert min(example.difficulty for example in first) >= 2
    # dense request (> half the space) and exhaustive request
    small = ArithmeticConfig(ops=("add",), max_digits=1)
    assert len({e.prompt for e in sample_unique_examples(small, 70, seed=0)}) == 70
    assert len(sample_unique_examples(small, 1000, seed=0)) == 100


def test_sampling_does_not_touch_global_random_state():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    sample_unique_examples(ArithmeticConfig(max_digits=2), 50, seed=5)
    assert random.random() == expected


def test_one_digit_addition_uses_all_problems_and_says_so(tmp_path):
    manifest = build_dataset(tmp_path, seed=0, n_examples=5000, ops=("add",), max_digits=1)
    counts = {name: entry["count"] for name, entry in manifest["splits"].items()}
    assert counts["train"] + counts["val"] + counts["test"] == 100
    assert all(count > 0 for count in counts.values())
    assert any("only 100 distinct" in note for note in manifest["notes"])


def test_empty_split_raises_clear_error(tmp_path):
    with pytest.raises(ValueError, match="split 'val' would be empty"):
        build_dataset(tmp_path, seed=0, n_examples=4, ops=("add",), max_digits=1)


def test_bad_arguments_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown operation 'pow'"):
        _build(tmp_path, ops=("pow",))
    with pytest.raises(ValueError, match="min_digits .* must be <= max_digits"):
        _build(tmp_path, min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="heldout_digits must start above max_digits"):
        _build(tmp_path, heldout_digits=(2, 3))
    with pytest.raises(ValueError, match="sum to 1"):
        _build(tmp_path, split=(0.5, 0.1, 0.1))


def test_load_split_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dataset directory not found"):
        load_split(tmp_path / "missing", "train")
    _build(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="split 'dev' not found"):
        load_split(tmp_path, "dev")
    path = tmp_path / "val.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = '{"prompt": "1+1=", "answer": "2"\n'
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="sha256"):
        load_split(tmp_path, "val")
    with pytest.raises(DatasetFormatError, match=r"val.jsonl line 3: invalid JSON"):
        load_split(tmp_path, "val", verify=False)
    lines[2] = '{"prompt": "1+1=", "answer": "2", "task": "add"}\n'
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"line 3: missing key 'difficulty'"):
        load_split(tmp_path, "val", verify=False)
    assert load_manifest(tmp_path)["seed"] == 7


def test_cli_build(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="odin")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["data", "build", "--out", str(tmp_path / "ds"), "--seed", "3", "--n", "200",
         "--ops", "add,sub", "--max-digits", "2", "--reverse", "--heldout-digits", "3-4"]
    )
    assert args.func(args) == 0
    manifest = load_manifest(tmp_path / "ds")
    assert manifest["settings"]["reverse_answer"] is True
    assert manifest["settings"]["ops"] == ["add", "sub"]
    assert manifest["settings"]["heldout_digits"] == [3, 4]
    assert "train 160" in capsys.readouterr().out
    bad = parser.parse_args(["data", "build", "--out", str(tmp_path / "x"), "--n", "4", "--max-digits", "1"])
    assert data_cli.run_build(bad) == 2
    assert "would be empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "build", "--out", "x", "--ops", "add,pow"])


def _augmented_and_plain_train(tmp_path, **option):
    """Build one small set twice with a prompt option (byte-identical, option recorded) and
    once without it; return both training splits (the sets land in tmp_path/a and /c)."""
    from odin.data.dataset import build_dataset, load_split

    (name, value), = option.items()
    a = build_dataset(tmp_path / "a", seed=3, n_examples=300, ops=["add"], max_digits=3, **option)
    b = build_dataset(tmp_path / "b", seed=3, n_examples=300, ops=["add"], max_digits=3, **option)
    build_dataset(tmp_path / "c", seed=3, n_examples=300, ops=["add"], max_digits=3)
    assert a["splits"] == b["splits"] and a["settings"][name] == value
    return load_split(tmp_path / "a", "train"), load_split(tmp_path / "c", "train")


def test_prompt_spaces_space_only_training_prompts_deterministically(tmp_path):
    import random as _random

    from odin.data.arithmetic import spaced_prompt
    from odin.data.dataset import build_dataset, load_split

    rng = _random.Random(0)
    seen = {spaced_prompt("123+45=", rng, 2) for _ in range(2000)}
    assert all(p.replace(" ", "") == "123+45=" and p.endswith("=") for p in seen)
    assert "123+45=" in seen and " 123  +  45  =" in seen and len(seen) == 81  # 3^4 layouts
    with pytest.raises(ValueError, match="arithmetic prompt"):
        spaced_prompt("x=3", rng, 2)
    train, plain_train = _augmented_and_plain_train(tmp_path, prompt_spaces=3)
    assert [e.prompt.replace(" ", "") for e in train] == [e.prompt for e in plain_train]
    assert sum(" " in e.prompt for e in train) > 0.9 * len(train)  # 1 - (1/4)^4 of them have a space
    for split in ("val", "test", "heldout"):
        assert load_split(tmp_path / "a", split) == load_split(tmp_path / "c", split)
    with pytest.raises(ValueError, match="prompt_spaces"):
        build_dataset(tmp_path / "d", seed=3, n_examples=30, ops=["add"], max_digits=3, prompt_spaces=-1)


def test_prompt_zeros_pad_only_training_operands_to_random_widths(tmp_path):
    import random as _random

    from odin.data.arithmetic import padded_operands, zero_padded_prompt
    from odin.data.dataset import build_dataset, load_split

    rng = _random.Random(0)
    seen = {zero_padded_prompt("123+45=", rng, 5) for _ in range(2000)}
    assert seen == {f"{a}+{b}=" for a in ("123", "0123", "00123") for b in ("45", "045", "0045", "00045")}
    with pytest.raises(ValueError, match="arithmetic prompt"):
        zero_padded_prompt("x=3", rng, 5)
    train, plain_train = _augmented_and_plain_train(tmp_path, prompt_zeros=6)
    assert [e.answer for e in train] == [e.answer for e in plain_train]
    for padded, original in zip(train, plain_train):  # same numbers, at most 6 places written
        left, right = padded.prompt[:-1].split("+")
        assert f"{int(left)}+{int(right)}=" == original.prompt and max(len(left), len(right)) <= 6
    assert sum(e.prompt.startswith("0") for e in train) > 0.5 * len(train)
    for split in ("val", "test", "heldout"):  # scored in one form: both operands at exactly 6 digits
        padded, original = load_split(tmp_path / "a", split), load_split(tmp_path / "c", split)
        assert [e.answer for e in padded] == [e.answer for e in original]
        assert [e.prompt for e in padded] == [padded_operands(e.prompt, 6) for e in original]
        assert all(len(e.prompt) == 6 + 1 + 6 + 1 for e in padded)
    assert padded_operands("12+345=", 4) == "0012+0345=" and padded_operands("x=3", 4) == "x=3"
    assert padded_operands("12345+6=", 4) == "12345+0006="  # never shortens a number
    for bad in (3, -1, 19):  # not wider than max_digits, negative, past the supported digits
        with pytest.raises(ValueError, match="prompt_zeros"):
            build_dataset(tmp_path / "d", seed=3, n_examples=30, ops=["add"], max_digits=3, prompt_zeros=bad)
    with pytest.raises(ValueError, match="held-out"):  # held-out 8-digit numbers do not fit in 6 places
        build_dataset(tmp_path / "e", seed=3, n_examples=30, ops=["add"], max_digits=3, prompt_zeros=6,
                      heldout_digits=8)


def test_answer_width_pads_every_split_in_the_high_places(tmp_path):
    from odin.data.arithmetic import answer_to_display, pad_answer
    from odin.data.dataset import build_dataset, load_split

    assert pad_answer("975", 6, True) == "975000" and pad_answer("579", 6, False) == "000579"
    assert answer_to_display("975000", True) == "579" and answer_to_display("000", True) == "0"
    assert answer_to_display("-12", False) == "-12"
    from odin.data.scratchpad import display_answer  # what odin-infer and `odin train` show

    assert display_answer("7989200000", True) == "29897" and display_answer("s#7989200000", True) == "s#29897"
    assert display_answer("-021", True) == "-120" and display_answer("0000", True) == "0"
    with pytest.raises(ValueError, match="more than answer_width"):
        pad_answer("1234", 3, True)
    with pytest.raises(ValueError, match="whole non-negative"):
        pad_answer("-5", 4, False)
    build_dataset(tmp_path / "w", seed=2, n_examples=200, ops=["add"], max_digits=3, reverse_answer=True,
                  heldout_digits=[4, 4], answer_width=6)
    build_dataset(tmp_path / "p", seed=2, n_examples=200, ops=["add"], max_digits=3, reverse_answer=True,
                  heldout_digits=[4, 4])
    for split in ("train", "val", "test", "heldout"):
        padded, plain = load_split(tmp_path / "w", split), load_split(tmp_path / "p", split)
        assert [e.prompt for e in padded] == [e.prompt for e in plain]
        assert all(len(e.answer) == 6 and e.answer == p.answer.ljust(6, "0") for e, p in zip(padded, plain))
    with pytest.raises(ValueError, match="more than answer_width"):  # 4-digit held-out sums need 5
        build_dataset(tmp_path / "x", seed=2, n_examples=200, ops=["add"], max_digits=3, reverse_answer=True,
                      heldout_digits=[4, 4], answer_width=3)
    with pytest.raises(ValueError, match="whole non-negative"):
        build_dataset(tmp_path / "y", seed=2, n_examples=200, ops=["sub"], max_digits=2, answer_width=4)
