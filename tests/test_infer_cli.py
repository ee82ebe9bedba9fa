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
JSON_KEYS = {"prompt", "completion", "tokens", "stopped_by", "prefill", "decode", "notes"}


def _config() -> RunConfig:
    return RunConfig(model=ModelConfig(n_layer=2, d_model=64, n_head=4, context=CONTEXT), train=TrainConfig(steps=250))


def infer(*args, stdin=None, text=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run([sys.executable, "-m", "odin.infer_cli", *argv], input=stdin,
                          capture_output=True, text=text, timeout=60, env=env)


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


# ------------------------------------------------------------------ prompts that are not UTF-8 (issue 18, item 19)
@pytest.fixture(scope="module")
def bpe_ckpt(tmp_path_factory):
    """A pipeline-style checkpoint: byte-level BPE, trained on free text."""
    from odin.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train(["the cat sat on the mat; 12+34=46\n"] * 20, 300)
    config = RunConfig(model=ModelConfig(n_layer=1, d_model=16, n_head=2, context=32, vocab_size=tokenizer.vocab_size),
                       train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    path = tmp_path_factory.mktemp("bpe") / "pipeline" / "checkpoints" / "latest"
    save_model_checkpoint(path, model, tokenizer, config, step=0, trainer_state={"pipeline": {"trained": []}})
    return path


@pytest.mark.parametrize("which", ["bpe", "char"])
def test_a_prompt_that_is_not_utf8_is_one_line_on_every_path(which, bpe_ckpt, untrained, tmp_path):
    path = bpe_ckpt if which == "bpe" else untrained
    bad = b"1+\xff2="
    for args, stdin in ((["-p", bad], None), (["-f", tmp_path / "p.txt"], None), (["-f", "-"], bad)):
        (tmp_path / "p.txt").write_bytes(bad)
        proc = infer("-m", path, *args, stdin=stdin, text=False)
        assert proc.returncode == 2 and proc.stdout == b"", proc.stderr
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "is not UTF-8 text: byte 0xff at byte offset 2" in lines[0], lines
    # the REPL answers the lines around a bad one and reports that line alone
    proc = infer("-m", path, "--json", "-n", 2, stdin=b"1+2=\n\xfe\xff\n3+4=\n", text=False)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["prompt"] for line in proc.stdout.decode().splitlines()] == ["1+2=", "3+4="]
    assert proc.stderr.decode().strip() == ("odin-infer: error: line 2 is not UTF-8 text: byte 0xfe at byte "
                                            "offset 0 (invalid start byte)")


def test_the_generator_api_refuses_lone_surrogates(bpe_ckpt):
    from odin.infer_cli import InferError

    loaded = load_model_checkpoint(bpe_ckpt, with_optimizer=False)
    generator = Generator(loaded, max_tokens=2, temperature=0.0, top_k=0, top_p=1.0, seed=0, stops=[], raw=False)
    with pytest.raises(InferError, match="prompt is not UTF-8 text: byte 0xff at byte offset 1"):
        generator.run("a\udcffb", None)
    assert generator.run("the cat", None).tokens == 2


# ------------------------------------------------------------------ llama.cpp habits, -m forms (item 21)
def test_llama_cpp_flags_mean_what_they_mean_there(untrained, tmp_path):
    ours = json.loads(infer("-m", untrained, "-p", "3+4=", "--seed", 11, "--temperature", 2, "--max-tokens", 6,
                            "--json").stdout)
    theirs = infer("-m", untrained, "-p", "3+4=", "-s", 11, "--temp", 2, "-n", 6, "-t", 4, "--json")
    assert theirs.returncode == 0, theirs.stderr
    assert json.loads(theirs.stdout)["completion"] == ours["completion"]
    assert json.loads(infer("-m", untrained, "-p", "3+4=", "--n-predict", 2, "--json").stdout)["tokens"] <= 2
    # -n -1: no limit but <end> and the context
    record = json.loads(infer("-m", untrained, "-p", "1", "-n", -1, "--temp", 1.5, "-s", 3, "--json").stdout)
    assert record["stopped_by"] in ("context", "end") and record["stopped_by"] != "max_tokens"
    # -f: the prompt from a file or stdin, one final newline dropped
    (tmp_path / "prompt.txt").write_text("3+4=\n")
    from_file = json.loads(infer("-m", untrained, "-f", tmp_path / "prompt.txt", "-s", 11, "--temp", 2, "-n", 6,
                                 "--json").stdout)
    assert (from_file["prompt"], from_file["completion"]) == (ours["prompt"], ours["completion"])
    assert json.loads(infer("-m", untrained, "-f", "-", "-s", 11, "--temp", 2, "-n", 6, "--json",
                            stdin="3+4=\n").stdout)["completion"] == ours["completion"]
    for args in (["-t", 0], ["-t", 65], ["-t", "x"], ["-n", -2], ["-f", "-"]):  # -p and -f: one or the other
        proc = infer("-m", untrained, "-p", "1", *args)
        assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, (args, proc.stderr)
    _one_error_line(infer("-m", untrained, "-f", tmp_path / "missing.txt"), "cannot read the prompt file")


def test_model_path_may_be_the_file_the_run_or_the_pipeline_folder(untrained, bpe_ckpt, tmp_path):
    import shutil

    want = json.loads(infer("-m", untrained, "-p", "5+5=", "-n", 3, "--json").stdout)["completion"]
    run = tmp_path / "runs" / "arith"
    shutil.copytree(untrained, run / "checkpoint")
    (run / "metrics.jsonl").write_text("")
    for form in (untrained / "model.safetensors", untrained / "config.json", run, run / "checkpoint"):
        proc = infer("-m", form, "-p", "5+5=", "-n", 3, "--json")
        assert proc.returncode == 0, (form, proc.stderr)
        assert json.loads(proc.stdout)["completion"] == want
    pipeline = bpe_ckpt.parent.parent
    assert infer("-m", pipeline, "-p", "the", "-n", 2, "--json").returncode == 0
    # a pipeline whose pipeline.toml keeps its checkpoints elsewhere
    moved = tmp_path / "moved"
    shutil.copytree(bpe_ckpt, moved / "ckpts" / "latest")
    (moved / "pipeline.toml").write_text('[folders]\ncheckpoints = "ckpts"\n')
    assert infer("-m", moved, "-p", "the", "-n", 2, "--json").returncode == 0
    # nothing there yet, or nothing at all: one line saying what was looked for
    (tmp_path / "fresh" / "checkpoints").mkdir(parents=True)
    _one_error_line(infer("-m", tmp_path / "fresh", "-p", "1"), "holds no checkpoint yet")
    (tmp_path / "empty").mkdir()
    _one_error_line(infer("-m", tmp_path / "empty", "-p", "1"), "no checkpoint in", "checkpoints/latest/")
    (tmp_path / "notes.txt").write_text("x")
    _one_error_line(infer("-m", tmp_path / "notes.txt", "-p", "1"), "is a file, not a checkpoint")


def test_prompts_outside_the_training_get_a_note(tmp_path):
    from odin.data.dataset import build_dataset

    manifest = build_dataset(tmp_path / "data", seed=0, n_examples=100, ops=["add"], max_digits=2)
    config = _config()
    model = model_from_config(config)
    model.init_weights(0)
    path = tmp_path / "ckpt"
    save_model_checkpoint(path, model, TOKENIZER, config, step=0,  # as odin.train records its data
                          trainer_state={"dataset": {"seed": 0, "settings": manifest["settings"]}})
    cases = {"12+34=": [], "123+4=": ["123 has 3 digits; the model was trained on operands of 1-2 digits"],
             "1*2=": ["the model was never trained on '*' (only on +)"],
             "": ["the prompt is empty; the model was trained to answer prompts like 12+98="]}
    for prompt, notes in cases.items():
        proc = infer("-m", path, "-p", prompt, "-n", 2, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["notes"] == notes
        assert proc.stderr.splitlines() == [f"odin-infer: note: {note}" for note in notes]
    proc = infer("-m", path, "-p", "hello", "-n", 2)  # answered all the same, after the note
    assert proc.returncode == 0 and proc.stdout.endswith("\n") and len(proc.stdout.splitlines()) == 1
    assert proc.stderr.splitlines()[0].startswith("odin-infer: note: the model was trained only on arithmetic "
                                                  "like 12+98=; 'hello' is not such a prompt")


# ------------------------------------------------------------------ prefill and decode, apart (item 22)
def test_prefill_and_decode_are_reported_apart(untrained):
    record = json.loads(infer("-m", untrained, "-p", "12+34=", "-n", 5, "--temp", 1.5, "-s", 2, "--json").stdout)
    assert record["prefill"]["tokens"] == 1 + len("12+34=")  # <bos> + the prompt
    assert record["prefill"]["ms"] > 0
    decode = record["decode"]
    assert decode["tokens"] == record["tokens"] - 1  # the first token comes out of prefill
    if decode["tokens"]:
        assert decode["tokens_per_s"] == pytest.approx(decode["tokens"] / (decode["ms"] / 1e3), rel=0.01)
    else:
        assert decode["tokens_per_s"] is None
    # one token: nothing decoded after prefill, no rate made up
    one = json.loads(infer("-m", untrained, "-p", "1", "-n", 1, "--json").stdout)
    assert one["decode"] == {"tokens": 0, "ms": 0.0, "tokens_per_s": None}
    # the plain output: the answer on stdout, one timing line per answer on stderr
    import re

    proc = infer("-m", untrained, "-n", 4, stdin="1+2=\n3+4=\n")
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    for line in lines:
        assert re.fullmatch(r"odin-infer: prefill 5 prompt tokens in \d+\.\d\d ms; decode \d tokens? in \d+\.\d\d ms"
                            r"( \([\d,]+ tokens/s\))?", line), line
    assert infer("-m", untrained, "-p", "1+2=", "-n", 2, "--no-perf").stderr == ""
