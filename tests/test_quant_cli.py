"""`odin quantize` and the commands that answer, through the installed entry points (the
console scripts beside this Python) in subprocesses: a quantized checkpoint answers in
odin-infer, odin eval and odin model info; every bad input (issue 20, item 7) is one line
on stderr, a nonzero exit status, and nothing written."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from odin.blueprint import Blueprint, answering_memory
from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.data.arithmetic import make_example
from odin.data.batching import BatchSampler, encode_examples
from odin.model import WeightTypes
from odin.tokenizers import CharTokenizer

BIN = Path(sys.executable).parent
TOKENIZER = CharTokenizer()
EXAMPLES = [make_example("add", a, b, reverse_answer=True) for a in range(10) for b in range(10)]


def run(program: str, *args, cwd=None, stdin: str = "") -> subprocess.CompletedProcess:
    command = BIN / program
    assert command.is_file(), f"{command} is not installed (pip install -e .)"
    return subprocess.run([str(command), *map(str, args)], cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder whose float32 checkpoint has memorised 1-digit addition (reversed answers),
    trained in-process in ~250 small steps, with a dataset recorded for odin eval."""
    root = tmp_path_factory.mktemp("quant_cli")
    data = root / "data"
    made = run("odin", "data", "build", "--out", data, "--ops", "add", "--max-digits", "1", "--reverse", "--n", "60",
               "--seed", "1")
    assert made.returncode == 0, made.stderr
    config = RunConfig(model=ModelConfig(n_layer=2, d_model=64, n_head=4, context=16), train=TrainConfig(steps=250))
    model = model_from_config(config)
    model.init_weights(0)
    sampler = BatchSampler(encode_examples(EXAMPLES, TOKENIZER), 100, 7, seed=0)
    for step in range(1, 251):
        tokens, mask = sampler.next_batch()
        model.zero_grad()
        model.forward(tokens[:, :-1], tokens[:, 1:], mask)
        model.backward()
        model.adamw_step(lr=3e-3 * (1 - step / 251), step=step, weight_decay=0.0)
    state = {"reverse_answer": True, "data_dir": str(data), "sampler": sampler.state_dict()}
    save_model_checkpoint(root / "run" / "checkpoint", model, TOKENIZER, config, step=250, trainer_state=state)
    return root / "run"


@pytest.fixture(scope="module")
def q4(run_folder) -> Path:
    out = run_folder.parent / "q4"
    done = run("odin", "quantize", run_folder, out, "--type", "q4_0")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.count("\n") == 1 and "to q4_0 (embedding q8_0): " in done.stdout, done.stdout
    assert " MiB -> " in done.stdout and str(out) in done.stdout
    return out


def _answers(model_path: Path) -> list[str]:
    prompts = "".join(f"{e.prompt}\n" for e in EXAMPLES)
    done = run("odin-infer", "-m", model_path, "-n", "4", "--json", stdin=prompts)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["completion"] for line in done.stdout.splitlines()]


def test_odin_infer_answers_from_a_quantized_checkpoint_as_from_its_original(run_folder, q4, tmp_path):
    expected = [e.answer[::-1] for e in EXAMPLES]  # trained reversed; odin-infer shows reading order
    assert _answers(run_folder) == expected
    assert _answers(q4) == expected
    # -m takes the model file too; q8_0 with a float32 head, and its summary names both
    done = run("odin", "quantize", run_folder / "checkpoint" / "model.safetensors", tmp_path / "q8", "--type", "q8_0",
               "--embed", "f32")
    assert done.returncode == 0 and "q8_0 (embedding f32)" in done.stdout, done.stderr
    assert _answers(tmp_path / "q8" / "model.safetensors") == expected


