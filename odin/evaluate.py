"""Evaluation of a model on reasoning examples: exact match, token accuracy, perplexity.

* **Exact match** — greedy decoding (batched in C, ``GPT.generate_greedy``) from
  ``[<bos>] + encode(prompt)`` until ``<end>``; an example is correct when the model emitted
  ``<end>`` and the text before it equals ``example.answer``. The comparison is in the
  dataset's own answer format (digit-reversed when the dataset is); the wrong-answer list
  also carries the normal reading order then.
* **Token accuracy** — teacher-forced: over every answer token and the ``<end>`` token
  (the positions of the ``loss_on="answer"`` mask of :mod:`odin.data.batching`), the
  fraction where the argmax of the logits is the target.
* **Perplexity** — ``exp`` of the mean cross-entropy over the same positions, over the set.
* **Scratchpad answers** (``steps#final``, :mod:`odin.data.scratchpad`): exact match compares
  only the final results (the text after the last ``#``; a prediction without ``#`` is its
  own final result); token accuracy still covers the whole answer.
* **Breakdowns** — exact match and token accuracy per task, per difficulty and per
  (task, difficulty); for mixed datasets only the last is comparable across tasks.
* **Failure kinds** — every wrong answer gets one ``kind`` (:func:`classify_failure`), in the
  normal reading order of its final result:

  ====================== ==============================================================
  ``no_end``             no ``<end>`` within the generation budget
  ``format``             not in the task's answer format (or not canonical, e.g. ``007``)
  ``sign``               right magnitude, wrong sign (algebra: every value negated)
  ``carry``              add/sub: off by exactly 10^k (k >= 1), and column k-1 produced a
                         carry (add) or a borrow (sub, larger minus smaller) into column k
  ``off_by_one``         off by exactly a power of ten (1, 10, 100, ...) otherwise
  ``length``             missing or extra digits
  ``digits``             same length, some digits wrong (``positions`` says which)
  ``remainder``          div: quotient right, remainder wrong
  ``wrong_x`` ``wrong_y`` ``wrong_xy`` ``swapped``   linear and system: which value is wrong
  ``wrong_coefficient`` ``wrong_constant`` ``wrong_both``   simplify: which part is wrong
  ``wrong_output``       code: any other wrong output (``off_by_one``: integers 1 apart)
  ``wrong``              a task this module does not know
  ====================== ==============================================================

  Numeric kinds carry ``positions``: the digit positions that differ, counted from the
  least significant digit (0 = units), over the longer of the two numbers.

The metric arithmetic is kept apart from the model (:func:`score_predictions`,
:func:`classify_failure`, :func:`token_stats_from_logits`) so it can be tested on hand-made
predictions.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from odin.data.batching import check_fits, encode_examples, make_batch
from odin.data.dataset import heldout_splits, load_manifest, load_split
from odin.data.examples import Example
from odin.data.scratchpad import SCRATCH_MARK, display_answer, final_answer
from odin.fileio import write_text_atomic

__all__ = [
    "DEFAULT_SPLITS", "EvalResult", "FAILURE_KINDS", "GroupScore", "TokenStats", "WrongAnswer", "answers_match",
    "classify_failure", "decode_until_end", "default_splits", "eval_options", "evaluate_checkpoint",
    "evaluate_examples", "format_summary", "greedy_predictions", "score_predictions", "teacher_forced_counts",
    "teacher_forced_stats", "token_counts_from_logits", "token_stats_from_logits", "write_errors",
]

# Splits evaluated when none are named; every heldout_<task> split a dataset has is added.
DEFAULT_SPLITS: tuple[str, ...] = ("val", "test", "heldout")
FAILURE_KINDS: tuple[str, ...] = (
    "no_end", "format", "sign", "carry", "off_by_one", "length", "digits", "remainder", "wrong_x", "wrong_y",
    "wrong_xy", "swapped", "wrong_coefficient", "wrong_constant", "wrong_both", "wrong_output", "wrong",
)
ARITHMETIC_TASKS = frozenset({"add", "sub", "mul", "div"})
MAX_GREEDY_BATCH = 256  # odin_gpt_generate_greedy's limit
_LOGITS_BUDGET = 1 << 25  # floats of logits per teacher-forced forward (128 MiB)


@dataclass(frozen=True)
class TokenStats:
    """Teacher-forced counts over the masked (answer + <end>) positions."""

    correct: int = 0
    total: int = 0
    nll_sum: float = 0.0  # summed cross-entropy (nats)

    def __add__(self, other: "TokenStats") -> "TokenStats":
        return TokenStats(self.correct + other.correct, self.total + other.total, self.nll_sum + other.nll_sum)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def mean_loss(self) -> float:
        return self.nll_sum / self.total if self.total else float("nan")

    @property
    def perplexity(self) -> float:
        if not self.total:
            return float("nan")
        mean = self.mean_loss
        return math.exp(mean) if mean < 700 else float("inf")


@dataclass(frozen=True)
class GroupScore:
    correct: int
    count: int
    token_correct: int = 0  # teacher-forced counts of the group (0/0 when not measured)
    token_total: int = 0

    @property
    def exact(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def token_accuracy(self) -> float:
        return self.token_correct / self.token_total if self.token_total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        token = self.token_accuracy
        return {"correct": self.correct, "count": self.count, "exact": self.exact,
                "token_accuracy": None if math.isnan(token) else token}


@dataclass(frozen=True)
class WrongAnswer:
    prompt: str
    expected: str
    got: str
    task: str
    difficulty: int
    ended: bool = True  # False: no <end> within the generation budget
    expected_display: str | None = None  # normal reading order (only for reversed answers)
    got_display: str | None = None
    kind: str = "wrong"  # one of FAILURE_KINDS (see the module docstring)
    positions: tuple[int, ...] | None = None  # differing digit positions, 0 = least significant

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "prompt": self.prompt, "expected": self.expected, "got": self.got,
            "task": self.task, "difficulty": self.difficulty, "ended": self.ended, "kind": self.kind,
        }
        if self.positions is not None:
            record["positions"] = list(self.positions)
        if self.expected_display is not None:
            record["expected_display"] = self.expected_display
            record["got_display"] = self.got_display
        return record


@dataclass
class EvalResult:
    n: int
    correct: int
    token_stats: TokenStats | None
    by_task: dict[str, GroupScore]
    by_difficulty: dict[int, GroupScore]
    errors: list[WrongAnswer]
    reverse_answer: bool = False
    seconds: float = 0.0
    by_task_difficulty: dict[str, dict[int, GroupScore]] = field(default_factory=dict)

    @property
    def failure_kinds(self) -> dict[str, int]:
        """Wrong answers per failure kind, most frequent first."""
        counts: dict[str, int] = {}
        for error in self.errors:
            counts[error.kind] = counts.get(error.kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def failure_kinds_by_task(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for error in self.errors:
            row = table.setdefault(error.task, {})
            row[error.kind] = row.get(error.kind, 0) + 1
        return {task: dict(sorted(row.items())) for task, row in sorted(table.items())}

    @property
    def wrong_digit_positions(self) -> dict[int, int]:
        """How many wrong answers have digit position k wrong (0 = least significant)."""
        counts: dict[int, int] = {}
        for error in self.errors:
            for position in error.positions or ():
                counts[position] = counts.get(position, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def exact(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def token_accuracy(self) -> float:
        return self.token_stats.accuracy if self.token_stats else float("nan")

    @property
    def perplexity(self) -> float:
        return self.token_stats.perplexity if self.token_stats else float("nan")

    @property
    def mean_loss(self) -> float:
        return self.token_stats.mean_loss if self.token_stats else float("nan")

    def to_dict(self, with_errors: bool = False) -> dict[str, Any]:
        """JSON-friendly summary (NaN becomes null)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        data: dict[str, Any] = {
            "n": self.n, "correct": self.correct, "exact": num(self.exact),
            "token_accuracy": num(self.token_accuracy), "perplexity": num(self.perplexity),
            "mean_loss": num(self.mean_loss), "reverse_answer": self.reverse_answer,
            "seconds": self.seconds, "n_errors": len(self.errors),
            "by_task": {k: v.to_dict() for k, v in sorted(self.by_task.items())},
            "by_difficulty": {str(k): v.to_dict() for k, v in sorted(self.by_difficulty.items())},
            "by_task_difficulty": {task: {str(d): g.to_dict() for d, g in sorted(row.items())}
                                   for task, row in sorted(self.by_task_difficulty.items())},
            "failure_kinds": self.failure_kinds,
            "failure_kinds_by_task": self.failure_kinds_by_task,
            "wrong_digit_positions": {str(k): v for k, v in self.wrong_digit_positions.items()},
        }
        if with_errors:
            data["errors"] = [error.to_dict() for error in self.errors]
        return data


