"""Short Python programs whose printed output is the answer, deterministic from a seed.

Every answer is produced by **running** the program in :mod:`odin.data.sandbox`; a program
that fails there (an exception, a timeout, too much memory or output) or whose output is
not a usable answer is discarded and counted, never given a made-up answer.

Format
------
* prompt: the program, lines joined by ``\\n``, one space of indentation per block level,
  no spaces around operators, then the marker line :data:`OUTPUT_MARKER` (``#out:``, a
  Python comment, so prompt + answer is still a valid program)::

      a=4
      b=a*3
      print(b-2)
      #out:

* answer: what the program printed, without the final newline (``10``). Exactly one
  ``print`` at the end, so the answer is a single line; ``print(s,a)`` prints ``"abc 5"``.
* task ``code``; difficulty = the level of the grammar below.
* with ``scratchpad=True`` the answer is the program's **execution trace**, then the
  scratchpad mark, then the output: one step per executed top-level assignment, its right
  side with the int variables' current values written in, then the new value, and a
  ``name=value`` step for a loop variable, and last the ``print`` with its argument's
  values written in (``n=0-16\nd=n*6\nfor i in range(2):\n d+=i*5\nprint(d)`` ->
  ``n=0-16=-16;d=-16*6=-96;i=0;d=-96+(0*5)=-96;i=1;d=-96+(1*5)=-91;print(-91)#-91``). So a step
  first copies values (a lookup) and then does one small computation on literals, the
  split that lets the multiplication and equation scratchpads work. The trace is
  recorded by the same sandboxed run that produces the output (a tracer on the program's
  module frame, :func:`odin.data.sandbox.run_many` with ``trace=True``), so every value is
  what Python computed; evaluation compares only the output after ``#``. Answers longer
  than ``max_trace_chars`` are discarded as ``long_trace``.

Grammar by level (each level adds to the previous one)
------------------------------------------------------
1. 1-2 integer assignments using ``+ - *`` on literals 0-9 and earlier variables; print.
2. 2-3 statements: ``//`` and ``%`` (by a literal 2-9), strings (literals of 2-4 lowercase
   letters, ``+``, slices ``s[1:]`` ``s[:2]`` ``s[::-1]``, ``s.upper()``, ``s*2``,
   ``len(s)``, ``str(n)``), ``if``/``else`` on a comparison.
3. 3-4 statements, at least one ``for i in range(k)`` (k <= 5) or ``while`` loop or a small
   ``def`` function (one or two parameters, possibly an ``if`` inside) used afterwards.
4. 5-6 statements, at least two compound ones; loops may hold an ``if``; ranges up to 9.
5. 7-8 statements, at least three compound ones, nested loops.

Levels 4-5 are the held-out "harder" programs (longer, more nesting). Prompts longer than
``max_prompt_chars`` (default 256) are skipped before running. Outputs longer than
``max_answer_chars`` or containing characters outside the char tokenizer's vocabulary (or
the scratchpad mark ``#``) are discarded and counted as ``bad_output``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from odin.data import sandbox
from odin.data.examples import Example
from odin.data.scratchpad import SCRATCH_MARK, STEP_SEPARATOR, join_steps

OUTPUT_MARKER = "#out:"
MIN_LEVEL, MAX_LEVEL = 1, 5
TASK = "code"
# (statements before the print: min, max), compound statements at least, range bound
_LEVELS = {1: ((1, 2), 0, 0), 2: ((2, 3), 0, 0), 3: ((3, 4), 1, 5), 4: ((5, 6), 2, 9), 5: ((7, 8), 3, 9)}
_INT_NAMES = "abcdmnpqkz"
_STR_NAMES = "stuv"
_FUNC_NAMES = "fgh"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ASSIGNMENT = re.compile(r"^ *([a-z])(?:=|\+=|-=)")  # not "n//=10" of a digit-sum loop
DISCARD_REASONS: tuple[str, ...] = ("error", "timeout", "memory", "output_limit", "killed", "sandbox_error",
                                    "bad_output", "long_trace")


@dataclass(frozen=True)
class CodeConfig:
    min_level: int = 1
    max_level: int = 3
    max_answer_chars: int = 24
    max_prompt_chars: int = 256
    timeout: float = sandbox.DEFAULT_TIMEOUT
    memory_mb: int = sandbox.DEFAULT_MEMORY_MB
    scratchpad: bool = False  # answers = execution trace + "#" + output
    max_trace_chars: int = 240  # longest scratchpad answer kept (trace, mark and output)

    def __post_init__(self) -> None:
        for name in ("min_level", "max_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not MIN_LEVEL <= value <= MAX_LEVEL:
                raise ValueError(f"code {name} must be an integer in [{MIN_LEVEL}, {MAX_LEVEL}], got {value!r}")
        if self.min_level > self.max_level:
            raise ValueError(f"code min_level ({self.min_level}) must be <= max_level ({self.max_level})")
        if not isinstance(self.scratchpad, bool):
            raise ValueError(f"code scratchpad must be true or false, got {self.scratchpad!r}")
        for name in ("max_answer_chars", "max_prompt_chars", "max_trace_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"code {name} must be a positive integer, got {value!r}")
        sandbox._validate(self.timeout, self.memory_mb, 1, 1, 1, "exec")

    def to_dict(self) -> dict:
        out = {"max_answer_chars": self.max_answer_chars, "max_level": self.max_level,
               "max_prompt_chars": self.max_prompt_chars,
               "memory_mb": self.memory_mb, "min_level": self.min_level, "timeout": self.timeout}
        if self.scratchpad:  # absent otherwise, so plain datasets keep their manifests
            out.update(scratchpad=True, max_trace_chars=self.max_trace_chars)
        return out


class _Program:
    """Builds one program of a level from the grammar in the module docstring."""

    def __init__(self, rng: random.Random, level: int) -> None:
        self.rng = rng
        self.level = level
        self.lines: list[str] = []
        self.ints: list[str] = []
        self.strs: list[str] = []
        self.funcs: dict[str, tuple[int, str]] = {}  # name -> (arity, "int"|"str")
        self.lit_max = 9 if level <= 2 else 20

    # ---------------------------------------------------------- helpers
    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def new_name(self, kind: str) -> str | None:
        pool = {"int": _INT_NAMES, "str": _STR_NAMES, "func": _FUNC_NAMES}[kind]
        used = set(self.ints) | set(self.strs) | set(self.funcs)
        free = [name for name in pool if name not in used]
        return self.choice(free) if free else None

    def lit(self, low: int = 0) -> str:
        return str(self.rng.randint(low, self.lit_max))

    def word(self) -> str:
        return "'" + "".join(self.choice(_LETTERS) for _ in range(self.rng.randint(2, 4))) + "'"

    def int_atom(self, avoid: str | None = None) -> str:
        names = [n for n in self.ints if n != avoid]
        if names and self.rng.random() < 0.7:
            return self.choice(names)
        return self.lit()

    def str_atom(self) -> str:
        if self.strs and self.rng.random() < 0.7:
            return self.choice(self.strs)
        return self.word()

    # ---------------------------------------------------------- expressions
    def int_expr(self) -> str:
        r = self.rng.random()
        if self.level >= 2 and r < 0.15:
            return f"{self.int_atom()}{self.choice(['//', '%'])}{self.rng.randint(2, 9)}"
        if self.level >= 2 and self.strs and r < 0.25:
            return f"len({self.choice(self.strs)})"
        int_funcs = [name for name, (_, kind) in self.funcs.items() if kind == "int"]
        if int_funcs and r < 0.4:
            name = self.choice(int_funcs)
            args = ",".join(self.int_atom() for _ in range(self.funcs[name][0]))
            return f"{name}({args})"
        left = self.int_atom()
        op = self.choice("+-*")
        right = self.lit(1) if op == "*" and self.rng.random() < 0.5 else self.int_atom(avoid=left)
        return f"{left}{op}{right}"

    def str_expr(self) -> str:
        r = self.rng.random()
        base = self.str_atom()
        str_funcs = [name for name, (_, kind) in self.funcs.items() if kind == "str"]
        if str_funcs and r < 0.2:
            return f"{self.choice(str_funcs)}({base})"
        if r < 0.35:
            return f"{base}+{self.str_atom()}"
        if r < 0.45:
            return f"{base}[{self.rng.randint(1, 2)}:]"
        if r < 0.55:
            return f"{base}[:{self.rng.randint(1, 3)}]"
        if r < 0.65:
            return f"{base}[::-1]"
        if r < 0.75:
            return f"{base}.upper()"
        if r < 0.82:
            return f"{base}*{self.rng.randint(2, 3)}"
        if r < 0.9 and self.ints:
            return f"str({self.choice(self.ints)})+{self.word()}"
        return self.word()

    def condition(self) -> str:
        r = self.rng.random()
        if self.strs and r < 0.2:
            return f"len({self.choice(self.strs)})>{self.rng.randint(2, 5)}"
        if self.ints and r < 0.45:
            return f"{self.choice(self.ints)}%2==0"
        op = self.choice([">", "<", "==", "!=", ">=", "<="])
        left = self.choice(self.ints) if self.ints else self.lit()
        return f"{left}{op}{self.int_atom(avoid=left)}"

    # ---------------------------------------------------------- statements
    def emit(self, depth: int, text: str) -> None:
        self.lines.append(" " * depth + text)

    def simple(self, depth: int, allow_new: bool = True) -> None:
        """One assignment: a new variable (top level only) or an update of an existing one."""
        want_str = self.level >= 2 and self.rng.random() < 0.35
        if allow_new and depth == 0 and (not (self.strs if want_str else self.ints) or self.rng.random() < 0.6):
            name = self.new_name("str" if want_str else "int")
            if name is not None:
                value = self.str_expr() if want_str else self.int_expr()
                self.emit(depth, f"{name}={value}")
                (self.strs if want_str else self.ints).append(name)
                return
        if want_str and self.strs:
            name = self.choice(self.strs)
            if self.rng.random() < 0.5:
                self.emit(depth, f"{name}+={self.str_atom()}")
            else:
                self.emit(depth, f"{name}={self.str_expr()}")
            return
        if not self.ints:
            name = self.new_name("int")
            self.emit(depth, f"{name}={self.int_expr()}")
            self.ints.append(name)
            return
        name = self.choice(self.ints)
        if self.rng.random() < 0.4:
            self.emit(depth, f"{name}{self.choice(['+=', '-='])}{self.int_atom(avoid=name)}")
        else:
            self.emit(depth, f"{name}={self.int_expr()}")

    def if_else(self, depth: int) -> None:
        self.emit(depth, f"if {self.condition()}:")
        for _ in range(1 if self.level <= 3 else self.rng.randint(1, 2)):
            self.simple(depth + 1, allow_new=False)
        if self.rng.random() < 0.6:
            self.emit(depth, "else:")
            self.simple(depth + 1, allow_new=False)

    def ensure_int(self) -> str:
        if not self.ints:
            name = self.new_name("int")
            self.emit(0, f"{name}={self.lit()}")
            self.ints.append(name)
        return self.choice(self.ints)

    def for_loop(self, depth: int, bound: int) -> None:
        acc = self.ensure_int()
        var = "i" if depth == 0 else "j"
        start = self.rng.randint(0, 2) if self.rng.random() < 0.3 else None
        stop = self.rng.randint(2, bound)
        header = f"range({start},{stop})" if start is not None and start < stop else f"range({stop})"
        self.emit(depth, f"for {var} in {header}:")
        r = self.rng.random()
        if self.level >= 5 and depth == 0 and r < 0.3:
            self.emit(depth + 1, f"for j in range({self.rng.randint(2, 4)}):")
            self.emit(depth + 2, f"{acc}+={self.choice(['i*j', 'i+j', 'j', '1'])}")
        elif self.level >= 4 and r < 0.6:
            self.emit(depth + 1, f"if {var}%{self.rng.randint(2, 3)}==0:")
            self.emit(depth + 2, f"{acc}{self.choice(['+=', '-='])}{self.choice([var, self.lit(1)])}")
            if self.rng.random() < 0.5:
                self.emit(depth + 1, "else:")
                self.emit(depth + 2, f"{acc}+={self.lit(1)}")
        elif self.strs and r < 0.8:
            s = self.choice(self.strs)
            self.emit(depth + 1, f"{s}+={self.choice(['str(' + var + ')', self.word()])}")
        else:
            self.emit(depth + 1, f"{acc}{self.choice(['+=', '-=', '+='])}{self.choice([var, var + '*' + self.lit(1), self.lit(1)])}")

    def while_loop(self, depth: int) -> None:
        n, total = self.new_name("int"), None
        if n is not None and self.rng.random() < 0.5:  # digit sum: while n>0: t+=n%10; n//=10
            self.emit(depth, f"{n}={self.rng.randint(10, 9999)}")
            self.ints.append(n)
            total = self.new_name("int")
            if total is None:
                total = self.choice([name for name in self.ints if name != n] or [n])
            else:
                self.emit(depth, f"{total}=0")
                self.ints.append(total)
            if total != n:
                self.emit(depth, f"while {n}>0:")
                self.emit(depth + 1, f"{total}+={n}%10")
                self.emit(depth + 1, f"{n}//=10")
                return
        counter = self.ensure_int()  # counting up: while c<limit: c+=step
        self.emit(depth, f"while {counter}<{self.rng.randint(10, 40)}:")
        self.emit(depth + 1, f"{counter}+={self.rng.randint(2, 9)}")
        others = [name for name in self.ints if name != counter]
        if others and self.rng.random() < 0.6:
            self.emit(depth + 1, f"{self.choice(others)}+=1")

    def function(self) -> None:
        name = self.new_name("func")
        if name is None:
            return
        if self.level >= 2 and self.rng.random() < 0.3:
            body = self.choice(["w[::-1]", "w+w[:1]", "w.upper()+'x'", "w[1:]+w[:1]", "w*2"])
            self.lines.insert(0, f"def {name}(w):\n return {body}")
            self.funcs[name] = (1, "str")
            return
        if self.rng.random() < 0.4:
            op1, op2 = self.choice("+-*"), self.choice("+-")
            self.lines.insert(0, f"def {name}(x,y):\n return x{op1}y{op2}{self.lit(1)}")
            self.funcs[name] = (2, "int")
            return
        if self.level >= 3 and self.rng.random() < 0.5:
            limit = self.rng.randint(2, 9)
            self.lines.insert(0, f"def {name}(x):\n if x>{limit}:\n  return x-{limit}\n"
                                 f" return x*{self.rng.randint(2, 3)}")
        else:
            self.lines.insert(0, f"def {name}(x):\n return x*{self.rng.randint(2, 5)}{self.choice('+-')}{self.lit(1)}")
        self.funcs[name] = (1, "int")

    def call_statement(self) -> None:
        names = list(self.funcs)
        if not names:
            return self.simple(0)
        name = self.choice(names)
        arity, kind = self.funcs[name]
        if kind == "str":
            arg = self.str_atom()
            target = self.new_name("str") or (self.choice(self.strs) if self.strs else None)
            if target is None:
                return self.simple(0)
            self.emit(0, f"{target}={name}({arg})")
            if target not in self.strs:
                self.strs.append(target)
        else:
            args = ",".join(self.int_atom() for _ in range(arity))
            target = self.new_name("int") or self.ensure_int()
            self.emit(0, f"{target}={name}({args})")
            if target not in self.ints:
                self.ints.append(target)
        return None

    def last_assigned(self) -> str | None:
        """The variable the latest statement assigned (the one worth printing)."""
        for line in reversed(self.lines):
            match = _ASSIGNMENT.match(line)
            if match and (match.group(1) in self.ints or match.group(1) in self.strs):
                return match.group(1)
        return None

    def final_print(self) -> None:
        """Print the latest result most of the time; otherwise an expression over a variable."""
        r = self.rng.random()
        last = self.last_assigned()
        if last is not None and r < 0.6:
            if last in self.ints and self.rng.random() < 0.3:
                self.emit(0, f"print({last}{self.choice('+-*')}{self.lit(1)})")
            else:
                self.emit(0, f"print({last})")
        elif self.ints and (self.level == 1 or not self.strs or r < 0.8):
            name = self.choice(self.ints)
            self.emit(0, f"print({name}{self.choice('+-*')}{self.int_atom(avoid=name)})")
        elif self.strs and self.ints:
            self.emit(0, f"print({self.choice(self.strs)},{self.choice(self.ints)})")
        else:
            self.emit(0, f"print({self.str_expr()})")

    def build(self) -> str:
        (low, high), min_compound, bound = _LEVELS[self.level]
        n_statements = self.rng.randint(low, high)
        n_compound = min_compound
        if self.level >= 2 and n_compound < n_statements - 1 and self.rng.random() < 0.4:
            n_compound += 1
        # the first statement is a plain assignment, so later ones have something to use
        slots = [False] + [True] * n_compound + [False] * (n_statements - n_compound - 1)
        slots[1:] = self.rng.sample(slots[1:], len(slots) - 1)
        loops_and_functions = [lambda: self.for_loop(0, bound), lambda: self.while_loop(0),
                               lambda: (self.function(), self.call_statement())]
        first_compound = True
        for compound in slots:
            if not compound:
                self.simple(0)
                continue
            self.ensure_int()
            if self.level >= 3 and first_compound:  # level 3+: at least one loop or function
                self.choice(loops_and_functions)()
            elif self.level >= 3:
                self.choice([lambda: self.if_else(0), *loops_and_functions])()
            else:
                self.if_else(0)
            first_compound = False
        self.final_print()
        return "\n".join(self.lines)


def generate_program(rng: random.Random, level: int) -> str:
    """One program of ``level`` (without the output marker)."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"level must be in [{MIN_LEVEL}, {MAX_LEVEL}], got {level}")
    return _Program(rng, level).build()


