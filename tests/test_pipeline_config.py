"""pipeline.toml: the committed default is valid and equals the built-in defaults; bad keys
and values are refused with a message naming the key, by the loader and by the command."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from odin.pipeline.config import (
    SECTIONS, PipelineConfigError, PipelinePaths, config_from_dict, load_pipeline_config,
)

REPO = Path(__file__).resolve().parent.parent


def test_repository_pipeline_toml_is_valid_and_spells_out_the_defaults() -> None:
    config = load_pipeline_config(REPO / "pipeline.toml")
    defaults = config_from_dict({})
    for section in SECTIONS:
        assert getattr(config, section) == getattr(defaults, section), section
        # every key of every table is written out (documented) in the file
        text = (REPO / "pipeline.toml").read_text()
        for f in fields(getattr(config, section)):
            assert f"\n{f.name} = " in text, f"[{section}].{f.name} is not documented in pipeline.toml"
    assert dict(config.model) == {"preset": "tiny"}
    run = config.run_config(vocab_size=2048)
    assert run.model.vocab_size == 2048 and run.model.context + 1 <= config.tokenizer.shard_tokens


@pytest.mark.parametrize("data, words", [
    ({"trainer": {}}, ["unknown key 'trainer'", "did you mean 'train'"]),
    ({"train": {"steps_per_shards": 5}}, ["unknown key 'steps_per_shards' in [train]", "steps_per_shard"]),
    ({"train": {"steps_per_shard": 0}}, ["[train].steps_per_shard", ">= 1", "got 0"]),
    ({"train": {"lr": "fast"}}, ["[train].lr", "got 'fast'"]),
    ({"train": {"batch_size": 2.5}}, ["[train].batch_size", "an integer"]),
    ({"retry": {"max_attempts": True}}, ["[retry].max_attempts"]),
    ({"watch": {"mode": "magic"}}, ["[watch].mode", "'events'", "'poll'"]),
    ({"crawl": {"extensions": ["txt"]}}, ["[crawl].extensions", "'txt'"]),
    ({"crawl": {"extensions": "txt"}}, ["[crawl].extensions", "a list of strings"]),
    ({"crawl": {"timeout_seconds": 0}}, ["[crawl].timeout_seconds"]),
    ({"preprocess": {"unicode_form": "NFD"}}, ["[preprocess].unicode_form"]),
    ({"preprocess": {"near_duplicate_threshold": 1.5}}, ["[preprocess].near_duplicate_threshold", "[0.1, 1]"]),
    ({"tokenizer": {"vocab_size": 100}}, ["[tokenizer].vocab_size", "in [259, 1048576]"]),
    ({"tokenizer": {"val_fraction": 0.9}}, ["[tokenizer].val_fraction"]),
    ({"tokenizer": {"shard_tokens": 64}}, ["[tokenizer].shard_tokens", "context + 1 (65)"]),
    ({"model": {"preset": "tinyy"}}, ["[model].preset 'tinyy'", "did you mean 'tiny'"]),
    ({"model": {"n_layer": 0}}, ["[model].n_layer"]),
    ({"model": {"n_layers": 2}}, ["unknown key 'n_layers' in [model]", "n_layer"]),
    ({"model": {"vocab_size": 512}}, ["[model].vocab_size cannot be set", "[tokenizer].vocab_size"]),
    ({"folders": {"raw": "../elsewhere"}}, ["[folders].raw", "inside the pipeline folder"]),
    ({"folders": {"raw": "inbox"}}, ["[folders]", "different folder"]),
    ({"retry": {"backoff_seconds": 10.0, "backoff_max_seconds": 1.0}}, ["[retry].backoff_max_seconds"]),
    ({"train": []}, ["[train] must be a table"]),
])
def test_bad_keys_and_values_name_the_key(data: dict, words: list[str]) -> None:
    with pytest.raises(PipelineConfigError) as caught:
        config_from_dict(data)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_file_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.toml"
    bad.write_text("[train]\nsteps_per_shard = -3\n")
    with pytest.raises(PipelineConfigError, match=r"pipeline\.toml: \[train\]\.steps_per_shard must be"):
        load_pipeline_config(bad)
    bad.write_text("[train\n")
    with pytest.raises(PipelineConfigError, match="not valid TOML"):
        load_pipeline_config(bad)
    with pytest.raises(PipelineConfigError, match="config file not found"):
        load_pipeline_config(tmp_path / "missing.toml")


def test_the_command_refuses_a_bad_config_with_exit_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.toml"
    bad.write_text("[crawl]\nuser_agnet = 'me'\n")
    result = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "run", str(tmp_path / "p"),
                             "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown key 'user_agnet' in [crawl]; did you mean 'user_agent'?" in result.stderr
    assert not (tmp_path / "p").exists()  # refused before anything was created
    check = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "check-config", str(REPO / "pipeline.toml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "steps_per_shard = 40" in check.stdout


def test_folder_layout() -> None:
    paths = PipelinePaths.of("/tmp/x")
    assert paths.inbox == Path("/tmp/x/inbox") and paths.db == Path("/tmp/x/pipeline.db")
    assert paths.checkpoint == Path("/tmp/x/checkpoints/latest")