# ------------------------------------------------------------------ failure analysis
_INT = re.compile(r"^-?[0-9]+$")
_DIV = re.compile(r"^(-?[0-9]+)r([0-9]+)$")
_X = re.compile(r"^x=(-?[0-9]+)$")
_XY = re.compile(r"^x=(-?[0-9]+),y=(-?[0-9]+)$")
_LINEAR_FORM = re.compile(r"^(?:(-?[0-9]*)x)?([+-]?[0-9]+)?$")
_ARITH_PROMPT = re.compile(r"^([0-9]+)([-+*/])([0-9]+)=$")


def answers_match(expected: str, got: str) -> bool:
    """Exact match; for scratchpad answers (``steps#final``) only the final results count."""
    if SCRATCH_MARK in expected:
        return final_answer(got) == final_answer(expected)
    return got == expected


def _canonical_int(text: str) -> int | None:
    if not _INT.match(text):
        return None
    value = int(text)
    return value if str(value) == text else None


def _digit_positions(expected: int, got: int) -> tuple[int, ...]:
    a, b = str(abs(expected))[::-1], str(abs(got))[::-1]
    width = max(len(a), len(b))
    a, b = a.ljust(width, "_"), b.ljust(width, "_")
    return tuple(i for i in range(width) if a[i] != b[i])


