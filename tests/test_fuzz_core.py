"""A bounded fuzz of the C core through the Python API (tests/fuzz_core.py), in a subprocess
so that a crash of the core is seen as one: every call either works or raises an OdinError
naming what is wrong; never a segfault, an abort, a killed process, or another exception
(an OverflowError from cffi, a MemoryError from numpy, ...)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_calls_into_the_core_end_in_results_or_odin_errors(seed, tmp_path):
    log = tmp_path / "calls.log"
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_core.py"), str(seed), "1000", str(log)],
                          capture_output=True, text=True, timeout=600)
    last_call = log.read_text().splitlines()[-1:] if log.exists() else []
    assert proc.returncode == 0, f"exit {proc.returncode} during call {last_call}: {proc.stderr[-800:]}"
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["unexpected"] == [], report
    outcomes = report["outcomes"]
    assert outcomes.get("OdinError", 0) > 200 and outcomes.get("ok", 0) > 50, outcomes  # it reached the core
