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

The metric arithmetic is kept apart from the model (:func:`score_predictions`,
:func:`token_stats_from_logits`) so it can be tested on hand-made predictions.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from odin.data.arithmetic import answer_to_display
from odin.data.batching import check_fits, encode_examples, make_batch
from odin.data.dataset import load_manifest, load_split
from odin.data.examples import Example
from odin.fileio import write_text_atomic

__all__ = [
    "DEFAULT_SPLITS", "EvalResult", "GroupScore", "TokenStats", "WrongAnswer", "decode_until_end",
    "evaluate_checkpoint", "evaluate_examples", "format_summary", "greedy_predictions",
    "score_predictions", "teacher_forced_stats", "token_stats_from_logits", "write_errors",
]

DEFAULT_SPLITS: tuple[str, ...] = ("val", "test", "heldout")
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

    @property
    def exact(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "count": self.count, "exact": self.exact}


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

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "prompt": self.prompt, "expected": self.expected, "got": self.got,
            "task": self.task, "difficulty": self.difficulty, "ended": self.ended,
        }
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
        }
        if with_errors:
            data["errors"] = [error.to_dict() for error in self.errors]
        return data


# ------------------------------------------------------------------ pure metric functions
def score_predictions(
    examples: Sequence[Example],
    predictions: Sequence[str],
    *,
    ended: Sequence[bool] | None = None,
    reverse_answer: bool = False,
    token_stats: TokenStats | None = None,
) -> EvalResult:
    """Exact-match scoring of generated answers (text before ``<end>``), in the dataset's format.

    ``ended[i]`` False means prediction i never emitted ``<end>``: never an exact match.
    """
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if ended is None:
        ended = [True] * len(examples)
    elif len(ended) != len(examples):
        raise ValueError(f"ended has {len(ended)} entries for {len(examples)} examples")
    task_counts: dict[str, list[int]] = {}
    difficulty_counts: dict[int, list[int]] = {}
    errors: list[WrongAnswer] = []
    correct = 0
    for example, got, finished in zip(examples, predictions, ended):
        ok = bool(finished) and got == example.answer
        correct += ok
        for table, key in ((task_counts, example.task), (difficulty_counts, example.difficulty)):
            counts = table.setdefault(key, [0, 0])
            counts[0] += ok
            counts[1] += 1
        if not ok:
            errors.append(WrongAnswer(
                prompt=example.prompt, expected=example.answer, got=got, task=example.task,
                difficulty=example.difficulty, ended=bool(finished),
                expected_display=answer_to_display(example.answer, True) if reverse_answer else None,
                got_display=answer_to_display(got, True) if reverse_answer else None,
            ))
    return EvalResult(
        n=len(examples), correct=correct, token_stats=token_stats,
        by_task={k: GroupScore(*v) for k, v in sorted(task_counts.items())},
        by_difficulty={k: GroupScore(*v) for k, v in sorted(difficulty_counts.items())},
        errors=errors, reverse_answer=reverse_answer,
    )