def _carries_into(prompt: str, task: str) -> list[bool] | None:
    """For add/sub prompts: ``result[k]`` is True when column k-1 carried (add) or borrowed
    (sub, computed on larger minus smaller) into column k. None for other prompts."""
    match = _ARITH_PROMPT.match(prompt)
    if match is None or task not in ("add", "sub"):
        return None
    left, right = int(match.group(1)), int(match.group(3))
    if task == "sub" and left < right:
        left, right = right, left
    a, b = str(left)[::-1], str(right)[::-1]
    width = max(len(a), len(b)) + 1
    into = [False] * (width + 1)
    carry = 0
    for k in range(width):
        da = int(a[k]) if k < len(a) else 0
        db = int(b[k]) if k < len(b) else 0
        if task == "add":
            carry = 1 if da + db + carry >= 10 else 0
        else:
            carry = 1 if da - db - carry < 0 else 0
        into[k + 1] = bool(carry)
    return into


def _numeric_kind(expected: int, got: int, *, prompt: str = "", task: str = "") -> tuple[str, tuple[int, ...]]:
    positions = _digit_positions(expected, got)
    if got == -expected:
        return "sign", positions
    power = abs(got - expected)
    if power > 0 and str(power).rstrip("0") == "1":  # off by exactly 10^k
        k = len(str(power)) - 1
        into = _carries_into(prompt, task)
        same_sign = (got >= 0) == (expected >= 0)
        if k >= 1 and same_sign and into is not None and k < len(into) and into[k]:
            return "carry", positions  # column k-1 carried (add) / borrowed (sub) into column k
        return "off_by_one", positions
    if len(str(abs(got))) != len(str(abs(expected))):
        return "length", positions
    return "digits", positions


def _parse_linear_form(text: str) -> tuple[int, int] | None:
    """``2x+6`` -> (2, 6), ``-x`` -> (-1, 0), ``3`` -> (0, 3); None unless canonical."""
    from odin.data.algebra import format_linear

    match = _LINEAR_FORM.match(text)
    if not text or match is None:
        return None
    coef_text, const_text = match.group(1), match.group(2)
    if coef_text is None:
        a = 0
    elif coef_text in ("", "-"):
        a = -1 if coef_text == "-" else 1
    else:
        a = int(coef_text)
    b = int(const_text) if const_text else 0
    return (a, b) if format_linear(a, b) == text else None


