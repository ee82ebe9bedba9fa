"""What a checkpoint was trained on, and notes for prompts outside it (``odin-infer``).

A model trained on ``12+34=`` still answers ``hello``, an empty prompt or a 9-digit sum, but
the answer means nothing; the user should be told so, not left to guess. What was trained is
read from the checkpoint itself — the dataset settings the trainer records in
``trainer_state["dataset"]["settings"]`` (a copy of the dataset manifest's ``settings``) or
the pipeline's state for a model trained on free text — never guessed from the weights.

* :func:`trained_scope` turns a trainer state into a :class:`TrainedScope`;
* :func:`prompt_notes` returns the notes (plain sentences) for one prompt: empty, not shaped
  like any trained task, an operation the model never saw, operands with more (or fewer)
  digits than trained, spaces where training had none, a program longer than any trained.

A checkpoint without a record of its data (an inference export, a hand-made model) gets no
notes beyond the empty prompt: there is nothing to compare with.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from odin.data.arithmetic import OPERATION_SYMBOLS

_OP_OF_SYMBOL = {symbol: op for op, symbol in OPERATION_SYMBOLS.items()}
_ARITH_STRICT = re.compile(r"^(\d+)([-+*/])(\d+)=$")
_ARITH_SPACED = re.compile(r"^\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*$")
# algebra prompt shapes (odin.data.algebra): linear "3x+5=20?", system "2x+3y=12;x-y=1?",
# simplify "3x+2-x+4="; no spaces anywhere
_ALGEBRA_SHAPES = {
    "linear": re.compile(r"^(?=.*x)[-+0-9x()]+=[-+0-9x()]+\?$"),
    "system": re.compile(r"^[-+0-9xy]+=[-+0-9]+;[-+0-9xy]+=[-+0-9]+\?$"),
    "simplify": re.compile(r"^(?=.*x)[-+0-9x()]+=$"),
}
_CODE_MARKER = "#out:"  # odin.data.code.OUTPUT_MARKER, on the program's last line
_FAMILY_WORDS = {"arith": "arithmetic", "algebra": "algebra", "code": "Python programs"}


@dataclass(frozen=True)
class TrainedScope:
    """What the model's training data looked like. ``kind``: ``"tasks"`` (generated task
    data; ``families`` maps ``arith`` / ``algebra`` / ``code`` to that family's dataset
    settings), ``"text"`` (free text, e.g. the pipeline) or ``"unknown"`` (no record)."""

    kind: str
    families: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _family_of(settings: Mapping[str, Any]) -> Optional[str]:
    """Which generator wrote a (single-task) dataset's settings, by the keys it records."""
    if "ops" in settings and "max_digits" in settings:
        return "arith"
    if "kinds" in settings and "max_level" in settings:
        return "algebra"
    if "max_prompt_chars" in settings:
        return "code"
    return None


def trained_scope(trainer_state: Mapping[str, Any]) -> TrainedScope:
    """The scope recorded in a checkpoint's trainer state (see the module docstring)."""
    if isinstance(trainer_state.get("pipeline"), Mapping):
        return TrainedScope("text")
    dataset = trainer_state.get("dataset")
    settings = dataset.get("settings") if isinstance(dataset, Mapping) else None
    if not isinstance(settings, Mapping):
        return TrainedScope("unknown")
    tasks = settings.get("tasks")
    if isinstance(tasks, Mapping):  # a mixed dataset: one settings table per family
        families = {name: value for name, value in tasks.items()
                    if name in _FAMILY_WORDS and isinstance(value, Mapping)}
        return TrainedScope("tasks", families) if families else TrainedScope("unknown")
    family = _family_of(settings)
    return TrainedScope("tasks", {family: settings}) if family else TrainedScope("unknown")


def _digit_range(settings: Mapping[str, Any]) -> tuple[int, int]:
    low, high = settings.get("min_digits", 1), settings.get("max_digits", 1)
    return (low, high) if isinstance(low, int) and isinstance(high, int) else (1, 1)