def make_prompt(program: str) -> str:
    return f"{program}\n{OUTPUT_MARKER}"


def program_of(prompt: str) -> str:
    """The program text of a code prompt (the prompt without its marker line)."""
    suffix = "\n" + OUTPUT_MARKER
    if not prompt.endswith(suffix):
        raise ValueError(f"not a code prompt (no final {OUTPUT_MARKER!r} line): {prompt!r}")
    return prompt[: -len(suffix)]


def _answer_from_stdout(stdout: str, config: CodeConfig, vocabulary: frozenset[str]) -> str | None:
    text = stdout[:-1] if stdout.endswith("\n") else stdout
    if not text or "\n" in text or len(text) > config.max_answer_chars or SCRATCH_MARK in text:
        return None
    if text != text.strip() or any(char not in vocabulary for char in text):
        return None
    return text


def _trace_answer(steps: tuple[str, ...], output: str, config: CodeConfig,
                  vocabulary: frozenset[str]) -> str | None:
    """``step;step;...#output``, or None when a step cannot be written in the format (or
    the answer is too long)."""
    if any(STEP_SEPARATOR in step or SCRATCH_MARK in step or any(c not in vocabulary for c in step)
           for step in steps):
        return None
    answer = join_steps(steps, output)
    return answer if len(answer) <= config.max_trace_chars else None


