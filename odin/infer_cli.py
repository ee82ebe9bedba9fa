r"""``odin-infer``: generate from a checkpoint, streaming tokens as they are produced.

    odin-infer -m CHECKPOINT -p "123+456=" [-n 64] [--temp 0] [--top-k 0] [--top-p 1]
               [-s 0] [--stop STRING]... [--json] [--raw] [-e] [--no-perf]
    odin-infer -m CHECKPOINT            # REPL: one prompt per line, until EOF or `exit`
    odin-infer -m CHECKPOINT -f prompt.txt   # the prompt from a file (- = stdin)
    odin-infer -m CHECKPOINT -e -p 'x=3\nprint(x*2)\n#out:'   # a program on one line

* ``-m`` takes the checkpoint folder, its ``model.safetensors``, an ``odin train`` run folder
  (``runs/arith-3digit``: its ``checkpoint/``) or a pipeline folder (its
  ``checkpoints/latest``); see :mod:`odin.checkpoint_locate`.
* llama.cpp's habits work too: ``-n/--n-predict`` (``-1``: until ``<end>`` or the context),
  ``--temp``, ``-s/--seed``, ``-t/--threads``, ``-f/--file``, ``-e`` (escapes),
  ``--no-perf``. ``-t N`` decodes on N threads (default: the cores, at most 4): each
  matrix-vector product's columns are split over them (csrc/pool.c), the tokens the same.
* The REPL on a terminal edits lines and recalls earlier prompts (readline), with a history
  kept in ``$XDG_STATE_HOME/odin/infer_history`` (:mod:`odin.infer_repl`). Ctrl-C during an
  answer stops that answer; at the prompt it ends the loop.
* Every prompt (``-p``, ``-f``, REPL lines) must be UTF-8 text: anything else is one error
  line (:mod:`odin.prompt_text`); in the REPL the loop goes on.
* ``-e``/``--escapes``: in ``-p``, ``-f`` and every REPL line, ``\n`` is a newline, ``\t`` a
  tab and ``\\`` a backslash (any other backslash sequence is an error), so a multi-line
  prompt such as a program fits on one command line or one REPL line. Off by default: a
  prompt may hold real backslashes.
* A prompt outside what the model was trained on (empty, not shaped like its tasks, an
  operation or a number of digits it never saw) is still answered, after a note on stderr
  saying so (``odin-infer: note: ...``; :mod:`odin.infer_scope`, from the checkpoint's
  record of its dataset).

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
* Speed is reported in two parts, because one short answer is mostly start-up: *prefill*
  (the prompt's tokens fed through the model, up to the first generated token) and
  *decode* (each further token), timed inside the engine's token loop (not the printing).
  A line on stderr after each answer (not with ``--json`` or ``--no-perf``).
* ``--json`` prints exactly one JSON object per prompt (one line each in the REPL) and
  nothing else on stdout: ``{"prompt", "completion", "tokens", "stopped_by", "prefill":
  {"tokens", "ms"}, "decode": {"tokens", "ms", "tokens_per_s"}, "notes"}`` —
  ``completion`` as it would be displayed (normal order), ``tokens`` the number of
  generated tokens including a final ``<end>``, ``stopped_by`` one of ``"end"``, ``"stop"``,
  ``"max_tokens"``, ``"context"``, ``notes`` the out-of-scope notes (also on stderr),
  ``decode.tokens_per_s`` null when nothing was decoded after the first token; plus
  ``"raw_completion"`` when the answer was un-reversed.
* Errors (missing or corrupt checkpoint, characters the char tokenizer does not know, a
  prompt that is not UTF-8 or longer than the context, bad arguments) print one line on
  stderr and exit with 2. In the REPL a bad prompt prints its error and the loop goes on.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, TextIO

from odin.infer_args import PROG, build_parser
from odin.prompt_text import decode_escapes, escape_for_command_line, prompt_from_bytes, prompt_from_text

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


@dataclass
class Completion:
    prompt: str
    completion: str  # as displayed (normal reading order)
    raw_completion: str  # as generated (before un-reversing), stop string trimmed
    tokens: int  # generated, a final <end> included
    stopped_by: str
    reversed: bool
    prompt_tokens: int = 0  # fed in prefill, <bos> included
    prefill_seconds: float = 0.0  # prompt through the model, up to the first generated token
    decode_seconds: float = 0.0  # every further token (engine time, not printing)
    notes: list[str] = field(default_factory=list)

    @property
    def decode_tokens(self) -> int:
        return max(0, self.tokens - 1)  # the first token comes out of prefill

    @property
    def decode_tokens_per_s(self) -> Optional[float]:
        if self.decode_tokens == 0 or self.decode_seconds <= 0:
            return None
        return self.decode_tokens / self.decode_seconds

    def to_json(self) -> dict[str, Any]:
        rate = self.decode_tokens_per_s
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "completion": self.completion,
            "tokens": self.tokens,
            "stopped_by": self.stopped_by,
            "prefill": {"tokens": self.prompt_tokens, "ms": round(self.prefill_seconds * 1e3, 3)},
            "decode": {"tokens": self.decode_tokens, "ms": round(self.decode_seconds * 1e3, 3),
                       "tokens_per_s": None if rate is None else round(rate, 1)},
            "notes": list(self.notes),
        }
        if self.reversed:
            data["raw_completion"] = self.raw_completion
        return data

    def perf_line(self) -> str:
        """The timing line printed on stderr after an answer."""
        rate = self.decode_tokens_per_s
        speed = f" ({rate:,.0f} tokens/s)" if rate is not None else ""
        return (f"prefill {_count(self.prompt_tokens, 'prompt token')} in {self.prefill_seconds * 1e3:.2f} ms; "
                f"decode {_count(self.decode_tokens, 'token')} in {self.decode_seconds * 1e3:.2f} ms{speed}")


DEFAULT_DECODE_THREADS = 4  # one sequence's products: past a few cores the memory bus is the limit


def decode_threads() -> int:
    """odin-infer's default: the cores this process may use, at most DEFAULT_DECODE_THREADS."""
    from odin.spheres import default_threads

    return min(DEFAULT_DECODE_THREADS, default_threads())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


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

    def __init__(self, loaded: Any, *, max_tokens: Optional[int], temperature: float, top_k: int, top_p: float,
                 seed: int, stops: Sequence[str], raw: bool, threads: int = 1) -> None:
        from odin.infer_scope import trained_scope
        from odin.model import Sampler

        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.max_tokens = max_tokens  # None: no limit but <end> and the context
        self.stops = list(stops)
        self.reversed = loaded.reverse_answer and not raw
        settings = (loaded.trainer_state.get("dataset") or {}).get("settings") or {}
        tasks = settings.get("reversed_tasks")
        self.reversed_tasks = tuple(tasks) if isinstance(tasks, list) else None
        self.prompt_width = loaded.prompt_width
        self.scope = trained_scope(loaded.trainer_state)
        self.sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        self.threads = threads  # decoding threads: the same tokens for any count

    def encode_prompt(self, prompt: str) -> list[int]:
        try:
            prompt = prompt_from_text(prompt)  # the API takes any str: lone surrogates are not text
        except ValueError as error:
            raise InferError(str(error)) from None
        try:
            ids = [self.tokenizer.bos_id, *self.tokenizer.encode(prompt)]
        except ValueError as error:
            raise InferError(f"prompt: {error}") from None
        from odin.model import position_limit

        context = position_limit(self.model)  # None: a recurrent model (RWKV) has no position limit
        if context is not None and len(ids) > context:
            raise InferError(f"prompt is {len(ids)} tokens with <bos> but the model's context is {context}")
        return ids

    def notes(self, prompt: str) -> list[str]:
        """How ``prompt`` lies outside what the model was trained on (odin.infer_scope)."""
        from odin.infer_scope import prompt_notes

        return prompt_notes(self.scope, prompt)

    def _text(self, ids: list[int]) -> str:
        from odin.evaluate import decode_until_end

        return decode_until_end(self.tokenizer, ids)[0]

    def run(self, prompt: str, out: TextIO | None, on_ready: Any = None) -> Completion:
        """Generate; with ``out`` (and not reversed) the text is written there as it grows.
        ``on_ready(notes)`` is called once the prompt is known to be usable, before any output."""
        from odin.data.arithmetic import padded_operands
        from odin.model import stream_tokens

        # a model trained with zero-padded operands is asked in that form ("12+5=" -> "0000000012+0000000005=")
        prompt_ids = self.encode_prompt(padded_operands(prompt, self.prompt_width))
        notes = self.notes(prompt)
        if on_ready is not None:
            on_ready(notes)
        end_id = self.tokenizer.end_id
        stream = out if (out is not None and not self.reversed) else None
        ids: list[int] = []
        count = 0
        emitted = 0
        text = ""
        longest_stop = max((len(s) for s in self.stops), default=0)
        stopped_by = None
        limit = self.max_tokens if self.max_tokens is not None else sys.maxsize
        tokens = stream_tokens(self.model, prompt_ids, limit, self.sampler, stop_ids=(end_id,), threads=self.threads)
        # engine time only: each next() is the model's work for one token (the first one
        # also feeds the prompt); decoding text and printing happen between them
        prefill = decode = 0.0
        while True:
            started = time.perf_counter()
            token = next(tokens, None)
            spent = time.perf_counter() - started
            if token is None:
                break
            if count == 0:
                prefill = spent
            else:
                decode += spent
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
        if stopped_by is None:
            stopped_by = "max_tokens" if count >= limit else "context"
        if stream is not None and len(text) > emitted:
            stream.write(text[emitted:])
            stream.flush()
        display = text
        if self.reversed and _unreverses(prompt, self.reversed_tasks):
            from odin.data.scratchpad import display_answer

            display = display_answer(text, True)
        return Completion(prompt=prompt, completion=display, raw_completion=text, tokens=count,
                          stopped_by=stopped_by, reversed=self.reversed, prompt_tokens=len(prompt_ids),
                          prefill_seconds=prefill, decode_seconds=decode, notes=notes)


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