def _arith_example(settings: Mapping[str, Any]) -> str:
    """A prompt of the trained shape: the first trained operation, operands of the most digits."""
    ops = [op for op in settings.get("ops", []) if op in OPERATION_SYMBOLS] or ["add"]
    digits = _digit_range(settings)[1]
    return f"{'123456789'[:digits]}{OPERATION_SYMBOLS[ops[0]]}{'987654321'[:digits]}="


def _family_example(family: str, settings: Mapping[str, Any]) -> str:
    if family == "arith":
        return _arith_example(settings)
    if family == "algebra":
        kinds = settings.get("kinds") or ["linear"]
        return {"linear": "3x+5=20?", "system": "2x+3y=12;x-y=1?", "simplify": "3x+2-x+4="}.get(kinds[0], "3x+5=20?")
    return "a=4\\nprint(a*3)\\n#out:"


def _digits(operand: str) -> int:
    return len(operand.lstrip("0") or "0")


def _arith_notes(prompt: str, settings: Mapping[str, Any], spaced: bool) -> list[str]:
    match = _ARITH_SPACED.match(prompt)
    assert match is not None
    left, symbol, right = match.groups()
    notes = []
    if spaced and not settings.get("prompt_spaces"):
        notes.append(f"the model was trained on prompts without spaces (like {_arith_example(settings)})")
    ops = [op for op in settings.get("ops", []) if op in OPERATION_SYMBOLS]
    if ops and _OP_OF_SYMBOL[symbol] not in ops:
        trained = " ".join(OPERATION_SYMBOLS[op] for op in ops)
        notes.append(f"the model was never trained on '{symbol}' (only on {trained})")
    low, high = _digit_range(settings)
    span = f"{low}-{high}" if low != high else f"{high}"
    for operand in (left, right):
        digits = _digits(operand)
        if digits > high or digits < low:
            notes.append(f"{operand} has {digits} digit{'s' * (digits != 1)}; the model was trained on operands "
                         f"of {span} digit{'s' * (high != 1)}")
    return notes


def _shape_of(prompt: str, family: str, settings: Mapping[str, Any]) -> Optional[bool]:
    """Whether ``prompt`` has ``family``'s shape: None when not; for arithmetic True when it
    matched only with spaces around the operands, False when it matched exactly."""
    if family == "arith":
        if _ARITH_STRICT.match(prompt):
            return False
        return True if _ARITH_SPACED.match(prompt) else None
    if family == "algebra":
        kinds = settings.get("kinds") or list(_ALGEBRA_SHAPES)
        return False if any(kind in _ALGEBRA_SHAPES and _ALGEBRA_SHAPES[kind].match(prompt) for kind in kinds) else None
    if family == "code":
        return False if prompt.rstrip(" ").endswith("\n" + _CODE_MARKER) else None
    return None


def prompt_notes(scope: TrainedScope, prompt: str) -> list[str]:
    """Sentences saying how ``prompt`` lies outside what the model was trained on (empty
    when it does not, or when the checkpoint has no record to compare with)."""
    if scope.kind == "text":
        return []  # any text (even none: the model starts from <bos>) is what it learned from
    if not prompt:
        if scope.kind == "tasks":
            examples = ", ".join(_family_example(name, settings) for name, settings in scope.families.items())
            return [f"the prompt is empty; the model was trained to answer prompts like {examples}"]
        return ["the prompt is empty: the model continues from <bos> alone"]
    if scope.kind != "tasks":
        return []
    for family, settings in scope.families.items():
        spaced = _shape_of(prompt, family, settings)
        if spaced is None:
            continue
        if family == "arith":
            return _arith_notes(prompt, settings, spaced)
        if family == "code":
            longest = settings.get("max_prompt_chars")
            if isinstance(longest, int) and len(prompt) > longest:
                return [f"the program is {len(prompt)} characters; the model was trained on programs of at most "
                        f"{longest}"]
        return []
    trained = "; ".join(f"{_FAMILY_WORDS[name]} like {_family_example(name, settings)}"
                        for name, settings in scope.families.items())
    shown = prompt if len(prompt) <= 40 else prompt[:37] + "..."
    return [f"the model was trained only on {trained}; {shown!r} is not such a prompt, so the answer means little"]
