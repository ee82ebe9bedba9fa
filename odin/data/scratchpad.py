"""Step-by-step ("scratchpad") answer formats and the rules for reading their final result.

A scratchpad answer is ``<steps>#<final>``: the working, then :data:`SCRATCH_MARK`, then the
final result in the task's ordinary answer format. Exact-match evaluation compares only
the final results (the text after the *last* mark); token accuracy covers the whole answer.
An answer without the mark is an ordinary answer and is compared whole. No non-scratchpad
answer contains the mark (the code generator discards outputs that do), so
:func:`final_answer` is safe on every example of every task.

``reverse_answer`` applies to the final result only; the steps are written as below.

Arithmetic (``add`` and ``mul``; ``sub`` and ``div`` keep their plain answers):

* addition, one step per column from the least significant one, ``da+db+carry=column sum``:
  ``58+67=`` -> ``8+7+0=15;5+6+1=12#125``
* multiplication, one partial product per non-zero digit of the right operand (least
  significant first), then the running sums:
  ``123*45=`` -> ``123*5=615;123*40=4920;615+4920=5535#5535`` (``12*0=`` -> ``12*0=0#0``)

Algebra steps are written by :mod:`odin.data.algebra`.
"""
from __future__ import annotations

import re

from odin.data.arithmetic import answer_to_display

SCRATCH_MARK = "#"
STEP_SEPARATOR = ";"
ARITH_SCRATCHPAD_OPS: tuple[str, ...] = ("add", "mul")

_ARITH_PROMPT = re.compile(r"^([0-9]+)([+*])([0-9]+)=$")


def join_steps(steps: list[str], final: str) -> str:
    return STEP_SEPARATOR.join(steps) + SCRATCH_MARK + final


def has_steps(answer: str) -> bool:
    return SCRATCH_MARK in answer


def final_answer(answer: str) -> str:
    """The text after the last :data:`SCRATCH_MARK`, or the whole answer if it has none."""
    return answer.rsplit(SCRATCH_MARK, 1)[-1]


def display_answer(answer: str, is_reversed: bool) -> str:
    """Normal reading order: un-reverses the digit runs of the final result only (and drops
    the high-place zeros of a fixed-width answer: ``0000029897`` -> ``29897``)."""
    if not is_reversed:
        return answer
    if SCRATCH_MARK in answer:
        steps, final = answer.rsplit(SCRATCH_MARK, 1)
        return steps + SCRATCH_MARK + answer_to_display(final, True)
    return answer_to_display(answer, True)


def addition_steps(left: int, right: int) -> list[str]:
    steps = []
    carry = 0
    a, b = str(left)[::-1], str(right)[::-1]
    for position in range(max(len(a), len(b))):
        da = int(a[position]) if position < len(a) else 0
        db = int(b[position]) if position < len(b) else 0
        total = da + db + carry
        steps.append(f"{da}+{db}+{carry}={total}")
        carry = total // 10
    return steps


def multiplication_steps(left: int, right: int) -> list[str]:
    partials = []
    steps = []
    for position, digit in enumerate(str(right)[::-1]):
        if digit == "0":
            continue
        factor = int(digit) * 10**position
        partials.append(left * factor)
        steps.append(f"{left}*{factor}={left * factor}")
    if not partials:
        return [f"{left}*0=0"]
    running = partials[0]
    for partial in partials[1:]:
        steps.append(f"{running}+{partial}={running + partial}")
        running += partial
    return steps


def arithmetic_with_steps(prompt: str, answer: str) -> str:
    """Turn a plain ``add``/``mul`` answer (normal or reversed order) into the scratchpad form.

    ``answer`` is kept as the final result, so a reversed dataset stays reversed there.
    """
    match = _ARITH_PROMPT.match(prompt)
    if match is None:
        raise ValueError(f"{prompt!r} is not an addition or multiplication prompt")
    left, symbol, right = int(match.group(1)), match.group(2), int(match.group(3))
    steps = addition_steps(left, right) if symbol == "+" else multiplication_steps(left, right)
    return join_steps(steps, answer)