def _note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Output:
    """How answers are shown: one JSON object each, or streamed text (+ a timing line)."""

    as_json: bool = False
    escapes: bool = False
    perf: bool = True


def _one(generator: Generator, prompt: str, output: Output) -> None:
    if output.escapes:
        try:
            prompt = decode_escapes(prompt)
        except ValueError as error:
            raise InferError(f"prompt: {error}") from None

    def announce(notes: list[str]) -> None:
        for note in notes:
            _note(note)

    out = sys.stdout
    if output.as_json:
        result = generator.run(prompt, None, announce)
        out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        out.flush()
        return
    result = generator.run(prompt, out, announce)
    if generator.reversed:
        out.write(result.completion)
    out.write("\n")
    out.flush()
    if output.perf:
        print(f"{PROG}: {result.perf_line()}", file=sys.stderr, flush=True)


def _repl(generator: Generator, output: Output) -> None:
    from odin.infer_repl import prompt_lines

    interactive = sys.stdin.isatty()
    lines = prompt_lines(_note)
    try:
        for prompt, problem in lines:
            # from here to the next prompt, Ctrl-C (on a terminal) stops this line's answer
            # and the loop goes on; at the prompt (inside `lines`) it ends the loop
            try:
                if problem is not None:
                    _error(problem)
                    continue
                if prompt.strip() in ("exit", "quit"):
                    return
                if not prompt:
                    continue
                _one(generator, prompt, output)
            except InferError as error:
                _error(str(error))
            except KeyboardInterrupt:
                if not interactive:
                    raise
                sys.stdout.write("\n")
                sys.stdout.flush()
                _note("stopped")
    finally:
        lines.close()  # saves the history


