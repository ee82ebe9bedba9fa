"""Arithmetic problems (``+ - * /`` on non-negative integer operands), deterministic from a seed.

Formats
-------
* prompt: ``"<a><op><b>="`` with ``op`` one of ``+ - * /``, e.g. ``"123+456="``.
* answer (normal order): the exact result in decimal, e.g. ``"579"``; subtraction may be
  negative (``"3-7="`` -> ``"-4"``).
* division is integer division with remainder, written ``"<quotient>r<remainder>"`` and
  always carrying the remainder, e.g. ``"17/5="`` -> ``"3r2"``, ``"8/4="`` -> ``"2r0"``.
  The divisor is never zero.
* ``reverse_answer=True`` writes every run of digits least-significant digit first while
  signs and the ``r`` separator stay in place: ``"579"`` -> ``"975"``, ``"-120"`` -> ``"-021"``,
  ``"30r3"`` -> ``"03r3"``. Reversal is its own inverse; :func:`answer_to_display` undoes it.

Operands: a "d-digit operand" is any integer written with exactly d digits, where the
1-digit operands are 0-9 (9 without 0 for a divisor). Difficulty is the digit count of the
larger operand. Sampling draws an operation uniformly, then each operand's digit count
uniformly from ``[min_digits, max_digits]``, then the operand uniformly among numbers of
that length — so short problems are not swamped by the far more numerous long ones.

All randomness comes from a private ``random.Random`` seeded by the caller; the module
never touches global random state.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterator

from odin.data.examples import Example

OPERATION_SYMBOLS: dict[str, str] = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
ALL_OPERATIONS: tuple[str, ...] = tuple(OPERATION_SYMBOLS)
MAX_SUPPORTED_DIGITS = 18  # keeps every operand and product comfortably within 64-bit ints

_DIGIT_RUN = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ArithmeticConfig:
    """Which problems to generate; validated on construction."""

    ops: tuple[str, ...] = ALL_OPERATIONS
    min_digits: int = 1
    max_digits: int = 3
    reverse_answer: bool = False

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        if not ops:
            raise ValueError(f"ops must name at least one of {list(ALL_OPERATIONS)}")
        for op in ops:
            if op not in OPERATION_SYMBOLS:
                raise ValueError(f"unknown operation {op!r} in ops; expected some of {list(ALL_OPERATIONS)}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops lists an operation twice: {list(ops)}")
        for name in ("min_digits", "max_digits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SUPPORTED_DIGITS:
                raise ValueError(f"{name} must be an integer in [1, {MAX_SUPPORTED_DIGITS}], got {value!r}")
        if self.min_digits > self.max_digits:
            raise ValueError(
                f"min_digits ({self.min_digits}) must be <= max_digits ({self.max_digits})"
            )
        if not isinstance(self.reverse_answer, bool):
            raise ValueError(f"reverse_answer must be true or false, got {self.reverse_answer!r}")

    def to_dict(self) -> dict:
        return {
            "max_digits": self.max_digits,
            "min_digits": self.min_digits,
            "ops": list(self.ops),
            "reverse_answer": self.reverse_answer,
        }


def operand_range(n_digits: int, *, divisor: bool = False) -> tuple[int, int]:
    """Inclusive range of integers written with exactly ``n_digits`` digits."""
    low = 0 if n_digits == 1 else 10 ** (n_digits - 1)
    if divisor and low == 0:
        low = 1
    return low, 10**n_digits - 1


def _count_operands(min_digits: int, max_digits: int, *, divisor: bool) -> int:
    low, _ = operand_range(min_digits, divisor=divisor)
    _, high = operand_range(max_digits, divisor=divisor)
    return high - low + 1


def count_distinct_problems(config: ArithmeticConfig) -> int:
    """How many different prompts the config can produce."""
    n_left = _count_operands(config.min_digits, config.max_digits, divisor=False)
    total = 0
    for op in config.ops:
        n_right = _count_operands(config.min_digits, config.max_digits, divisor=op == "div")
        total += n_left * n_right
    return total


def compute_answer(op: str, left: int, right: int) -> str:
    """The answer in normal (most-significant-first) order."""
    if op == "add":
        return str(left + right)
    if op == "sub":
        return str(left - right)
    if op == "mul":
        return str(left * right)
    if op == "div":
        if right == 0:
            raise ValueError("division by zero: the divisor must be >= 1")
        quotient, remainder = divmod(left, right)
        return f"{quotient}r{remainder}"
    raise ValueError(f"unknown operation {op!r}; expected one of {list(ALL_OPERATIONS)}")


def reverse_answer_digits(answer: str) -> str:
    """Reverse each run of digits in place; signs and separators do not move."""
    return _DIGIT_RUN.sub(lambda match: match.group(0)[::-1], answer)


def answer_to_display(answer: str, is_reversed: bool) -> str:
    """Turn an answer as stored/generated back into normal reading order (without the
    leading zeros of a fixed-width answer)."""
    shown = reverse_answer_digits(answer) if is_reversed else answer
    return shown.lstrip("0") or "0" if shown.isdigit() else shown


def pad_answer(answer: str, width: int, is_reversed: bool) -> str:
    """A non-negative whole-number answer written with exactly `width` digits: zeros in the
    high places (at the end of a reversed answer, at the start of a plain one). With
    every answer the same length, where an answer ends is no longer something to learn."""
    if not answer.isdigit():
        raise ValueError(f"answer_width needs whole non-negative answers, got {answer!r}")
    if len(answer) > width:
        raise ValueError(f"answer {answer!r} has {len(answer)} digits, more than answer_width = {width}")
    return answer.ljust(width, "0") if is_reversed else answer.rjust(width, "0")


def make_example(op: str, left: int, right: int, *, reverse_answer: bool = False) -> Example:
    if left < 0 or right < 0:
        raise ValueError(f"operands must be non-negative, got {left} and {right}")
    answer = compute_answer(op, left, right)
    if reverse_answer:
        answer = reverse_answer_digits(answer)
    return Example(
        prompt=f"{left}{OPERATION_SYMBOLS[op]}{right}=",
        answer=answer,
        task=op,
        difficulty=max(len(str(left)), len(str(right))),
    )


def spaced_prompt(prompt: str, rng: random.Random, max_spaces: int) -> str:
    """``prompt`` with 0..max_spaces spaces (drawn from ``rng``) before the first operand, on
    each side of the operator and before ``=``; never inside a number.

    Used on training prompts for length generalisation: with the token distances between
    ``+`` and ``=`` no longer equal to an operand's length, a model cannot learn where an
    answer ends from positions and has to use what the digits are (their Abacus places).
    """
    if max_spaces < 0:
        raise ValueError(f"max_spaces must be >= 0, got {max_spaces}")
    left, symbol, right = _required_operands(prompt)
    gap = lambda: " " * rng.randint(0, max_spaces)  # noqa: E731
    return f"{gap()}{left}{gap()}{symbol}{gap()}{right}{gap()}="


def _operands(prompt: str) -> tuple[str, str, str] | None:
    """(left, operator, right) of ``<a><op><b>`` with an optional final ``=``, else None."""
    body = prompt[:-1] if prompt.endswith("=") else prompt
    for symbol in OPERATION_SYMBOLS.values():
        left, found, right = body.partition(symbol)
        if found and left.isdigit() and right.isdigit():
            return left, symbol, right
    return None


def _required_operands(prompt: str) -> tuple[str, str, str]:
    parts = _operands(prompt)
    if parts is None:
        raise ValueError(f"not an arithmetic prompt of the form <a><op><b>=: {prompt!r}")
    return parts


def zero_padded_prompt(prompt: str, rng: random.Random, width: int) -> str:
    """``prompt`` with each operand written with leading zeros to a width drawn from ``rng``
    uniformly in [its length, ``width``] (``12+345=`` -> ``0012+345=`` or ``12+00345=`` ...).

    Used on training prompts for length generalisation with Abacus places: short operands
    alone never put a low place and a high place (say 2 and 7) into one sequence, so nothing
    teaches attention to tell them apart, and an 8-digit test number confuses them. Leading
    zeros fill the high places with digits whose value must not be mistaken for a low
    place's, without making any number longer than it is.
    """
    left, symbol, right = _required_operands(prompt)
    pad = lambda digits: digits.zfill(rng.randint(len(digits), max(len(digits), width)))  # noqa: E731
    return f"{pad(left)}{symbol}{pad(right)}="


def padded_operands(prompt: str, width: int) -> str:
    """An arithmetic prompt ``<a><op><b>=`` with both operands written with leading zeros to
    ``width`` digits (``12+345=`` -> ``0012+0345=`` for width 4); any other text, an
    operand already longer, or width 0 (a model trained without padding) leaves it as it is. The form in which a model trained with
    ``prompt_zeros`` is evaluated and asked (``odin-infer``, the dashboard chat)."""
    parts = _operands(prompt) if width > 0 and prompt.endswith("=") else None
    if parts is None:
        return prompt
    left, symbol, right = parts
    return f"{left.zfill(width)}{symbol}{right.zfill(width)}="


def prompt_width_of(settings: object) -> int:
    """The operand width a dataset's settings ask prompts to be padded to (its
    ``prompt_zeros``), 0 when there is none or the settings are not a mapping."""
    width = settings.get("prompt_zeros", 0) if isinstance(settings, dict) else 0
    return width if isinstance(width, int) and not isinstance(width, bool) and width > 0 else 0


def iter_all_problems(config: ArithmeticConfig) -> Iterator[tuple[str, int, int]]:
    """Every distinct (op, left, right) in a fixed order: ops as listed, then ascending operands."""
    left_low, _ = operand_range(config.min_digits)
    _, left_high = operand_range(config.max_digits)
    for op in config.ops:
        right_low, _ = operand_range(config.min_digits, divisor=op == "div")
        _, right_high = operand_range(config.max_digits, divisor=op == "div")
        for left in range(left_low, left_high + 1):
            for right in range(right_low, right_high + 1):
                yield op, left, right


def sample_problem(config: ArithmeticConfig, rng: random.Random) -> tuple[str, int, int]:
    """One (op, left, right), digit counts balanced as described in the module docstring."""
    op = config.ops[rng.randrange(len(config.ops))]
    left_digits = rng.randint(config.min_digits, config.max_digits)
    right_digits = rng.randint(config.min_digits, config.max_digits)
    left = rng.randint(*operand_range(left_digits))
    right = rng.randint(*operand_range(right_digits, divisor=op == "div"))
    return op, left, right


def sample_example(config: ArithmeticConfig, rng: random.Random) -> Example:
    op, left, right = sample_problem(config, rng)
    return make_example(op, left, right, reverse_answer=config.reverse_answer)


def sample_unique_examples(config: ArithmeticConfig, n: int, seed: int | str) -> list[Example]:
    """``min(n, count_distinct_problems(config))`` examples with pairwise different prompts.

    Deterministic for (config, n, seed). When ``n`` covers the whole problem space, every
    problem is returned (shuffled); when it covers more than half of it, a uniform subset of
    the enumerated space is drawn (rejection sampling would crawl); otherwise problems are
    drawn with the balanced sampler and duplicates are skipped.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"odin.arithmetic:{seed}")
    total = count_distinct_problems(config)
    if n >= total:
        problems = list(iter_all_problems(config))
        rng.shuffle(problems)
    elif 2 * n > total:
        problems = rng.sample(list(iter_all_problems(config)), n)
    else:
        problems = _sample_distinct(config, n, rng)
    return [
        make_example(op, left, right, reverse_answer=config.reverse_answer)
        for op, left, right in problems
    ]


def _sample_distinct(config: ArithmeticConfig, n: int, rng: random.Random) -> list[tuple[str, int, int]]:
    seen: set[tuple[str, int, int]] = set()
    problems: list[tuple[str, int, int]] = []
    # Generous bound: only reachable if small digit buckets saturate badly; fail loudly not forever.
    max_draws = 1000 * n + 100_000
    draws = 0
    while len(problems) < n:
        draws += 1
        if draws > max_draws:
            raise RuntimeError(
                f"could not find {n} distinct problems after {max_draws} draws "
                f"(found {len(problems)}); widen the digit range or request fewer examples"
            )
        problem = sample_problem(config, rng)
        if problem not in seen:
            seen.add(problem)
            problems.append(problem)
    return problems
