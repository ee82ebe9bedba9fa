"""tools/profile_step.py: one training step by part, for any config, with the CPU named; the
parts add up to the measured step; --markdown --out writes this CPU's section of a file
without touching the rest of it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "profile_step.py"
ROWS = ["forward GEMMs", "other forward kernels", "backward GEMMs", "other backward kernels",
        "slot gradient buffers (zeroing, shard norms)", "reduce (slot buffers into the gradient, sphere norms)", "clip + AdamW",
        "threads waiting (imbalance, wake-ups)", "root (global norm, clip factor, statistics)",
        "Python overhead (checks, the call)"]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_parts_add_up_to_the_step_and_the_cpu_is_named():
    out = _run("--config", "tiny", "--threads", "1", "2", "--steps", "3")
    cpu = out.splitlines()[0]
    assert cpu.startswith("Profile of one training step by part, ") and len(cpu) > 45
    tables = out.split("\ntiny: ")[1:]
    assert len(tables) == 2 and tables[0].startswith("L2 d128 H4 T32 B64 V16, 1 thread,")
    for text in tables:
        values = {}
        for row in ROWS + ["step (measured)"]:
            match = re.search(re.escape(row) + r"\s+(-?[\d.]+)\s+(-?[\d.]+)", text)
            assert match, (row, text)
            values[row] = float(match.group(1))
        assert sum(values[r] for r in ROWS) == pytest.approx(values["step (measured)"], abs=0.06)
        assert values["forward GEMMs"] > 0 and values["backward GEMMs"] > 0


def test_markdown_section_per_cpu_replaces_only_itself(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nkept text\n")
    for _ in range(2):  # the second run replaces the first one's section
        _run("--config", "tiny", "--threads", "1", "--steps", "2", "--markdown", "--out", str(doc))
    text = doc.read_text()
    assert text.startswith("# Performance\n\nkept text\n")
    assert text.count("<!-- BEGIN profile ") == 1 and text.count("<!-- END profile ") == 1
    assert "| forward GEMMs |" in text and "#### tiny: L2 d128" in text


def test_a_preset_is_profiled_as_odin_train_builds_it():
    out = _run("--preset", "arith-3digit", "--threads", "1", "--steps", "1")
    assert "arith-3digit: " in out and " V102, 1 thread, 1 steps" in out
