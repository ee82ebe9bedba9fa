"""`odin-pipeline check-config` prints the settings in effect as TOML that parses back to
the same configuration (so it can be pasted into a pipeline.toml)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from odin.config import tomllib
from odin.pipeline.config import config_from_dict, load_pipeline_config

BIN = Path(sys.executable).parent

CONFIG = '''
[watch]
mode = "poll"
ignore = [".*", "*.bak"]
settle_seconds = 0.5

[crawl]
extensions = [".txt", ".md"]
no_extension = false
user_agent = "tester \\"quoted\\" agent"

[tokenizer]
vocab_size = 512
min_chars = 1000

[model]
preset = "tiny"
n_layer = 1
context = 32

[train]
lr = 0.0005
threads = 1
'''


def _check_config(path: Path) -> str:
    res = subprocess.run([str(BIN / "odin-pipeline"), "check-config", str(path)], capture_output=True, text=True,
                         timeout=120, cwd=path.parent)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_check_config_prints_toml_that_parses_back_to_the_config(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG)
    printed = _check_config(path)
    parsed = tomllib.loads(printed)
    expected = load_pipeline_config(path)
    assert dataclasses.replace(config_from_dict(parsed), source=expected.source) == expected
    assert parsed["watch"]["ignore"] == [".*", "*.bak"] and parsed["model"] == {"preset": "tiny", "n_layer": 1,
                                                                                "context": 32}
    # pasted back into a file, it is a valid pipeline.toml with the same settings
    pasted = tmp_path / "pasted.toml"
    pasted.write_text(printed)
    assert _check_config(pasted).splitlines()[1:] == printed.splitlines()[1:]


def test_check_config_of_the_repository_pipeline_toml_parses_back():
    path = Path(__file__).resolve().parent.parent / "pipeline.toml"
    expected = load_pipeline_config(path)
    parsed = config_from_dict(tomllib.loads(_check_config(path)))
    assert dataclasses.replace(parsed, source=expected.source) == expected
