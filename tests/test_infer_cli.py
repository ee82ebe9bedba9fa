"""odin-infer: run as a subprocess (`python -m odin.infer_cli`) on saved tiny checkpoints."""
import dataclasses
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from odin.checkpoint import load_model_checkpoint, model_from_config, save_model_checkpoint
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.data.arithmetic import make_example, padded_operands
from odin.data.batching import BatchSampler, encode_examples
from odin.evaluate import greedy_predictions
from odin.infer_cli import Generator, _held_back
from odin.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer()
CONTEXT = 16
JSON_KEYS = {"prompt", "completion", "tokens", "tokens_per_s", "stopped_by"}


def _config() -> RunConfig:
    return RunConfig(model=ModelConfig(n_layer=2, d_model=64, n_head=4, context=CONTEXT), train=TrainConfig(steps=250))


def infer(*args, stdin=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "odin.infer_cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("infer") / "untrained"
    config = _config()
    model = model_from_config(config)
    model.init_weights(0)
    save_model_checkpoint(path, model, TOKENIZER, config, step=0, trainer_state={})
    return path


def _memorised_addition(path, width: int = 0, trainer_state=None):
    """1-digit addition with digit-reversed answers (operands written with zeros to `width`
    digits when given), memorised in ~250 steps."""
    config = _config()
    model = model_from_config(config)
    model.init_weights(0)
    examples = [make_example("add", a, b, reverse_answer=True) for a in range(10) for b in range(10)]
    if width:
        examples = [dataclasses.replace(e, prompt=padded_operands(e.prompt, width)) for e in examples]
    sampler = BatchSampler(encode_examples(examples, TOKENIZER), 100, 7 + 2 * width, seed=0)
    for step in range(1, 251):
        tokens, mask = sampler.next_batch()
        model.zero_grad()
        model.forward(tokens[:, :-1], tokens[:, 1:], mask)
        model.backward()
        model.adamw_step(lr=3e-3 * (1 - step / 251), step=step, weight_decay=0.0)
    save_model_checkpoint(path, model, TOKENIZER, config, step=250,
                          trainer_state={"reverse_answer": True, **(trainer_state or {})})
    return path


@pytest.fixture(scope="module")
def reversed_ckpt(tmp_path_factory):
    return _memorised_addition(tmp_path_factory.mktemp("infer") / "reversed")


def test_a_model_trained_on_zero_padded_operands_is_asked_in_that_form(tmp_path):
    path = _memorised_addition(tmp_path / "padded", width=3,
                               trainer_state={"dataset": {"settings": {"prompt_zeros": 3}}})
    assert load_model_checkpoint(path, with_optimizer=False).prompt_width == 3
    answer = json.loads(infer("-m", path, "-p", "7+8=", "--json").stdout)
    assert (answer["prompt"], answer["completion"]) == ("7+8=", "15")  # shown as typed, asked as 007+008=
    assert infer("-m", path, "-p", "9+4=").stdout == "13\n"
    assert infer("-m", path, "-p", "007+008=").stdout == "15\n"  # already padded: unchanged


def test_json_output_respects_n(untrained):
    for n in (1, 3):
        proc = infer("-m", untrained, "-p", "1+2=", "-n", n, "--json")
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout)  # the whole stdout is one JSON object
        assert set(record) == JSON_KEYS
        assert record["prompt"] == "1+2="
        assert 1 <= record["tokens"] <= n
        assert record["stopped_by"] in ({"end", "max_tokens"} if record["tokens"] == n else {"end"})
        assert len(record["completion"]) <= n
        assert proc.stderr == ""


