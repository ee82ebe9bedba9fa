r"""``odin-infer``: generate from a checkpoint, streaming tokens as they are produced.

    odin-infer -m CHECKPOINT -p "123+456=" [-n 64] [--temperature 0] [--top-k 0] [--top-p 1]
               [--seed 0] [--stop STRING]... [--json] [--raw] [-e]
    odin-infer -m CHECKPOINT            # REPL: one prompt per stdin line, until EOF or `exit`
    odin-infer -m CHECKPOINT -e -p 'x=3\nprint(x*2)\n#out:'   # a program on one line

* ``-e``/``--escapes``: in ``-p`` and in every REPL line, ``\n`` is a newline, ``\t`` a tab and
  ``\\`` a backslash (any other backslash sequence is an error), so a multi-line prompt such
  as a program fits on one command line or one REPL line. Off by default: a prompt may
  hold real backslashes.

* The prompt is fed as ``[<bos>] + encode(prompt)``. Generation stops at ``<end>``, when a
  ``--stop`` string appears in the output (the stop string is trimmed away; text that
  could be the start of a stop string is held back until it is known not to be; stop
  strings match the raw output, before any un-reversing), after
  ``-n`` tokens, or when the model's context is full.
* Temperature 0 (the default) is greedy decoding; otherwise temperature / top-k / top-p
  sampling in C with a seeded RNG (one RNG for the whole session, seeded by ``--seed``).
* Reversed answers: when the checkpoint's trainer state says the model was trained on
  digit-reversed answers (``trainer_state["reverse_answer"]``), the raw tokens would read
  backwards, so nothing is streamed: the completion is printed once, in normal reading
  order, when generation ends. ``--raw`` streams the model's raw output instead.
* ``--json`` prints exactly one JSON object per prompt (one line each in the REPL) and
  nothing else on stdout: ``{"prompt", "completion", "tokens", "tokens_per_s",
  "stopped_by"}`` — ``completion`` as it would be displayed (normal order), ``tokens`` the
  number of generated tokens including a final ``<end>``, ``stopped_by`` one of ``"end"``,
  ``"stop"``, ``"max_tokens"``, ``"context"``; plus ``"raw_completion"`` when the answer
  was un-reversed.
* Errors (missing or corrupt checkpoint, characters the char tokenizer does not know, a
  prompt longer than the context, bad arguments) print one line on stderr and exit with 2.
  In the REPL a bad prompt prints its error and the loop goes on.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TextIO

from odin.prompt_text import decode_escapes, escape_for_command_line

PROG = "odin-infer"
EXIT_USAGE = 2


_ARITH_PROMPT = re.compile(r"^\s*\d+\s*[-+*/]\s*\d+\s*=\s*$")


def _unreverses(prompt: str, reversed_tasks: Optional[tuple[str, ...]]) -> bool:
    """Whether a reversed-answer model's completion of `prompt` reads backwards: always for
    an arithmetic-only model; in a mixed-task model only for the tasks it reversed, and a
    free-form prompt's task is only recognisable for arithmetic."""
    if reversed_tasks is None:
        return True
    return bool(_ARITH_PROMPT.match(prompt)) and bool({"arith", "add", "sub", "mul", "div"} & set(reversed_tasks))


class InferError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _number(kind: type, low: float, high: float = float("inf"), low_open: bool = False):
    """An argparse `type=` that parses `kind` and checks low <(=) value <= high (finite)."""
    if high != float("inf"):
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    else:
        wanted = f"{'an integer' if kind is int else 'a finite number'} {'>' if low_open else '>='} {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not (value > low if low_open else value >= low) or not value <= high or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)
_non_negative_float = _number(float, 0.0)
_top_p = _number(float, 0.0, 1.0, low_open=True)


