"""Damaged checkpoints through the installed `odin-infer`: every damage is either a one-line
error (exit 2, no traceback) or a load that answers exactly as the intact checkpoint does
(damage to a part inference does not read, such as a deleted optimizer file). A flipped
bit in the weights never loads (each file carries a checksum)."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from odin.checkpoint import save_model_checkpoint
from odin.config import RunConfig
from odin.tokenizers import CharTokenizer

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from odin.checkpoint import model_from_config

    cfg = RunConfig.from_dict({"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context": 24},
                               "train": {"steps": 10}})
    model = model_from_config(cfg)
    model.init_weights(5)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_model_checkpoint(path, model, CharTokenizer(), cfg, step=3, trainer_state={"sampler": {}})
    return path


def infer(ckpt: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "odin-infer"), "-m", str(ckpt), "-p", "12+34=", "-n", "6"],
                          capture_output=True, text=True, timeout=120, cwd=ckpt.parent)


def damages(ckpt: Path, rng: random.Random):
    """(description, function damaging a copy of the checkpoint folder)."""
    for name in sorted(os.listdir(ckpt)):
        size = (ckpt / name).stat().st_size

        def truncate(folder, name=name, at=rng.randrange(1, size)):
            os.truncate(folder / name, at)

        def flip(folder, name=name, at=None):
            data = bytearray((folder / name).read_bytes())
            if at is None:
                at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
            (folder / name).write_bytes(bytes(data))

        yield f"truncate {name}", truncate
        yield f"truncate {name} to 0", lambda folder, name=name: os.truncate(folder / name, 0)
        yield f"delete {name}", lambda folder, name=name: (folder / name).unlink()
        yield f"{name} is a folder", lambda folder, name=name: ((folder / name).unlink(), (folder / name).mkdir())
        if name.endswith(".safetensors"):
            header = int.from_bytes((ckpt / name).read_bytes()[:8], "little")
            for _ in range(3):
                yield f"flip a header bit of {name}", lambda folder, f=flip, h=header: f(folder, at=rng.randrange(8 + h))
            for _ in range(3):
                yield f"flip a weight bit of {name}", lambda folder, f=flip, h=header, n=size: f(
                    folder, at=rng.randrange(8 + h, n))
        else:
            yield f"flip a bit of {name}", flip
            yield f"{name} holds a list", lambda folder, name=name: (folder / name).write_text("[1, 2]")
            yield f"{name} is not UTF-8", lambda folder, name=name: (folder / name).write_bytes(b"\xff\xfe{")


def test_damaged_checkpoints_are_one_line_errors_or_identical_answers(checkpoint, tmp_path):
    intact = infer(checkpoint)
    assert intact.returncode == 0, intact.stderr
    outcomes: dict[str, str] = {}
    problems = []
    for index, (what, damage) in enumerate(damages(checkpoint, random.Random(7))):
        copy = tmp_path / f"c{index}"
        shutil.copytree(checkpoint, copy)
        damage(copy)
        got = infer(copy)
        lines = got.stderr.strip().splitlines()
        if got.returncode == 2 and len(lines) == 1 and "Traceback" not in got.stderr:
            outcomes[what] = "error"
        elif got.returncode == 0 and got.stdout == intact.stdout:
            outcomes[what] = "loaded"
        else:
            problems.append((what, got.returncode, got.stdout[-200:], got.stderr[-400:]))
        shutil.rmtree(copy)
    assert not problems, problems
    assert all(outcomes[w] == "error" for w in outcomes if "weight bit of model" in w), outcomes
    assert sum(v == "error" for v in outcomes.values()) >= 20, outcomes
