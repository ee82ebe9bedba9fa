"""Reasoning-task data: examples, generators, dataset files, batching.

* :mod:`odin.data.arithmetic`, :mod:`odin.data.algebra`, :mod:`odin.data.code` — generators
  (deterministic from a seed); :mod:`odin.data.scratchpad` — step-by-step answer formats;
* :mod:`odin.data.sandbox` — runs generated programs to compute the code answers;
* :mod:`odin.data.dataset` — builds and loads datasets (arithmetic-only or mixed-task);
* :mod:`odin.data.batching` — examples to training batches.
"""
from odin.data.examples import Example

__all__ = ["Example"]