def test_odin_eval_and_model_info_read_a_quantized_checkpoint(run_folder, q4):
    # no --data: the dataset recorded in the trainer state the quantized checkpoint kept
    scores = [run("odin", "eval", path, "--splits", "test", "--json", "--errors", path.parent / "errors")
              for path in (run_folder / "checkpoint", q4)]
    for done in scores:
        assert done.returncode == 0, done.stderr
    float_score, quant_score = (json.loads(done.stdout)["test"] for done in scores)
    assert quant_score["n"] == float_score["n"] > 0
    assert quant_score["exact"] == float_score["exact"] == 1.0, (float_score, quant_score)

    info = run("odin", "model", "info", q4)
    assert info.returncode == 0, info.stderr
    weights = WeightTypes("q4_0", "q8_0")
    stated = answering_memory(Blueprint(load_model_checkpoint(q4).run_config.model), weights)
    model = load_model_checkpoint(q4).model
    assert stated.weights == model.qblock.nbytes + model.params.nbytes
    assert f"weights     q4_0 matrices, embedding (the tied head) q8_0, other tensors float32: {stated.weights:,} B" \
        in info.stdout
    assert f"{stated.total:,} B" in info.stdout and "training: none" in info.stdout
    float_info = run("odin", "model", "info", run_folder)
    assert float_info.returncode == 0 and "weights     float32, every tensor" in float_info.stdout


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                  if "errors" not in p.parts)