def _stop_string(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a stop string cannot be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate text from an ODIN checkpoint (tokens stream as they are produced). "
                    "Without -p, read one prompt per line from stdin until EOF or 'exit'.",
    )
    parser.add_argument("-m", "--model", required=True, metavar="CHECKPOINT", help="checkpoint directory")
    parser.add_argument("-p", "--prompt", default=None, help="prompt text (omit for the interactive loop)")
    parser.add_argument("-e", "--escapes", action="store_true",
                        help=r"read \n, \t and \\ in prompts as newline, tab and backslash "
                             "(multi-line prompts on one line)")
    parser.add_argument("-n", "--max-tokens", type=_positive_int, default=512, metavar="N",
                        help="most tokens to generate, <end> included (default 512, room for a program's "
                             "trace; the context may stop it sooner)")
    parser.add_argument("--temperature", type=_non_negative_float, default=0.0, metavar="T",
                        help="sampling temperature; 0 = greedy (default)")
    parser.add_argument("--top-k", type=_non_negative_int, default=0, metavar="K", help="keep the K likeliest tokens (0 = all)")
    parser.add_argument("--top-p", type=_top_p, default=1.0, metavar="P", help="nucleus sampling mass (default 1)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (default 0)")
    parser.add_argument("--stop", type=_stop_string, action="append", default=[], metavar="STRING",
                        help="stop when STRING appears in the output (trimmed; repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per prompt and nothing else")
    parser.add_argument("--raw", action="store_true",
                        help="show the model's raw output even if it was trained on digit-reversed answers")
    return parser


@dataclass
class Completion:
    prompt: str
    completion: str  # as displayed (normal reading order)
    raw_completion: str  # as generated (before un-reversing), stop string trimmed
    tokens: int
    seconds: float
    stopped_by: str
    reversed: bool

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "completion": self.completion,
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / self.seconds, 3) if self.seconds > 0 else None,
            "stopped_by": self.stopped_by,
        }
        if self.reversed:
            data["raw_completion"] = self.raw_completion
        return data


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class Generator:
    """Streams one completion per prompt from a loaded checkpoint."""

    def __init__(self, loaded: Any, *, max_tokens: int, temperature: float, top_k: int, top_p: float,
                 seed: int, stops: Sequence[str], raw: bool) -> None:
        from odin.model import Sampler

        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.max_tokens = max_tokens
        self.stops = list(stops)
        self.reversed = loaded.reverse_answer and not raw
        settings = (loaded.trainer_state.get("dataset") or {}).get("settings") or {}
        tasks = settings.get("reversed_tasks")
        self.reversed_tasks = tuple(tasks) if isinstance(tasks, list) else None
        self.prompt_width = loaded.prompt_width
        self.sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)

    def encode_prompt(self, prompt: str) -> list[int]:
        try:
            ids = [self.tokenizer.bos_id, *self.tokenizer.encode(prompt)]
        except ValueError as error:
            raise InferError(f"prompt: {error}") from None
        from odin.model import position_limit

        context = position_limit(self.model)  # None: a recurrent model (RWKV) has no position limit
        if context is not None and len(ids) > context:
            raise InferError(f"prompt is {len(ids)} tokens with <bos> but the model's context is {context}")
        return ids

    def _text(self, ids: list[int]) -> str:
        from odin.evaluate import decode_until_end

        return decode_until_end(self.tokenizer, ids)[0]

    def run(self, prompt: str, out: TextIO | None) -> Completion:
        """Generate; with ``out`` (and not reversed) the text is written there as it grows."""
        from odin.data.arithmetic import padded_operands
        from odin.model import stream_tokens

        # a model trained with zero-padded operands is asked in that form ("12+5=" -> "0000000012+0000000005=")
        prompt_ids = self.encode_prompt(padded_operands(prompt, self.prompt_width))
        end_id = self.tokenizer.end_id
        stream = out if (out is not None and not self.reversed) else None
        ids: list[int] = []
        count = 0
        emitted = 0
        text = ""
        longest_stop = max((len(s) for s in self.stops), default=0)
        stopped_by = None
        started = time.perf_counter()
        for token in stream_tokens(self.model, prompt_ids, self.max_tokens, self.sampler, stop_ids=(end_id,)):
            count += 1
            if token == end_id:
                stopped_by = "end"
                break
            ids.append(token)
            previous = len(text)
            text = self._text(ids)
            if self.stops:
                # only the new text (and a stop string's length before it) can hold a new match
                search_from = max(0, previous - longest_stop)
                hits = [i for i in (text.find(s, search_from) for s in self.stops) if i >= 0]
                if hits:
                    text = text[:min(hits)]
                    stopped_by = "stop"
                    break
            if stream is not None:
                # Hold back an incomplete UTF-8 sequence (BPE) and a possible stop-string start.
                safe = len(text) - _held_back(text, self.stops)
                while safe > emitted and text[safe - 1] == "\ufffd":
                    safe -= 1
                if safe > emitted:
                    stream.write(text[emitted:safe])
                    stream.flush()
                    emitted = safe
        seconds = time.perf_counter() - started
        if stopped_by is None:
            stopped_by = "max_tokens" if count >= self.max_tokens else "context"
        if stream is not None and len(text) > emitted:
            stream.write(text[emitted:])
            stream.flush()
        display = text
        if self.reversed and _unreverses(prompt, self.reversed_tasks):
            from odin.data.scratchpad import display_answer

            display = display_answer(text, True)
        return Completion(prompt=prompt, completion=display, raw_completion=text, tokens=count,
                          seconds=seconds, stopped_by=stopped_by, reversed=self.reversed)