def classify_failure(example: Example, got: str, *, ended: bool = True,
                     is_reversed: bool = False) -> tuple[str, tuple[int, ...] | None]:
    """The failure kind of a wrong answer and, for numeric kinds, the differing digit positions.

    Works on the final results (after the scratchpad mark), in normal reading order
    (``is_reversed``: the dataset writes this task's digits reversed).
    """
    if not ended:
        return "no_end", None
    expected = final_answer(example.answer)
    got = final_answer(got)
    if is_reversed:
        expected, got = display_answer(expected, True), display_answer(got, True)
    if len(expected) > 1 and expected.startswith("0") and expected.isdigit() and got.isdigit():
        # a fixed-width answer (dataset answer_width): compare the numbers, not the padding
        expected, got = expected.lstrip("0") or "0", got.lstrip("0") or "0"
    task = example.task
    if task in ARITHMETIC_TASKS or (task not in ("linear", "system", "simplify", "code") and _INT.match(expected)):
        if task == "div":
            want, have = _DIV.match(expected), _DIV.match(got)
            if want is None or have is None:
                return "format", None
            q_want, q_have = _canonical_int(want.group(1)), _canonical_int(have.group(1))
            r_have = _canonical_int(have.group(2))
            if q_have is None or r_have is None or q_want is None:
                return "format", None
            if q_want == q_have:
                return "remainder", _digit_positions(int(want.group(2)), r_have)
            return _numeric_kind(q_want, q_have)
        want_int, have_int = _canonical_int(expected), _canonical_int(got)
        if want_int is None or have_int is None:
            return "format", None
        if want_int == have_int:
            return "format", None
        return _numeric_kind(want_int, have_int, prompt=example.prompt, task=task)
    if task == "linear":
        want, have = _X.match(expected), _X.match(got)
        if want is None or have is None or _canonical_int(have.group(1)) is None:
            return "format", None
        x_want, x_have = int(want.group(1)), int(have.group(1))
        if x_have == -x_want:
            return "sign", _digit_positions(x_want, x_have)
        return "wrong_x", _digit_positions(x_want, x_have)
    if task == "system":
        want, have = _XY.match(expected), _XY.match(got)
        if want is None or have is None or None in (_canonical_int(have.group(1)), _canonical_int(have.group(2))):
            return "format", None
        (xw, yw), (xh, yh) = (int(v) for v in want.groups()), (int(v) for v in have.groups())
        if (xh, yh) == (-xw, -yw):
            return "sign", None
        if (xh, yh) == (yw, xw):
            return "swapped", None
        if xh != xw and yh != yw:
            return "wrong_xy", None
        return ("wrong_x", _digit_positions(xw, xh)) if xh != xw else ("wrong_y", _digit_positions(yw, yh))
    if task == "simplify":
        want_form, have_form = _parse_linear_form(expected), _parse_linear_form(got)
        if want_form is None or have_form is None:
            return "format", None
        if have_form == (-want_form[0], -want_form[1]):
            return "sign", None
        if have_form[0] != want_form[0] and have_form[1] != want_form[1]:
            return "wrong_both", None
        return "wrong_coefficient" if have_form[0] != want_form[0] else "wrong_constant", None
    if task == "code":
        if not got or "\n" in got:
            return "format", None
        want_int, have_int = _canonical_int(expected), _canonical_int(got)
        if want_int is not None and have_int is not None and abs(want_int - have_int) == 1:
            return "off_by_one", _digit_positions(want_int, have_int)
        return "wrong_output", None
    return "wrong", None


# ------------------------------------------------------------------ pure metric functions
def _reversed_for(task: str, reverse_answer: bool, reversed_tasks: Collection[str] | None) -> bool:
    if not reverse_answer:
        return False
    return reversed_tasks is None or task in reversed_tasks