def token_stats_from_logits(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> TokenStats:
    """Argmax hits and summed cross-entropy over the positions where ``mask`` is set.

    ``logits`` [B, T, V], ``targets`` [B, T] ints, ``mask`` [B, T] (nonzero = counted).
    Ties in the argmax go to the lowest id (like the C greedy decoder).
    """
    logits = np.asarray(logits)
    if logits.ndim != 3 or targets.shape != logits.shape[:2] or mask.shape != logits.shape[:2]:
        raise ValueError(f"shapes disagree: logits {logits.shape}, targets {targets.shape}, mask {mask.shape}")
    selected = np.asarray(mask) != 0
    if not selected.any():
        return TokenStats()
    rows = logits[selected].astype(np.float64)  # [N, V]
    tgt = np.asarray(targets)[selected].astype(np.int64)
    top = rows.max(axis=1)
    lse = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    nll = lse - rows[np.arange(rows.shape[0]), tgt]
    correct = int((rows.argmax(axis=1) == tgt).sum())
    return TokenStats(correct=correct, total=int(tgt.shape[0]), nll_sum=float(nll.sum()))


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
    context = model.shape.context
    if max_new is None:
        longest_answer = max(len(tokenizer.encode(example.answer)) for example in examples)
        max_new = longest_answer + 2  # the answer, <end>, and one token of slack for the error list
    if max_new < 1:
        raise ValueError(f"max_new must be >= 1, got {max_new}")
    longest_prompt = max(len(p) for p in prompts)
    if longest_prompt > context:
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


def teacher_forced_stats(model: Any, tokenizer: Any, examples: Sequence[Example], *,
                         batch: int = 64) -> TokenStats:
    """Token accuracy / cross-entropy counts with the true prefix fed at every position."""
    if not examples:
        return TokenStats()
    encoded = encode_examples(examples, tokenizer)
    context = model.shape.context
    check_fits(encoded, context)
    # Sort by length so each forward is only as long as its longest sequence.
    lengths = encoded.lengths
    order = np.argsort(lengths, kind="stable")
    V = model.shape.vocab_size
    stats = TokenStats()
    start = 0
    while start < len(order):
        T = int(lengths[order[min(start + batch, len(order)) - 1]]) - 1
        rows = max(1, min(batch, _LOGITS_BUDGET // max(1, T * V)))
        indices = order[start:start + rows]
        T = int(lengths[indices[-1]]) - 1
        tokens, mask = make_batch(encoded, indices, T, loss_on="answer")
        model.forward(np.ascontiguousarray(tokens[:, :-1]))
        stats = stats + token_stats_from_logits(model.logits(), tokens[:, 1:], mask)
        start += len(indices)
    return stats


def evaluate_examples(model: Any, tokenizer: Any, examples: Sequence[Example], *, reverse_answer: bool,
                      max_new: int | None = None, batch: int = 64) -> EvalResult:
    """All metrics for one set of examples (see the module docstring)."""
    started = time.perf_counter()
    predictions, ended = greedy_predictions(model, tokenizer, examples, max_new=max_new, batch=batch)
    stats = teacher_forced_stats(model, tokenizer, examples, batch=batch)
    result = score_predictions(examples, predictions, ended=ended, reverse_answer=reverse_answer, token_stats=stats)
    result.seconds = time.perf_counter() - started
    return result


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


def format_summary(results: Mapping[str, EvalResult]) -> str:
    """An aligned table: split, n, exact %, token accuracy %, perplexity."""
    header = ("split", "n", "exact %", "tok acc %", "ppl")
    rows = [header] + [
        (name, str(r.n), _pct(r.exact), _pct(r.token_accuracy), _ppl(r.perplexity)) for name, r in results.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    *,
    batch: int = 64,
    max_new: int | None = None,
    errors_dir: str | os.PathLike[str] | None = None,
) -> dict[str, EvalResult]:
    """Evaluate a checkpoint on dataset splits; returns ``{split: EvalResult}`` in order.

    ``splits=None`` means :data:`DEFAULT_SPLITS` restricted to those the dataset has (a
    dataset built with ``--n-heldout 0`` has no heldout split); splits named explicitly must
    exist. ``limit`` keeps the first N examples of each split. Whether answers are
    digit-reversed is read from the manifest (``dataset.json``: ``settings.reverse_answer``);
    if the checkpoint's trainer state records it too, the two must agree. With
    ``errors_dir``, each split's wrong answers go to ``errors_dir/<split>.errors.jsonl``.
    """
    from odin.checkpoint import load_model_checkpoint  # imports the native model

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    manifest = load_manifest(data_dir)
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    reverse = bool(settings.get("reverse_answer", False))
    if splits is None:
        splits = [name for name in DEFAULT_SPLITS if name in manifest["splits"]]
        if not splits:
            raise ValueError(f"{Path(data_dir) / 'dataset.json'}: none of the splits {list(DEFAULT_SPLITS)} exist")
    loaded = load_model_checkpoint(checkpoint_dir, with_optimizer=False)
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
            results[name] = evaluate_examples(loaded.model, loaded.tokenizer, examples, reverse_answer=reverse,
                                              max_new=max_new, batch=batch)
        except ValueError as error:
            raise ValueError(f"split {name!r}: {error}") from None
        if errors_dir is not None:
            write_errors(Path(errors_dir) / f"{name}.errors.jsonl", results[name])
    return results