def infer_command(checkpoint: str, prompt: str) -> str:
    """A shell command line that asks the model at ``checkpoint`` ``prompt`` (with ``-e``
    when the prompt has lines, tabs or backslashes), quoted for POSIX shells."""
    escaped = any(char in prompt for char in "\n\t\\")
    flag = "-e -p" if escaped else "-p"
    text = escape_for_command_line(prompt) if escaped else prompt
    return f"{PROG} -m {_shell_quote(checkpoint)} {flag} {_shell_quote(text)}"


def _shell_quote(text: str) -> str:
    # double quotes read better around programs full of single-quoted strings; they are
    # used only where the shell leaves every character as it is (inside them it expands
    # $ and `, ends at ", turns \\ into \ and, in interactive bash, expands !)
    import shlex

    if "'" in text and not any(char in text for char in '"$`!') and "\\\\" not in text:
        return f'"{text}"'
    return shlex.quote(text)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _one(generator: Generator, prompt: str, as_json: bool, escapes: bool = False) -> None:
    if escapes:
        try:
            prompt = decode_escapes(prompt)
        except ValueError as error:
            raise InferError(f"prompt: {error}") from None
    out = sys.stdout
    if as_json:
        result = generator.run(prompt, None)
        out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    else:
        result = generator.run(prompt, out)
        if generator.reversed:
            out.write(result.completion)
        out.write("\n")
    out.flush()


def _repl(generator: Generator, as_json: bool, escapes: bool) -> None:
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            if interactive:
                sys.stdout.write("\n")
            return
        prompt = line.rstrip("\r\n")
        if prompt.strip() in ("exit", "quit"):
            return
        if not prompt:
            continue
        try:
            _one(generator, prompt, as_json, escapes)
        except InferError as error:
            _error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse printed usage + one error line (or --help)
        return int(exit_.code or 0)
    from odin.errors import native_load_error

    isa_problem = native_load_error()
    if isa_problem:  # a bad ODIN_ISA: one line, not a traceback from the first native import
        _error(isa_problem)
        return EXIT_USAGE
    from odin.native import OdinError

    for stream in (sys.stdout, sys.stderr):  # a model can emit anything; never die on a non-UTF-8 terminal
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (OSError, ValueError):
                pass
    try:
        from odin.checkpoint import CheckpointError, load_model_checkpoint

        try:
            loaded = load_model_checkpoint(args.model, with_optimizer=False)
        except (CheckpointError, OSError) as error:
            raise InferError(str(error)) from None
        generator = Generator(loaded, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed, stops=args.stop, raw=args.raw)
        if args.prompt is not None:
            _one(generator, args.prompt, args.json, args.escapes)
        else:
            _repl(generator, args.json, args.escapes)
    except InferError as error:
        _error(str(error))
        return EXIT_USAGE
    except OdinError as error:  # the native layer refused something (e.g. NaN logits)
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): stop quietly, and keep Python from complaining at exit
        try:
            sys.stdout = open(__import__("os").devnull, "w")
        except OSError:
            pass
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