def test_context_limit_stops_gracefully(untrained):
    proc = infer("-m", untrained, "-p", "12+34=", "-n", 500, "--json", "--temperature", "1.5", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    prompt_tokens = 1 + len("12+34=")
    assert record["tokens"] <= CONTEXT - prompt_tokens + 1
    assert record["stopped_by"] in ("context", "end")
    # a prompt that fills the context exactly still gets one token
    full = "1" * (CONTEXT - 1)
    record = json.loads(infer("-m", untrained, "-p", full, "--json").stdout)
    assert record["tokens"] == 1 and record["stopped_by"] in ("context", "end")


def test_sampling_is_seeded(untrained):
    args = ("-m", untrained, "-p", "3+4=", "-n", 8, "--temperature", "2", "--top-k", "50", "--top-p", "0.95", "--json")
    first = json.loads(infer(*args, "--seed", 11).stdout)
    again = json.loads(infer(*args, "--seed", 11).stdout)
    assert first["completion"] == again["completion"] and first["tokens"] == again["tokens"]


def _one_error_line(proc, *fragments):
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_checkpoint(tmp_path):
    _one_error_line(infer("-m", tmp_path / "nope", "-p", "1+2="), "odin-infer: error:", "checkpoint directory not found")


def test_corrupt_checkpoint(tmp_path, untrained):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(untrained, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 50)
    _one_error_line(infer("-m", broken, "-p", "1+2="), "model.safetensors")
    (broken / "config.json").unlink()
    _one_error_line(infer("-m", broken, "-p", "1+2="), "config.json is missing")


def test_unknown_character_and_too_long_prompt(untrained):
    _one_error_line(infer("-m", untrained, "-p", "1+é="), "'é'", "position 2", "char tokenizer")
    _one_error_line(infer("-m", untrained, "-p", "1" * CONTEXT), "context is 16")


def test_bad_arguments_exit_2(untrained):
    for args in (["-n", "0"], ["-n", "-3"], ["--top-p", "0"], ["--temperature", "-1"], ["--stop", ""]):
        proc = infer("-m", untrained, "-p", "1+2=", *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    assert infer("-p", "1+2=").returncode == 2  # -m is required


def test_interactive_reads_lines_until_exit(untrained):
    proc = infer("-m", untrained, "--json", stdin="1+2=\n\n3+4=\nexit\n5+5=\n")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["1+2=", "3+4="]
    # plain mode, EOF ends the loop; no "> " prompt when stdin is not a terminal; a bad line
    # reports its error and the loop goes on
    proc = infer("-m", untrained, "-n", 2, stdin="1+2=\n1+é=\n3+4=")
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 2 and "> " not in proc.stdout
    assert "'é'" in proc.stderr and "Traceback" not in proc.stderr


def test_reversed_model_prints_normal_order(reversed_ckpt):
    proc = infer("-m", reversed_ckpt, "-p", "7+8=")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "15\n"
    record = json.loads(infer("-m", reversed_ckpt, "-p", "9+4=", "--json").stdout)
    assert record["completion"] == "13" and record["raw_completion"] == "31"
    assert record["stopped_by"] == "end" and record["tokens"] == 3  # "3", "1", <end>
    assert infer("-m", reversed_ckpt, "-p", "7+8=", "--raw").stdout == "51\n"


def test_stop_string_is_trimmed(reversed_ckpt):
    record = json.loads(infer("-m", reversed_ckpt, "-p", "7+8=", "--raw", "--stop", "1", "--json").stdout)
    assert record["completion"] == "5" and record["stopped_by"] == "stop"
    record = json.loads(infer("-m", reversed_ckpt, "-p", "7+8=", "--raw", "--stop", "x", "--stop", "51",
                              "--json").stdout)
    assert record["completion"] == "" and record["stopped_by"] == "stop"


# ------------------------------------------------------------------ in-process details
def test_streaming_holds_back_possible_stop_prefix():
    assert _held_back("abc<en", ["<end>"]) == 3
    assert _held_back("abc", ["<end>"]) == 0
    assert _held_back("ab", ["b", "abx"]) == 2
    assert _held_back("", ["xy"]) == 0


def test_streamed_greedy_equals_batched_greedy(reversed_ckpt):
    loaded = load_model_checkpoint(reversed_ckpt, with_optimizer=False)
    generator = Generator(loaded, max_tokens=4, temperature=0.0, top_k=0, top_p=1.0, seed=0, stops=[], raw=True)
    examples = [make_example("add", a, b) for a in range(0, 10, 3) for b in range(10)]
    batched, _ = greedy_predictions(loaded.model, loaded.tokenizer, examples, max_new=4)
    streamed = []
    for example in examples:
        out = io.StringIO()
        result = generator.run(example.prompt, out)
        assert out.getvalue() == result.completion  # what was streamed is the completion
        streamed.append(result.completion)
    assert streamed == batched


def test_stream_is_incremental(reversed_ckpt):
    loaded = load_model_checkpoint(reversed_ckpt, with_optimizer=False)
    generator = Generator(loaded, max_tokens=8, temperature=0.0, top_k=0, top_p=1.0, seed=0, stops=["9"], raw=True)
    writes = []
    sink = SimpleNamespace(write=writes.append, flush=lambda: None)
    result = generator.run("7+8=", sink)
    assert "".join(writes) == result.completion == "51"
    assert writes == ["5", "1"]  # one write per token as it is produced
    # "1" could start the stop string "1x": it is held back until <end> shows it is not one
    generator.stops = ["1x"]
    writes.clear()
    assert generator.run("7+8=", sink).completion == "51" and writes == ["5", "1"]


def test_escapes_turn_one_line_into_a_multi_line_prompt(untrained):
    proc = infer("-m", untrained, "-e", "-p", r"a=1\nb\t\\", "--json", "-n", 1)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prompt"] == "a=1\nb\t\\"
    proc = infer("-m", untrained, "-p", r"a=1\nb", "--json", "-n", 1)  # off by default
    assert json.loads(proc.stdout)["prompt"] == "a=1\\nb"
    # every REPL line too; a bad escape is that line's error and the loop goes on
    proc = infer("-m", untrained, "-e", "--json", "-n", 1, stdin="x\\ty\nbad\\q\n1\\n2\n")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["prompt"] for line in proc.stdout.splitlines()] == ["x\ty", "1\n2"]
    assert "unknown escape \\q at character 3" in proc.stderr and "Traceback" not in proc.stderr
    _one_error_line(infer("-m", untrained, "-e", "-p", "1+2\\"), "a lone \\ at the end")


@pytest.mark.parametrize("prompt", [
    "q=6*5\nu='rgj'+'vib'\nprint(u)\n#out:",  # the program prompts `odin train` suggests
    "u='a\\\\b'\nprint(u)\n#out:",  # backslashes next to quotes
    "s=\"$x\"+'!'\tz=`y`\n#out:",  # characters a shell would expand inside double quotes
    "123+456=",
])
def test_suggested_command_gives_the_prompt_through_a_shell(tmp_path, prompt):
    # the command `odin train` prints after training, run by a real shell
    import shlex

    from odin.infer_cli import infer_command

    path = tmp_path / "it's here"
    config = RunConfig(model=ModelConfig(n_layer=1, d_model=16, n_head=2, context=64), train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    save_model_checkpoint(path, model, TOKENIZER, config, step=0, trainer_state={})
    command = infer_command(str(path), prompt)
    assert command.startswith("odin-infer -m ") and "\n" not in command  # one line, to copy
    command = f"{shlex.quote(sys.executable)} -m odin.infer_cli" + command[len("odin-infer"):] + " --json -n 1"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prompt"] == prompt
