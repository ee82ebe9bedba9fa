"""tools/bench_quant.py as a user runs it (small models): its table has a row per model, type
and thread count, with speeds and a ratio, and an unknown type is one line."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_quant.py"


def test_speed_table_names_the_cpu_and_has_a_row_per_model_type_and_thread_count(tmp_path):
    out = tmp_path / "quant.md"
    run = subprocess.run([sys.executable, str(TOOL), "speed", "--models", "gpt-tiny", "rwkv-tiny", "--types", "q8_0",
                          "q4_0/f32", "--pairs", "1", "--markdown", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "<!-- BEGIN quant-speed (tools/bench_quant.py) -->" in text and "CPU: " in text
    rows = re.findall(r"^\| (gpt-tiny|rwkv-tiny) \| (\S+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| \*\*([\d.]+)x\*\* \|$",
                      text, re.M)
    threads = {"1"} | ({str(n) for n in range(2, 1000)} & {r[2] for r in rows})
    assert {(m, t) for m, t, *_ in rows} == {(m, t) for m in ("gpt-tiny", "rwkv-tiny") for t in ("q8_0", "q4_0/f32")}
    assert len(rows) == 4 * len(threads)
    assert all(float(f) > 0 and float(q) > 0 and float(r) > 0 for *_, f, q, r in rows)


def test_an_unknown_type_is_one_line():
    run = subprocess.run([sys.executable, str(TOOL), "speed", "--types", "q3_k"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert "unknown quantization type 'q3_k'" in run.stderr and "Traceback" not in run.stderr
