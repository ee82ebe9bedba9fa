"""ODIN_ISA in every installed command: any case of a valid name is accepted, a bad one is
one line on stderr and exit status 2 (no traceback), whichever command loads the library."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import odin.native as native

BIN = Path(sys.executable).parent  # the entry points of the environment running the tests

# each CLI with arguments that reach past its argument parsing
COMMANDS = {
    "odin": ["info"],
    "odin-infer": ["-m", "no-such-checkpoint", "-p", "1+1="],
    "odin-pipeline": ["status", "no-such-folder"],
    "odin-dashboard": ["--exit-after", "1"],
}


def _run(prog: str, args: list[str], isa: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ODIN_ISA": isa}
    env.pop("DISPLAY", None)
    return subprocess.run([str(BIN / prog), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("prog", sorted(COMMANDS))
@pytest.mark.parametrize("bad", ["neon", "avx1024"])
def test_bad_odin_isa_is_one_line_in_every_cli(prog, bad, tmp_path):
    res = _run(prog, COMMANDS[prog], bad, tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"ODIN_ISA={bad!r}" in lines[0] and "scalar" in lines[0]
    assert lines[0].startswith(prog + ":"), lines[0]


@pytest.mark.parametrize("spelling", ["AVX2", "Avx2", " avx2 ", "SCALAR"])
def test_odin_isa_any_case_is_accepted(spelling, tmp_path):
    wanted = spelling.strip().lower()
    if wanted not in native.available_isas():
        pytest.skip(f"this CPU cannot run {wanted}")
    res = _run("odin", ["info", "--json"], spelling, tmp_path)
    assert res.returncode == 0, res.stderr
    import json

    assert json.loads(res.stdout)["isa"] == wanted