def score_predictions(
    examples: Sequence[Example],
    predictions: Sequence[str],
    *,
    ended: Sequence[bool] | None = None,
    reverse_answer: bool = False,
    reversed_tasks: Collection[str] | None = None,
    token_stats: TokenStats | None = None,
    token_counts: np.ndarray | None = None,
) -> EvalResult:
    """Exact-match scoring of generated answers (text before ``<end>``), in the dataset's format.

    ``ended[i]`` False means prediction i never emitted ``<end>``: never an exact match.
    ``reverse_answer`` says the dataset writes answers digit-reversed — for every task, or
    only for ``reversed_tasks`` when given (mixed datasets); it only affects the
    ``*_display`` fields and the failure analysis, never the comparison.
    ``token_counts`` (``[n, 3]``: correct, total, nll per example, from
    :func:`teacher_forced_counts`) adds token accuracy to every group and, unless
    ``token_stats`` is given, to the whole set.
    """
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if ended is None:
        ended = [True] * len(examples)
    elif len(ended) != len(examples):
        raise ValueError(f"ended has {len(ended)} entries for {len(examples)} examples")
    if token_counts is not None:
        token_counts = np.asarray(token_counts, dtype=np.float64)
        if token_counts.shape != (len(examples), 3):
            raise ValueError(f"token_counts must have shape ({len(examples)}, 3), got {token_counts.shape}")
        if token_stats is None:
            token_stats = TokenStats(int(token_counts[:, 0].sum()), int(token_counts[:, 1].sum()),
                                     float(token_counts[:, 2].sum()))
    task_counts: dict[str, list[int]] = {}
    difficulty_counts: dict[int, list[int]] = {}
    cell_counts: dict[tuple[str, int], list[int]] = {}
    errors: list[WrongAnswer] = []
    correct = 0
    for index, (example, got, finished) in enumerate(zip(examples, predictions, ended)):
        ok = bool(finished) and answers_match(example.answer, got)
        correct += ok
        tok_correct = int(token_counts[index, 0]) if token_counts is not None else 0
        tok_total = int(token_counts[index, 1]) if token_counts is not None else 0
        for table, key in ((task_counts, example.task), (difficulty_counts, example.difficulty),
                           (cell_counts, (example.task, example.difficulty))):
            counts = table.setdefault(key, [0, 0, 0, 0])  # type: ignore[arg-type]
            counts[0] += ok
            counts[1] += 1
            counts[2] += tok_correct
            counts[3] += tok_total
        if not ok:
            is_reversed = _reversed_for(example.task, reverse_answer, reversed_tasks)
            kind, positions = classify_failure(example, got, ended=bool(finished), is_reversed=is_reversed)
            errors.append(WrongAnswer(
                prompt=example.prompt, expected=example.answer, got=got, task=example.task,
                difficulty=example.difficulty, ended=bool(finished),
                expected_display=display_answer(example.answer, True) if is_reversed else None,
                got_display=display_answer(got, True) if is_reversed else None,
                kind=kind, positions=positions,
            ))
    by_cell: dict[str, dict[int, GroupScore]] = {}
    for (task, difficulty), counts in sorted(cell_counts.items()):
        by_cell.setdefault(task, {})[difficulty] = GroupScore(*counts)
    return EvalResult(
        n=len(examples), correct=correct, token_stats=token_stats,
        by_task={k: GroupScore(*v) for k, v in sorted(task_counts.items())},
        by_difficulty={k: GroupScore(*v) for k, v in sorted(difficulty_counts.items())},
        errors=errors, reverse_answer=reverse_answer, by_task_difficulty=by_cell,
    )