def _file_prompt(name: str) -> str:
    """-f: the prompt's bytes from a file ('-': stdin), one final newline dropped."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as handle:
                data = handle.read()
    except OSError as error:
        raise InferError(f"cannot read the prompt file {name}: {error.strerror or error}") from None
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    try:
        return prompt_from_bytes(data, "the prompt on stdin" if name == "-" else f"the prompt file {name}")
    except ValueError as error:
        raise InferError(str(error)) from None


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

        from odin.checkpoint_locate import locate_checkpoint

        if args.prompt is not None:  # checked before the (slower) model load
            try:
                prompt: Optional[str] = prompt_from_text(args.prompt)
            except ValueError as error:
                raise InferError(str(error)) from None
        else:
            prompt = _file_prompt(args.file) if args.file is not None else None
        try:
            loaded = load_model_checkpoint(locate_checkpoint(args.model), with_optimizer=False)
        except (CheckpointError, OSError) as error:
            raise InferError(str(error)) from None
        generator = Generator(loaded, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed, stops=args.stop, raw=args.raw,
                              threads=args.threads or decode_threads())
        output = Output(as_json=args.json, escapes=args.escapes, perf=not args.no_perf)
        if prompt is not None:
            _one(generator, prompt, output)
        else:
            _repl(generator, output)
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
