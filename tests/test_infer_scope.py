"""odin.infer_scope: the notes odin-infer gives for prompts outside what a model was trained
on, checked against real datasets built by odin.data (every prompt the model trained on gets
no note; prompts outside it get the note that says how)."""
from __future__ import annotations

import pytest

import random

from odin.data.code import CodeConfig, generate_program, make_prompt
from odin.data.dataset import build_dataset, build_mixed_dataset, load_split
from odin.infer_scope import TrainedScope, prompt_notes, trained_scope


def _state(manifest: dict) -> dict:
    # what odin.train records in a checkpoint (trainer_state["dataset"])
    return {"dataset": {"seed": manifest.get("seed"), "settings": manifest.get("settings")}}


@pytest.fixture(scope="module")
def addition(tmp_path_factory):
    out = tmp_path_factory.mktemp("add")
    manifest = build_dataset(out, seed=0, n_examples=300, ops=["add", "sub"], max_digits=2, prompt_spaces=2)
    return out, trained_scope(_state(manifest))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    # arithmetic and algebra (code datasets need the sandbox to run each program: the code
    # family is checked on generated programs below)
    out = tmp_path_factory.mktemp("mixed")
    manifest = build_mixed_dataset(out, seed=0, n_examples=80, tasks=["arith", "algebra"])
    return out, trained_scope(_state(manifest))


@pytest.fixture(scope="module")
def with_code(mixed):
    # the settings a mixed arith+algebra+code build records, code's from CodeConfig
    _, scope = mixed
    return TrainedScope("tasks", {**scope.families, "code": CodeConfig().to_dict()})


def test_every_trained_prompt_gets_no_note(addition, mixed):
    for folder, scope in (addition, mixed):
        assert scope.kind == "tasks"
        for split in ("train", "val", "test"):
            for example in load_split(folder, split):
                assert prompt_notes(scope, example.prompt) == [], (split, example)


def test_held_out_digits_and_levels_are_noted(addition):
    folder, scope = addition
    held_out = load_split(folder, "heldout")
    assert held_out
    for example in held_out:  # operands of 3-4 digits: beyond the trained 1-2
        notes = prompt_notes(scope, example.prompt)
        assert notes and all("digits; the model was trained on operands of 1-2 digits" in n for n in notes), notes


def test_notes_say_how_a_prompt_is_outside(addition):
    _, scope = addition
    assert prompt_notes(scope, "12+34=") == []
    assert prompt_notes(scope, " 12 + 3 = ") == []  # trained with spaces around operands (prompt_spaces)
    assert prompt_notes(scope, "12*3=") == ["the model was never trained on '*' (only on + -)"]
    assert prompt_notes(scope, "123+4=") == ["123 has 3 digits; the model was trained on operands of 1-2 digits"]
    assert prompt_notes(scope, "0012+4=") == []  # leading zeros add no digits
    (hello,) = prompt_notes(scope, "hello")
    assert "trained only on arithmetic like 12+98=" in hello and "'hello' is not such a prompt" in hello
    (empty,) = prompt_notes(scope, "")
    assert empty == "the prompt is empty; the model was trained to answer prompts like 12+98="


def test_spaces_are_noted_only_when_training_had_none(tmp_path):
    manifest = build_dataset(tmp_path, seed=0, n_examples=50, ops=["mul"], max_digits=3, n_heldout=0)
    scope = trained_scope(_state(manifest))
    assert prompt_notes(scope, "12 * 3=") == ["the model was trained on prompts without spaces (like 123*987=)"]


def test_generated_programs_get_no_note(with_code):
    rng = random.Random(3)
    for level in (1, 2, 3, 4, 5):
        for _ in range(40):
            prompt = make_prompt(generate_program(rng, level))
            if len(prompt) <= 256:  # the generator skips longer ones (max_prompt_chars)
                assert prompt_notes(with_code, prompt) == [], prompt


def test_mixed_model_notes(with_code):
    scope = with_code
    assert set(scope.families) == {"arith", "algebra", "code"}
    (note,) = prompt_notes(scope, "hello")
    assert "arithmetic like" in note and "algebra like" in note and "Python programs like" in note
    assert prompt_notes(scope, "3x+5=20?") == [] and prompt_notes(scope, "2x+3y=12;x-y=1?") == []
    assert prompt_notes(scope, "a=4\nprint(a)\n#out:") == []
    long_program = "a=1\n" * 80 + "print(a)\n#out:"
    assert prompt_notes(scope, long_program) == [
        f"the program is {len(long_program)} characters; the model was trained on programs of at most 256"]
    # a program typed on one line without -e: literal \n, not a program the model knows
    assert "is not such a prompt" in prompt_notes(scope, "a=4\\nprint(a)\\n#out:")[0]


def test_text_and_unknown_models():
    assert trained_scope({"pipeline": {"trained": []}}) == TrainedScope("text")
    assert prompt_notes(TrainedScope("text"), "") == [] and prompt_notes(TrainedScope("text"), "hello") == []
    unknown = trained_scope({})  # an inference export or a hand-made model: nothing to compare with
    assert unknown.kind == "unknown"
    assert prompt_notes(unknown, "hello") == []
    assert prompt_notes(unknown, "") == ["the prompt is empty: the model continues from <bos> alone"]