def _float_48(root: Path) -> Path:
    config = RunConfig(model=ModelConfig(n_layer=1, d_model=48, n_head=2, context=16), train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    save_model_checkpoint(root / "f48", model, TOKENIZER, config, step=1)
    return root / "f48"


def _damaged(q4: Path, root: Path) -> Path:
    copy = root / "damaged"
    shutil.copytree(q4, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x04
    (copy / "model.safetensors").write_bytes(bytes(data))
    return copy


def _quantized_run(q4: Path, root: Path) -> Path:
    shutil.copytree(q4, root / "qrun" / "checkpoint")
    return root / "qrun"


TRAIN_REFUSAL = r"^odin train: error: {}.*: this checkpoint's weights are quantized as q4_0 \(embedding q8_0\): it " \
                r"can answer but not train; train the float32 checkpoint it was made from \(.*/run/checkpoint\)$"
CASES = {
    # name: (program and arguments, made from (run_folder, q4, tmp), expected stderr)
    "unknown type": (lambda r, q, t: ("odin", "quantize", r, t / "out", "--type", "q3_k"),
                     r"^odin quantize: error: --type: unknown quantization type 'q3_k': expected one of q8_0, q4_0, "
                     r"q4_1, q5_0, q5_1$"),
    "unknown embed type": (lambda r, q, t: ("odin", "quantize", r, t / "out", "--type", "q4_0", "--embed", "int8"),
                           r"^odin quantize: error: --embed: unknown quantization type 'int8'"),
    "quantized already": (lambda r, q, t: ("odin", "quantize", q, t / "out", "--type", "q4_0"),
                          r"^odin quantize: error: .*q4: this checkpoint is quantized already, as q4_0 \(embedding "
                          r"q8_0\): quantize the float32 checkpoint it was made from \(.*/run/checkpoint\)$"),
    "rows not whole blocks": (lambda r, q, t: ("odin", "quantize", _float_48(t), t / "out", "--type", "q4_0"),
                              r"^odin quantize: error: cannot store wte as q8_0: its rows hold 48 weights \(d_model = "
                              r"48\) and a q8_0 block holds 32; d_model must be a multiple of 32$"),
    "out exists": (lambda r, q, t: ("odin", "quantize", r, q, "--type", "q8_0"),
                   r"^odin quantize: error: .*q4 already exists; replace it with --overwrite, or choose another OUT$"),
    "damaged, infer": (lambda r, q, t: ("odin-infer", "-m", _damaged(q, t), "-p", "1+2="),
                       r"^odin-infer: error: .*damaged/model\.safetensors: checksum mismatch, the file is corrupt"),
    "damaged, eval": (lambda r, q, t: ("odin", "eval", _damaged(q, t), "--errors", t / "errors"),
                      r"^odin eval: error: .*damaged/model\.safetensors: checksum mismatch"),
    "train --init-from": (lambda r, q, t: ("odin", "train", "--data", r.parent / "data", "--steps", "2", "--out",
                                           t / "new", "--init-from", q), TRAIN_REFUSAL.format("--init-from: ")),
    "train --init-from, no --data": (lambda r, q, t: ("odin", "train", "--out", t / "new", "--init-from", q),
                                     TRAIN_REFUSAL.format("--init-from: ")),  # before the preset's data is built
    "train --resume": (lambda r, q, t: ("odin", "train", "--data", r.parent / "data", "--out", _quantized_run(q, t),
                                        "--resume"), TRAIN_REFUSAL.format("cannot resume: ")),
    "train --resume, --out the checkpoint": (lambda r, q, t: ("odin", "train", "--out", q, "--resume"),
                                             TRAIN_REFUSAL.format("cannot resume: ")),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_writes_nothing(run_folder, q4, tmp_path, case):
    make, expected = CASES[case]
    program, *args = make(run_folder, q4, tmp_path)
    before = _listing(tmp_path), _listing(run_folder.parent)
    done = run(program, *args, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.search(expected, done.stderr.strip()), done.stderr
    assert (_listing(tmp_path), _listing(run_folder.parent)) == before  # nothing written anywhere


def test_the_pipeline_does_not_train_a_quantized_checkpoint(q4, tmp_path):
    from pipeline_helpers import config_text, run_once, write_docs

    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text())
    write_docs(folder / "inbox", 40)
    assert run_once(folder, config).returncode == 0
    latest = folder / "checkpoints" / "latest"
    done = run("odin", "quantize", folder, tmp_path / "q", "--type", "q8_0")  # a pipeline folder: its latest
    assert done.returncode == 0, done.stderr
    shutil.rmtree(latest)
    shutil.copytree(tmp_path / "q", latest)
    write_docs(folder / "inbox", 5, start=100)
    before = _listing(latest)
    done = run_once(folder, config)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr  # it stops, saying why
    assert re.search(r"cannot resume training: .*latest: this checkpoint's weights are quantized as q8_0: it can "
                     r"answer but not train", done.stdout + done.stderr), done.stderr
    assert _listing(latest) == before
    answered = run("odin-infer", "-m", folder, "-p", "The", "-n", "4")  # it still answers
    assert answered.returncode == 0, answered.stderr


def _peak_added(*code_and_args: str) -> tuple[int, int]:
    """(exit status, peak RSS added) of odin.cli / odin.infer_cli main(argv) in a fresh Python,
    counted from after the imports (this process's own /proc figures)."""
    measure = ("import sys\n"
               "import odin.cli, odin.infer_cli, odin.quant.checkpoint, odin.model, odin.rwkv, safetensors\n"
               "def status(key):\n"
               "    line = next(l for l in open('/proc/self/status') if l.startswith(key + ':'))\n"
               "    return int(line.split()[1]) * 1024\n"
               "before = status('VmRSS')\n"
               "main = odin.cli.main if sys.argv[1] == 'odin' else odin.infer_cli.main\n"
               "code = main(sys.argv[2:])\n"
               "print(code, status('VmHWM') - before, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", measure, *code_and_args], capture_output=True, text=True, timeout=120)
    code, added = map(int, done.stderr.split()[-2:])
    assert code == 0, done.stderr
    return code, added


def test_quantizing_and_answering_hold_the_quantized_weights_not_the_float32_ones(tmp_path):
    """odin quantize streams (its peak RSS grows by far less than the float32 weights), and
    odin-infer on the result adds what odin model info states for it (issue 20, item 1)."""
    config = RunConfig(model=ModelConfig(n_layer=4, d_model=512, n_head=8, context=64, vocab_size=8000),
                       train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    save_model_checkpoint(tmp_path / "f", model, CharTokenizer(), config, step=1, trainer_state={})
    float_bytes = model.params.nbytes
    del model
    _, added = _peak_added("odin", "quantize", str(tmp_path / "f"), str(tmp_path / "q"), "--type", "q4_0")
    quantized = (tmp_path / "q" / "model.safetensors").stat().st_size
    # the quantized model, its copy being written and a 4 MiB piece (~28 MB); never the float32 weights (~67 MB)
    assert added < 2 * quantized + 16 * 2**20 < float_bytes, (added, quantized, float_bytes)

    stated = answering_memory(Blueprint(config.model), WeightTypes("q4_0", "q8_0"))
    _, added = _peak_added("odin-infer", "-m", str(tmp_path / "q"), "-p", "12+34=", "-n", "3")
    # the weights once, the state, and ~14 MiB besides (as tests/test_answering_memory.py)
    assert 0.95 * stated.total <= added <= 1.02 * stated.total + 24 * 2**20, (added, stated)
