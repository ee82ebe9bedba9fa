"""Mixed-task datasets: reproducible, stratified, no prompt in two splits, harder held-out sets."""
import argparse
import io
import json

import pytest

from odin.data import cli as data_cli
from odin.data.dataset import (
    DatasetFormatError,
    build_dataset,
    build_mixed_dataset,
    check_split_hygiene,
    heldout_splits,
    load_manifest,
    load_split,
)
from odin.data.examples import Example
from odin.data.scratchpad import final_answer
from odin.tokenizers import CharTokenizer

TASKS = {
    "arith": {"ops": ["add", "sub", "mul", "div"], "max_digits": 2},
    "algebra": {"max_level": 2},
    "code": {"max_level": 2},
}
ALL_SPLITS = ("train", "val", "test", "heldout_arith", "heldout_algebra", "heldout_code")


def _build(path, **overrides):
    settings = dict(seed=5, n_examples=400, tasks=TASKS, mix={"arith": 0.5, "algebra": 0.25, "code": 0.25})
    if "tasks" in overrides:
        settings["mix"] = None  # equal weights unless the test gives some
    settings.update(overrides)
    return build_mixed_dataset(path, **settings)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed")
    return path, _build(path)


def test_byte_identical_from_the_seed(tmp_path, dataset):
    path, _ = dataset
    _build(tmp_path / "again", jobs=2)  # the number of sandbox workers does not matter
    for name in (*(f"{split}.jsonl" for split in ALL_SPLITS), "dataset.json"):
        assert (path / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    _build(tmp_path / "other", seed=6)
    assert (path / "train.jsonl").read_bytes() != (tmp_path / "other" / "train.jsonl").read_bytes()


def test_no_prompt_in_two_splits_and_every_split_has_the_mix(dataset):
    path, manifest = dataset
    assert list(manifest["splits"]) == list(ALL_SPLITS)
    owner = {}
    for split in ALL_SPLITS:
        for example in load_split(path, split):  # also checks each file's sha256
            assert example.prompt not in owner, (example.prompt, owner.get(example.prompt), split)
            owner[example.prompt] = split
    family_of = {task: family for family, tasks in manifest["task_names"].items() for task in tasks}
    assert manifest["counts"] == {
        "arith": {"train": 160, "val": 20, "test": 20, "heldout_arith": 20},
        "algebra": {"train": 80, "val": 10, "test": 10, "heldout_algebra": 10},
        "code": {"train": 80, "val": 10, "test": 10, "heldout_code": 10},
    }
    for split in ("train", "val", "test"):
        examples = load_split(path, split)
        counted = {}
        for example in examples:
            counted[family_of[example.task]] = counted.get(family_of[example.task], 0) + 1
        assert counted == {family: manifest["counts"][family][split] for family in manifest["tasks"]}
        assert [family_of[e.task] for e in examples[:20]] != sorted(family_of[e.task] for e in examples[:20])
    tokenizer = CharTokenizer()
    for split in ALL_SPLITS:
        for example in load_split(path, split):
            tokenizer.encode(example.prompt + example.answer)


def test_heldout_sets_are_harder(dataset):
    path, manifest = dataset
    assert heldout_splits(manifest) == ["heldout_algebra", "heldout_arith", "heldout_code"]
    assert manifest["settings"]["tasks"]["arith"]["heldout_digits"] == [3, 4]
    assert manifest["settings"]["tasks"]["algebra"]["heldout_levels"] == [3, 4]
    assert manifest["settings"]["tasks"]["code"]["heldout_levels"] == [3, 4]
    assert min(e.difficulty for e in load_split(path, "heldout_arith")) >= 3
    assert min(e.difficulty for e in load_split(path, "heldout_algebra")) >= 3
    assert min(e.difficulty for e in load_split(path, "heldout_code")) >= 3
    main = [e for split in ("train", "val", "test") for e in load_split(path, split)]
    assert max(e.difficulty for e in main if e.task in ("linear", "system", "simplify", "code")) <= 2


def test_manifest_records_tasks_mix_settings_and_discards(dataset):
    _, manifest = dataset
    assert manifest["generator"] == "mixed" and manifest["seed"] == 5
    assert manifest["tasks"] == ["arith", "algebra", "code"]
    assert manifest["mix"] == {"arith": 0.5, "algebra": 0.25, "code": 0.25}
    assert manifest["settings"]["split"] == [0.8, 0.1, 0.1]
    assert manifest["settings"]["tasks"]["code"]["timeout"] == 2.0
    assert manifest["settings"]["reverse_answer"] is False and manifest["settings"]["reversed_tasks"] == []
    for part in ("main", "heldout"):
        counts = manifest["discarded"]["code"][part]
        kept = 100 if part == "main" else 10
        assert counts["candidates"] == kept + sum(v for k, v in counts.items() if k != "candidates")
    assert set(manifest["discarded"]) == {"code"}


def test_scratchpad_and_reversal(tmp_path):
    manifest = _build(tmp_path, n_examples=200, scratchpad=True, reverse_answer=True, n_heldout=5,
                      tasks={"arith": {"ops": ["add", "sub", "mul"], "max_digits": 2}, "algebra": None})
    assert manifest["settings"]["reversed_tasks"] == ["add", "mul", "sub"]
    assert manifest["settings"]["reverse_answer"] is True and manifest["settings"]["scratchpad"] is True
    examples = [e for split in manifest["splits"] for e in load_split(tmp_path, split)]
    for example in examples:
        if example.task in ("add", "mul"):
            left, right = (int(v) for v in example.prompt[:-1].replace("*", "+").split("+"))
            value = left + right if example.task == "add" else left * right
            assert "#" in example.answer and final_answer(example.answer) == str(value)[::-1]
        elif example.task == "sub":
            assert "#" not in example.answer
        else:  # algebra: steps too, but --reverse is about arithmetic only
            assert example.task in ("linear", "system", "simplify") and "#" in example.answer
            if example.task == "linear":  # the last step "x=D/A" shows the unreversed value
                steps, final = example.answer.rsplit("#", 1)
                d, a = steps.rsplit("x=", 1)[-1].split("/") if "/" in steps.rsplit(";", 1)[-1] else (None, None)
                if d is not None:
                    assert final == f"x={int(d) // int(a.strip('()'))}"


def test_hygiene_check_catches_shared_prompts():
    a, b = Example("1+1=", "2", "add", 1), Example("2+2=", "4", "add", 1)
    check_split_hygiene({"train": [a], "test": [b]})
    with pytest.raises(DatasetFormatError, match="'train' and in 'test'"):
        check_split_hygiene({"train": [a, b], "test": [b]})
    with pytest.raises(DatasetFormatError, match="twice in split 'val'"):
        check_split_hygiene({"val": [a, a]})


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="tasks must be"):
        _build(tmp_path, tasks={"geometry": None})
    with pytest.raises(ValueError, match="mix"):
        _build(tmp_path, mix=[1, 2])
    with pytest.raises(ValueError, match="unknown code setting"):
        _build(tmp_path, tasks={"code": {"levels": 3}})
    with pytest.raises(ValueError, match="'code' gets 2"):
        _build(tmp_path, n_examples=100, mix=[0.49, 0.49, 0.02])
    with pytest.raises(ValueError, match="no harder level"):
        _build(tmp_path, tasks={"algebra": {"max_level": 5}})
    assert _build(tmp_path / "ok", tasks={"algebra": {"max_level": 5}}, n_heldout=0)["counts"] == {
        "algebra": {"train": 320, "val": 40, "test": 40}}