def token_counts_from_logits(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row of the batch: ``[correct, total, nll_sum]`` over the positions where ``mask`` is set.

    ``logits`` [B, T, V], ``targets`` [B, T] ints, ``mask`` [B, T] (nonzero = counted); the
    result is float64 ``[B, 3]``. Ties in the argmax go to the lowest id (like the C greedy
    decoder).
    """
    logits = np.asarray(logits)
    targets, mask = np.asarray(targets), np.asarray(mask)
    if logits.ndim != 3 or targets.shape != logits.shape[:2] or mask.shape != logits.shape[:2]:
        raise ValueError(f"shapes disagree: logits {logits.shape}, targets {targets.shape}, mask {mask.shape}")
    out = np.zeros((logits.shape[0], 3), dtype=np.float64)
    selected = mask != 0
    if not selected.any():
        return out
    row_of = np.nonzero(selected)[0]
    rows = logits[selected].astype(np.float64)  # [N, V]
    tgt = targets[selected].astype(np.int64)
    top = rows.max(axis=1)
    lse = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    nll = lse - rows[np.arange(rows.shape[0]), tgt]
    hits = (rows.argmax(axis=1) == tgt).astype(np.float64)
    np.add.at(out[:, 0], row_of, hits)
    np.add.at(out[:, 1], row_of, 1.0)
    np.add.at(out[:, 2], row_of, nll)
    return out


def token_stats_from_logits(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> TokenStats:
    """Argmax hits and summed cross-entropy over the positions where ``mask`` is set (see
    :func:`token_counts_from_logits`)."""
    counts = token_counts_from_logits(logits, targets, mask)
    return TokenStats(correct=int(counts[:, 0].sum()), total=int(counts[:, 1].sum()), nll_sum=float(counts[:, 2].sum()))


def decode_until_end(tokenizer: Any, ids: Iterable[int]) -> tuple[str, bool]:
    """Text of ``ids`` before the first ``<end>`` and whether an ``<end>`` was there.

    Ids outside the tokenizer's vocabulary (a model whose vocab_size is larger) become U+FFFD.
    """
    kept: list[int] = []
    ended = False
    for token in ids:
        if token == tokenizer.end_id:
            ended = True
            break
        kept.append(int(token))
    vocab = tokenizer.vocab_size
    if all(0 <= t < vocab for t in kept):
        return tokenizer.decode(kept), ended
    pieces: list[str] = []
    run: list[int] = []
    for t in kept + [-1]:
        if 0 <= t < vocab:
            run.append(t)
            continue
        if run:
            pieces.append(tokenizer.decode(run))
            run = []
        if t != -1:
            pieces.append("\ufffd")
    return "".join(pieces), ended


# ------------------------------------------------------------------ model-driven parts
def greedy_predictions(model: Any, tokenizer: Any, examples: Sequence[Example], *, max_new: int | None = None,
                       batch: int = 64) -> tuple[list[str], list[bool]]:
    """Greedy answers (text before ``<end>``) and whether each one ended, batched in C."""
    if not examples:
        return [], []
    batch = max(1, min(int(batch), MAX_GREEDY_BATCH))
    bos = tokenizer.bos_id
    prompts: list[list[int]] = []
    for index, example in enumerate(examples):
        try:
            prompts.append([bos, *tokenizer.encode(example.prompt)])
        except ValueError as error:
            raise ValueError(f"example {index} ({example.prompt!r}): {error}") from None
    from odin.model import position_limit

    context = position_limit(model)  # None for RWKV: its recurrent state has no position limit
    if max_new is None:
        longest_answer = max(len(tokenizer.encode(example.answer)) for example in examples)
        max_new = longest_answer + 2  # the answer, <end>, and one token of slack for the error list
    if max_new < 1:
        raise ValueError(f"max_new must be >= 1, got {max_new}")
    longest_prompt = max(len(p) for p in prompts)
    if context is not None and longest_prompt > context:
        index = max(range(len(prompts)), key=lambda i: len(prompts[i]))
        raise ValueError(f"example {index} ({examples[index].prompt!r}): the prompt is {longest_prompt} tokens "
                         f"with <bos>, longer than the model's context ({context})")
    # Batch prompts of similar length together so short ones get the whole generation budget.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        generated = model.generate_greedy([prompts[i] for i in chunk], max_new, tokenizer.end_id, batch=batch)
        for i, ids in zip(chunk, generated):
            outputs[i] = ids
    texts, ended = [], []
    for ids in outputs:
        text, finished = decode_until_end(tokenizer, ids)
        texts.append(text)
        ended.append(finished)
    return texts, ended


def teacher_forced_counts(model: Any, tokenizer: Any, examples: Sequence[Example], *,
                          batch: int = 64) -> np.ndarray:
    """Per example ``[correct, total, nll_sum]`` (float64 ``[n, 3]``) over the answer and
    ``<end>`` tokens, with the true prefix fed at every position."""
    counts = np.zeros((len(examples), 3), dtype=np.float64)
    if not examples:
        return counts
    encoded = encode_examples(examples, tokenizer)
    context = model.shape.context
    check_fits(encoded, context)
    # Sort by length so each forward is only as long as its longest sequence.
    lengths = encoded.lengths
    order = np.argsort(lengths, kind="stable")
    V = model.shape.vocab_size
    start = 0
    while start < len(order):
        T = int(lengths[order[min(start + batch, len(order)) - 1]]) - 1
        rows = max(1, min(batch, _LOGITS_BUDGET // max(1, T * V)))
        indices = order[start:start + rows]
        T = int(lengths[indices[-1]]) - 1
        tokens, mask = make_batch(encoded, indices, T, loss_on="answer")
        model.forward(np.ascontiguousarray(tokens[:, :-1]))
        counts[indices] = token_counts_from_logits(model.logits(), tokens[:, 1:], mask)
        start += len(indices)
    return counts


def teacher_forced_stats(model: Any, tokenizer: Any, examples: Sequence[Example], *,
                         batch: int = 64) -> TokenStats:
    """Token accuracy / cross-entropy counts with the true prefix fed at every position."""
    counts = teacher_forced_counts(model, tokenizer, examples, batch=batch)
    return TokenStats(correct=int(counts[:, 0].sum()), total=int(counts[:, 1].sum()), nll_sum=float(counts[:, 2].sum()))


def evaluate_examples(model: Any, tokenizer: Any, examples: Sequence[Example], *, reverse_answer: bool,
                      reversed_tasks: Collection[str] | None = None, max_new: int | None = None,
                      batch: int = 64) -> EvalResult:
    """All metrics for one set of examples (see the module docstring).

    ``reverse_answer`` / ``reversed_tasks``: as in :func:`score_predictions`; pass
    ``**eval_options(manifest)`` to take them from a dataset's manifest.
    """
    started = time.perf_counter()
    predictions, ended = greedy_predictions(model, tokenizer, examples, max_new=max_new, batch=batch)
    counts = teacher_forced_counts(model, tokenizer, examples, batch=batch)
    result = score_predictions(examples, predictions, ended=ended, reverse_answer=reverse_answer,
                               reversed_tasks=reversed_tasks, token_counts=counts)
    result.seconds = time.perf_counter() - started
    return result


def eval_options(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``reverse_answer`` and ``reversed_tasks`` for :func:`evaluate_examples`, from a manifest
    (``settings.reversed_tasks`` exists in mixed datasets; otherwise every task is reversed
    when ``settings.reverse_answer`` is set)."""
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), Mapping) else {}
    reversed_tasks = settings.get("reversed_tasks")
    return {"reverse_answer": bool(settings.get("reverse_answer", False)),
            "reversed_tasks": tuple(reversed_tasks) if isinstance(reversed_tasks, list) else None}