def _vocabulary() -> frozenset[str]:
    from odin.tokenizers import CharTokenizer

    return frozenset(token for token in CharTokenizer().vocab if len(token) == 1)


def run_programs(
    items: list[tuple[str, int]],
    config: CodeConfig,
    *,
    jobs: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> list[Example | str]:
    """Run each ``(prompt, level)`` in the sandbox: an :class:`Example` with the printed output
    as its answer, or the reason it was discarded (one of :data:`DISCARD_REASONS`)."""
    vocabulary = _vocabulary()
    results = sandbox.run_many([program_of(prompt) for prompt, _ in items], timeout=config.timeout,
                               memory_mb=config.memory_mb, jobs=jobs, on_progress=on_progress,
                               trace=config.scratchpad)
    outcomes: list[Example | str] = []
    for (prompt, level), result in zip(items, results):
        if not result.ok:
            outcomes.append(result.status)
            continue
        answer = _answer_from_stdout(result.stdout, config, vocabulary)
        if answer is None:
            outcomes.append("bad_output")
            continue
        if config.scratchpad:
            answer = _trace_answer(result.trace, answer, config, vocabulary)
            if answer is None:
                outcomes.append("long_trace")
                continue
        outcomes.append(Example(prompt, answer, TASK, level))
    return outcomes


@dataclass
class CodeBuild:
    """What :func:`sample_unique_examples` made: examples plus what it threw away."""

    examples: list[Example]
    discarded: dict[str, int]  # reason -> count (DISCARD_REASONS; duplicates are not counted)
    candidates: int  # programs whose outcome was used: len(examples) + sum(discarded.values())


def sample_unique_examples(
    config: CodeConfig,
    n: int,
    seed: int | str,
    *,
    exclude: set[str] | frozenset[str] = frozenset(),
    jobs: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> CodeBuild:
    """``n`` programs with distinct prompts (none in ``exclude``) and their sandboxed outputs.

    Programs are generated in rounds with one ``random.Random(f"odin.code:{seed}")``; each
    round is run in the sandbox and the programs that succeeded are kept in generation order
    until ``n`` are found. The result is deterministic as long as no generated program runs
    near the timeout (they take microseconds; the default timeout is seconds).
    ``on_progress(k)`` receives the number of examples kept so far.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"odin.code:{seed}")
    seen: set[str] = set(exclude)
    examples: list[Example] = []
    discarded = {reason: 0 for reason in DISCARD_REASONS}
    candidates = 0
    stale_rounds = failed_rounds = 0
    while len(examples) < n:
        need = n - len(examples)
        batch: list[tuple[str, int]] = []
        draws = 0
        while len(batch) < need + need // 10 + 8 and draws < 50 * (need + 8):
            draws += 1
            level = rng.randint(config.min_level, config.max_level)
            prompt = make_prompt(generate_program(rng, level))
            if prompt in seen or len(prompt) > config.max_prompt_chars:
                continue  # neither run nor counted
            seen.add(prompt)
            batch.append((prompt, level))
        if not batch:
            stale_rounds += 1
            if stale_rounds >= 3:
                raise RuntimeError(f"found only {len(examples)} distinct programs of {n}; "
                                   f"widen the levels or request fewer examples")
            continue
        kept_before = len(examples)
        outcomes = run_programs(
            batch, config, jobs=jobs,
            on_progress=(lambda k: on_progress(min(n, kept_before + k))) if on_progress else None,
        )
        for outcome in outcomes:
            if len(examples) >= n:
                break  # later candidates of the last round are neither kept nor counted
            candidates += 1
            if isinstance(outcome, Example):
                examples.append(outcome)
            else:
                discarded[outcome] += 1
        failed_rounds = failed_rounds + 1 if len(examples) == kept_before else 0
        if failed_rounds >= 3:  # three whole rounds failed: the sandbox or the settings are broken
            probe = sandbox.run("print(1)", timeout=config.timeout, memory_mb=config.memory_mb)
            raise RuntimeError(f"no generated program of the last 3 rounds ran successfully in the sandbox "
                               f"(discarded so far: {discarded}); a trivial program gives {probe.status!r}"
                               + (f": {probe.error}" if probe.error else ""))
        if on_progress is not None:
            on_progress(len(examples))
    return CodeBuild(examples=examples, discarded=discarded, candidates=candidates)
