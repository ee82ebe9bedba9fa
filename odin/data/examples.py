"""The unit every reasoning-task generator produces (arithmetic now; algebra and code later)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

EXAMPLE_KEYS: tuple[str, ...] = ("answer", "difficulty", "prompt", "task")


@dataclass(frozen=True)
class Example:
    """A prompt the model sees, the answer it must produce, and labels for reporting.

    ``difficulty`` is task-specific (for arithmetic: digits of the larger operand);
    eval groups accuracy by (task, difficulty).
    """

    prompt: str
    answer: str
    task: str
    difficulty: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "difficulty": self.difficulty,
            "prompt": self.prompt,
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Example":
        """Build from a mapping; raises ValueError naming the missing/extra/mistyped key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = [key for key in EXAMPLE_KEYS if key not in data]
        if missing:
            raise ValueError(f"missing key {missing[0]!r} (an example needs {list(EXAMPLE_KEYS)})")
        extra = sorted(set(data) - set(EXAMPLE_KEYS))
        if extra:
            raise ValueError(f"unknown key {extra[0]!r} (an example has only {list(EXAMPLE_KEYS)})")
        for key in ("prompt", "answer", "task"):
            if not isinstance(data[key], str):
                raise ValueError(f"key {key!r} must be a string, got {type(data[key]).__name__}")
        difficulty = data["difficulty"]
        if isinstance(difficulty, bool) or not isinstance(difficulty, int):
            raise ValueError(f"key 'difficulty' must be an integer, got {difficulty!r}")
        return cls(
            prompt=data["prompt"], answer=data["answer"], task=data["task"], difficulty=difficulty
        )
