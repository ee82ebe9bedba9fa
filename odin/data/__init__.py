"""Reasoning-task data: examples, generators, dataset files, batching."""
from odin.data.examples import Example

__all__ = ["Example"]
