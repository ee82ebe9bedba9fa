"""odin.data.code: programs from a small grammar, answers from really running them."""
import json
import random
import re
import subprocess
import sys

import pytest

from odin.data.examples import Example
from odin.data.code import (
    OUTPUT_MARKER,
    CodeConfig,
    generate_program,
    make_prompt,
    program_of,
    run_programs,
    sample_unique_examples,
)
from odin.data.scratchpad import final_answer
from odin.tokenizers import CharTokenizer

VOCAB = set(CharTokenizer().vocab)

# Runs programs with plain exec() in a fresh interpreter: independent of odin.data.sandbox.
_RECHECK = r"""
import contextlib, io, json, sys
outputs = []
for program in json.load(sys.stdin):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(program, {"__name__": "__main__"})
    outputs.append(buffer.getvalue())
json.dump(outputs, sys.stdout)
"""


def _recheck(programs):
    done = subprocess.run([sys.executable, "-c", _RECHECK], input=json.dumps(programs), capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def built():
    return sample_unique_examples(CodeConfig(min_level=1, max_level=5), 1500, seed=0)


def test_every_answer_is_rechecked_by_running_the_program(built):
    examples = built.examples
    assert len(examples) == 1500 and len({e.prompt for e in examples}) == 1500
    outputs = _recheck([program_of(e.prompt) for e in examples])
    for example, output in zip(examples, outputs):
        assert output == example.answer + "\n", example


def test_format_levels_and_vocabulary(built):
    by_level = {}
    for example in built.examples:
        assert example.task == "code"
        assert example.prompt.endswith("\n" + OUTPUT_MARKER)
        assert make_prompt(program_of(example.prompt)) == example.prompt
        assert set(example.prompt + example.answer) <= VOCAB, example
        assert example.answer and "\n" not in example.answer and "#" not in example.answer
        assert len(example.answer) <= CodeConfig().max_answer_chars
        program = program_of(example.prompt)
        assert program.count("print(") == 1 and program.splitlines()[-1].startswith("print(")
        by_level.setdefault(example.difficulty, []).append(program)
    assert sorted(by_level) == [1, 2, 3, 4, 5]
    for program in by_level[1]:  # level 1: straight-line integer code
        assert not any(word in program for word in ("if ", "for ", "while ", "def ", "'"))
        assert len(program.splitlines()) <= 3
    for program in by_level[3]:  # level 3: at least one loop or function
        assert any(word in program for word in ("for ", "while ", "def "))
    longest = {level: max(len(p) for p in programs) for level, programs in by_level.items()}
    assert longest[3] <= 160 and longest[5] <= 256
    mean = {level: sum(map(len, programs)) / len(programs) for level, programs in by_level.items()}
    assert mean[1] < mean[2] < mean[3] < mean[4] < mean[5]  # harder levels are longer programs
    assert built.candidates == len(built.examples) + sum(built.discarded.values())


def test_deterministic_from_the_seed():
    first = [generate_program(random.Random(5), level) for level in range(1, 6)]
    assert first == [generate_program(random.Random(5), level) for level in range(1, 6)]
    a = sample_unique_examples(CodeConfig(), 60, seed=3)
    b = sample_unique_examples(CodeConfig(), 60, seed=3, jobs=2)
    assert a.examples == b.examples and a.discarded == b.discarded
    assert sample_unique_examples(CodeConfig(), 60, seed=4).examples != a.examples
    excluded = {e.prompt for e in a.examples[:30]}
    again = sample_unique_examples(CodeConfig(), 60, seed=3, exclude=excluded)
    assert not excluded & {e.prompt for e in again.examples}


def test_failing_programs_are_discarded_and_counted():
    config = CodeConfig(timeout=0.5, max_answer_chars=10)
    programs = {
        "ok": "a=2\nprint(a*21)",
        "error": "print(1//0)",
        "timeout": "while True:\n pass",
        "memory": "x='a'*10**10\nprint(len(x))",
        "two_lines": "print(1)\nprint(2)",
        "too_long": "print('a'*11)",
        "mark": "print('a#b')",
        "silent": "a=1",
        "import": "import os\nprint(1)",
    }
    items = [(make_prompt(program), 2) for program in programs.values()]
    outcomes = dict(zip(programs, run_programs(items, config)))
    assert outcomes["ok"] == Example(items[0][0], "42", "code", 2)
    assert {name: outcome for name, outcome in outcomes.items() if name != "ok"} == {
        "error": "error", "timeout": "timeout", "memory": "memory", "two_lines": "bad_output",
        "too_long": "bad_output", "mark": "bad_output", "silent": "bad_output", "import": "error",
    }


def test_bad_config():
    with pytest.raises(ValueError, match="max_level"):
        CodeConfig(max_level=6)
    with pytest.raises(ValueError, match="timeout"):
        CodeConfig(timeout=-1)
    with pytest.raises(ValueError, match="not a code prompt"):
        program_of("print(1)")


# The traces are re-checked without the sandbox: the program runs under plain exec() in a
# fresh interpreter, its output and final top-level variables must match the last values
# the trace wrote, and every step whose right side is arithmetic on literals must compute
# the value written after it.
_ARITHMETIC_ON_LITERALS = re.compile(r"^[-+*/%()0-9]+$")
_FINAL_STATE = r"""
import contextlib, io, json, sys
results = []
for program in json.load(sys.stdin):
    env = {"__name__": "__main__"}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(program, env)
    state = {k: str(v) for k, v in env.items() if type(v) in (int, str) and not k.startswith("__")}
    results.append([state, buffer.getvalue().rstrip("\n")])
json.dump(results, sys.stdout)
"""


def test_execution_trace_answers_are_rechecked_by_running_and_replaying():
    config = CodeConfig(min_level=1, max_level=5, scratchpad=True, max_trace_chars=600)
    built = sample_unique_examples(config, 400, seed=7)
    assert len(built.examples) == 400
    done = subprocess.run([sys.executable, "-c", _FINAL_STATE],
                          input=json.dumps([program_of(e.prompt) for e in built.examples]),
                          capture_output=True, text=True, timeout=120, check=True)
    checked_steps = 0
    for example, (state, output) in zip(built.examples, json.loads(done.stdout)):
        steps, final = example.answer.rsplit("#", 1)
        assert final == output
        last = {}
        *steps, printed = steps.split(";")
        assert printed.startswith("print(") and printed.endswith(")")  # the last step: what is printed
        if _ARITHMETIC_ON_LITERALS.match(printed[6:-1]):
            assert str(eval(printed[6:-1])) == output
        for step in steps:
            name, rest = step.split("=", 1)
            *shown, value = rest.split("=")
            for part in shown:  # "f(200)=200-9=191": the function's return written out
                if _ARITHMETIC_ON_LITERALS.match(part):
                    assert str(eval(part)) == value, step  # a step on literals computes its value
                    checked_steps += 1
            last[name] = value
        assert last == {k: v for k, v in state.items() if k in last}, example
        assert set(state) <= set(last), example  # every variable the program leaves was traced
        assert set(example.answer) <= VOCAB
    assert checked_steps > 400
    plain = {e.prompt: e.answer for e in sample_unique_examples(CodeConfig(min_level=1, max_level=5), 400, seed=7).examples}
    assert sum(e.prompt in plain for e in built.examples) > 300  # the same programs, mostly


def test_trace_answers_by_hand_and_the_length_cap():
    program = "n=0-16\nd=n*6\nfor i in range(2):\n d+=i*5\nprint(d)"
    items = [(make_prompt(program), 3)]
    answer = "n=0-16=-16;d=-16*6=-96;i=0;d=-96+(0*5)=-96;i=1;d=-96+(1*5)=-91;print(-91)#-91"
    assert run_programs(items, CodeConfig(scratchpad=True))[0].answer == answer
    assert run_programs(items, CodeConfig(scratchpad=True, max_trace_chars=len(answer) - 1)) == ["long_trace"]
    assert run_programs(items, CodeConfig())[0].answer == "-91"
    with pytest.raises(ValueError, match="scratchpad"):
        CodeConfig(scratchpad="yes")