def test_rebuild_removes_stale_heldout_files_and_progress_is_drawn(tmp_path):
    build_dataset(tmp_path, seed=1, n_examples=100, ops=["add"], max_digits=2)
    assert (tmp_path / "heldout.jsonl").exists()
    stream = io.StringIO()
    _build(tmp_path, n_examples=60, tasks=["arith", "code"], n_heldout=3, progress=stream)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [
        "heldout_arith.jsonl", "heldout_code.jsonl", "test.jsonl", "train.jsonl", "val.jsonl"]
    text = stream.getvalue()
    assert "code main" in text and "30/30" in text and "#" in text


def test_cli_mixed_build(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="odin")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["data", "build", "--out", str(tmp_path / "ds"), "--seed", "2", "--n", "300", "--tasks", "arith,algebra,code",
         "--mix", "0.4,0.3,0.3", "--max-digits", "2", "--code-levels", "1-2", "--algebra-kinds", "linear,system",
         "--reverse", "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "train 240" in out and "heldout_code" in out
    manifest = load_manifest(tmp_path / "ds")
    assert manifest["mix"] == {"arith": 0.4, "algebra": 0.3, "code": 0.3}
    assert manifest["settings"]["tasks"]["algebra"]["kinds"] == ["linear", "system"]
    assert manifest["settings"]["tasks"]["code"]["max_level"] == 2
    assert manifest["settings"]["reversed_tasks"] == ["add", "div", "mul", "sub"]  # --tasks: all four ops
    json.loads((tmp_path / "ds" / "dataset.json").read_text())
    bad = parser.parse_args(["data", "build", "--out", str(tmp_path / "x"), "--mix", "1,2"])
    assert data_cli.run_build(bad) == 2
    assert "--mix needs --tasks" in capsys.readouterr().err
    bad = parser.parse_args(["data", "build", "--out", str(tmp_path / "x"), "--tasks", "arith,code", "--mix", "1"])
    assert data_cli.run_build(bad) == 2
    assert "mix has 1 weights for 2 tasks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "build", "--out", "x", "--tasks", "arith,poetry"])