def default_splits(manifest: Mapping[str, Any]) -> list[str]:
    """The splits evaluated when none are named: ``val``, ``test`` and every held-out split
    (``heldout``, ``heldout_<task>``) the manifest lists."""
    present = manifest.get("splits") if isinstance(manifest.get("splits"), Mapping) else {}
    names = [name for name in DEFAULT_SPLITS if name in present]
    return names + [name for name in heldout_splits(manifest) if name not in names]


# ------------------------------------------------------------------ reports
def write_errors(path: str | os.PathLike[str], result: EvalResult) -> None:
    """The wrong answers as JSONL (one :meth:`WrongAnswer.to_dict` per line), written atomically."""
    text = "".join(json.dumps(error.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for error in result.errors)
    write_text_atomic(path, text)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.2f}"


def _ppl(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "inf" if math.isinf(x) else f"{x:.4g}"


def _table(rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def format_summary(results: Mapping[str, EvalResult], *, breakdown: bool = True) -> str:
    """An aligned table (split, n, exact %, token accuracy %, perplexity), then with
    ``breakdown``: exact % per task and split when there is more than one task, and the
    failure kinds of each split that has wrong answers (numeric ones with the digit
    positions that were wrong, 0 = units)."""
    header = ("split", "n", "exact %", "tok acc %", "ppl")
    rows = [header] + [
        (name, str(r.n), _pct(r.exact), _pct(r.token_accuracy), _ppl(r.perplexity)) for name, r in results.items()
    ]
    lines = _table(rows)
    if not breakdown:
        return "\n".join(lines)
    tasks = sorted({task for r in results.values() for task in r.by_task})
    if len(tasks) > 1:
        names = list(results)
        task_rows = [("exact % by task", *names)]
        for task in tasks:
            task_rows.append((task, *(_pct(results[name].by_task[task].exact) if task in results[name].by_task
                                      else "-" for name in names)))
        lines += [""] + _table(task_rows)
    failing = {name: r for name, r in results.items() if r.errors}
    if failing:
        lines += ["", "wrong answers by kind"]
        for name, r in failing.items():
            parts = [f"{kind} {count}" for kind, count in r.failure_kinds.items()]
            positions = r.wrong_digit_positions
            text = f"  {name}: " + ", ".join(parts)
            if positions:
                text += "; digit positions " + " ".join(f"{k}:{v}" for k, v in positions.items())
            lines.append(text)
    return "\n".join(lines)


def refuse_text_model(loaded: Any, checkpoint_dir: str | os.PathLike[str]) -> None:
    """A one-line ValueError for a checkpoint that is not a char-tokenizer reasoning model (an
    odin-pipeline model, an imported one): exact match on arithmetic means nothing for it."""
    from odin.tokenizers import CharTokenizer

    pipeline = isinstance(loaded.trainer_state, Mapping) and "pipeline" in loaded.trainer_state
    if isinstance(loaded.tokenizer, CharTokenizer) and not pipeline:
        return
    kind = type(loaded.tokenizer).__name__.replace("Tokenizer", "") or "its own"
    made = "an odin-pipeline model" if pipeline else "a text model"
    where = " (`odin eval CHECKPOINT` without --data scores it on its pipeline's validation shards)" if pipeline else ""
    raise ValueError(f"{checkpoint_dir} is {made} ({kind} tokenizer, {loaded.tokenizer.vocab_size} tokens): "
                     f"odin eval scores the reasoning datasets of odin train{where}; talk to it with "
                     f"odin-infer -m {checkpoint_dir}")


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    *,
    batch: int = 64,
    max_new: int | None = None,
    errors_dir: str | os.PathLike[str] | None = None,
    context: int | None = None,
    loaded: Any = None,
) -> dict[str, EvalResult]:
    """Evaluate a checkpoint on dataset splits; returns ``{split: EvalResult}`` in order.

    ``splits=None`` means :func:`default_splits`: ``val``, ``test`` and every held-out split
    (``heldout``, ``heldout_<task>``) the dataset has; splits named explicitly must exist.
    ``limit`` keeps the first N examples of each split. Whether answers are digit-reversed
    is read from the manifest (:func:`eval_options`: ``settings.reverse_answer`` and, in
    mixed datasets, ``settings.reversed_tasks``); if the checkpoint's trainer state records
    ``reverse_answer`` too, the two must agree. With
    ``errors_dir``, each split's wrong answers go to ``errors_dir/<split>.errors.jsonl``.
    ``context`` runs a position-free model over more positions than it was trained with
    (:func:`odin.checkpoint.with_context`), so longer held-out examples can be scored.
    ``loaded`` is the checkpoint already loaded (weights only), to skip reading it again.
    A text model (BPE tokenizer: odin-pipeline, an import) is refused (:func:`refuse_text_model`).
    """
    from odin.checkpoint import load_model_checkpoint, with_context  # imports the native model

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    manifest = load_manifest(data_dir)
    options = eval_options(manifest)
    reverse = options["reverse_answer"]
    if splits is None:
        splits = default_splits(manifest)
        if not splits:
            raise ValueError(f"{Path(data_dir) / 'dataset.json'}: none of the splits {list(DEFAULT_SPLITS)} "
                             f"or heldout_<task> exist")
    if loaded is None:
        loaded = load_model_checkpoint(checkpoint_dir, with_optimizer=False)
    refuse_text_model(loaded, checkpoint_dir)
    if context is not None:
        loaded = with_context(loaded, context)
    recorded = loaded.trainer_state.get("reverse_answer")
    if recorded is not None and bool(recorded) != reverse:
        raise ValueError(
            f"checkpoint {checkpoint_dir} was trained with reverse_answer={bool(recorded)} but dataset "
            f"{data_dir} has reverse_answer={reverse}; evaluate it on a dataset of the same answer format"
        )
    results: dict[str, EvalResult] = {}
    for name in splits:
        examples = load_split(data_dir, name)
        if limit is not None:
            examples = examples[:limit]
        try:
            results[name] = evaluate_examples(loaded.model, loaded.tokenizer, examples, **options,
                                              max_new=max_new, batch=batch)
        except ValueError as error:
            raise ValueError(f"split {name!r}: {error}") from None
        if errors_dir is not None:
            write_errors(Path(errors_dir) / f"{name}.errors.jsonl", results[name])
    return results
