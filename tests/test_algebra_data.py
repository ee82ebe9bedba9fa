"""odin.data.algebra: every answer re-derived independently by substituting it into the prompt."""
import random
import re
from fractions import Fraction

import pytest

from odin.data import algebra
from odin.data.algebra import AlgebraConfig, format_linear, sample_unique_examples
from odin.data.arithmetic import reverse_answer_digits
from odin.data.scratchpad import final_answer
from odin.tokenizers import CharTokenizer

VOCAB = set(CharTokenizer().vocab)
CANONICAL = re.compile(r"^(-?([0-9]*)x)?([+-]?[0-9]+)?$")


def _python(expression: str) -> str:
    """'3x+2(x-1)' -> '3*x+2*(x-1)': implicit products made explicit, for eval()."""
    return re.sub(r"([0-9)])([xy(])", r"\1*\2", expression)


def _value(expression: str, **values: Fraction) -> Fraction:
    return eval(_python(expression), {"__builtins__": {}}, dict(values))  # noqa: S307 - our own test strings


def _check(example) -> None:
    """Independent check of one example's (final) answer against its prompt."""
    answer = final_answer(example.answer)
    if example.task == "linear":
        assert example.prompt.endswith("?")
        left, right = example.prompt[:-1].split("=")
        x = Fraction(int(re.fullmatch(r"x=(-?[0-9]+)", answer).group(1)))
        assert _value(left, x=x) == _value(right, x=x)
        slope = (_value(left, x=1) - _value(right, x=1)) - (_value(left, x=0) - _value(right, x=0))
        assert slope != 0  # the solution is unique
    elif example.task == "system":
        assert example.prompt.endswith("?")
        x_text, y_text = re.fullmatch(r"x=(-?[0-9]+),y=(-?[0-9]+)", answer).groups()
        x, y = Fraction(int(x_text)), Fraction(int(y_text))
        rows = []
        for equation in example.prompt[:-1].split(";"):
            left, right = equation.split("=")
            assert _value(left, x=x, y=y) == int(right)
            rows.append((_value(left, x=1, y=0), _value(left, x=0, y=1)))
        assert rows[0][0] * rows[1][1] - rows[0][1] * rows[1][0] != 0  # unique solution
    elif example.task == "simplify":
        assert example.prompt.endswith("=") and CANONICAL.match(answer)
        for x in (0, 1, -2, 7):
            assert _value(example.prompt[:-1], x=x) == _value(answer, x=x)
    else:
        raise AssertionError(example.task)


def _check_steps(example) -> None:
    """Every '='-chain in the scratchpad steps holds (at the solution, where x/y appear)."""
    steps, final = example.answer.rsplit("#", 1)
    if example.task == "linear":
        x = Fraction(int(final[2:]))
        for step in steps.split(";"):
            parts = step.split("=")
            values = {_value(part, x=x) for part in parts}
            assert len(values) == 1, step
    elif example.task == "system":
        for step in steps.split(";"):
            parts = step.split("=")[1:]  # "D=expr=value"
            assert len({_value(part) for part in parts}) == 1, step
    else:
        for step in steps.split(";"):
            if step.startswith(("x:", "c:")):
                parts = step[2:].split("=")
                assert len({_value(part) for part in parts}) == 1, step
            else:  # the expanded expression equals the prompt's
                for x in (0, 3, -5):
                    assert _value(step, x=x) == _value(example.prompt[:-1], x=x)


@pytest.mark.parametrize("level", range(1, 6))
def test_every_answer_is_right_and_in_the_vocabulary(level):
    config = AlgebraConfig(min_level=level, max_level=level)
    examples = sample_unique_examples(config, 400, seed=level)
    assert len({e.prompt for e in examples}) == 400
    assert {e.task for e in examples} == {"linear", "system", "simplify"}
    for example in examples:
        assert example.difficulty == level
        assert set(example.prompt + example.answer) <= VOCAB, example
        assert len(example.prompt) + len(example.answer) <= 64, example
        _check(example)


@pytest.mark.parametrize("level", [1, 3, 5])
def test_scratchpad_steps_hold_and_end_in_the_plain_answer(level):
    plain = sample_unique_examples(AlgebraConfig(min_level=level, max_level=level), 300, seed=9)
    steps = sample_unique_examples(AlgebraConfig(min_level=level, max_level=level, scratchpad=True), 300, seed=9)
    assert [e.prompt for e in plain] == [e.prompt for e in steps]  # same problems, same order
    for p, s in zip(plain, steps):
        assert "#" in s.answer and final_answer(s.answer) == p.answer
        assert set(s.answer) <= VOCAB
        _check(s)
        _check_steps(s)


def test_documented_examples():
    assert format_linear(2, 6) == "2x+6" and format_linear(-1, 0) == "-x" and format_linear(0, -3) == "-3"
    assert format_linear(1, -1) == "x-1" and format_linear(0, 0) == "0"
    rng = random.Random(0)
    example = algebra.linear_example(rng, 1, scratchpad=True)
    assert re.fullmatch(r"[0-9]*x(\+[0-9]+)?=[0-9]+\?", example.prompt)


def test_reversed_answers():
    plain = sample_unique_examples(AlgebraConfig(), 200, seed=4)
    flipped = sample_unique_examples(AlgebraConfig(reverse_answer=True), 200, seed=4)
    for p, f in zip(plain, flipped):
        assert f.prompt == p.prompt and f.answer == reverse_answer_digits(p.answer)


def test_deterministic_and_private_randomness():
    random.seed(123)
    state = random.getstate()
    first = sample_unique_examples(AlgebraConfig(kinds=("system",)), 100, seed=1)
    assert random.getstate() == state
    assert sample_unique_examples(AlgebraConfig(kinds=("system",)), 100, seed=1) == first
    assert sample_unique_examples(AlgebraConfig(kinds=("system",)), 100, seed=2) != first
    assert {e.task for e in first} == {"system"}
    excluded = {e.prompt for e in first[:50]}
    again = sample_unique_examples(AlgebraConfig(kinds=("system",)), 100, seed=1, exclude=excluded)
    assert not excluded & {e.prompt for e in again}


def test_bad_configs_and_exhaustion():
    with pytest.raises(ValueError, match="kinds"):
        AlgebraConfig(kinds=("quadratic",))
    with pytest.raises(ValueError, match="max_level"):
        AlgebraConfig(max_level=6)
    with pytest.raises(ValueError, match="min_level"):
        AlgebraConfig(min_level=3, max_level=2)
    with pytest.raises(RuntimeError, match="distinct"):  # level-1 linear has fewer than 900 problems
        sample_unique_examples(AlgebraConfig(kinds=("linear",), max_level=1), 2000, seed=0)
