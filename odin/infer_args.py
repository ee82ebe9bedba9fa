"""``odin-infer``'s command line: its options and the checks on their values (every bad
value is argparse's one-line error and exit status 2, before anything is loaded)."""
from __future__ import annotations

import argparse
from typing import Optional

PROG = "odin-infer"


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
_threads = _number(int, 1, 64)  # the spheres trainer's range (odin.h)
_non_negative_int = _number(int, 0)
_non_negative_float = _number(float, 0.0)
_top_p = _number(float, 0.0, 1.0, low_open=True)


def _max_tokens(text: str) -> Optional[int]:
    """-n: a positive count, or -1 (llama.cpp's "no limit": until <end> or the context)."""
    if text.strip() == "-1":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (or -1: no limit), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (or -1: no limit), got {text}")
    return value


def _stop_string(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a stop string cannot be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate text from an ODIN checkpoint (tokens stream as they are produced). "
                    "Without -p or -f, read one prompt per line until EOF or 'exit' (on a terminal "
                    "with line editing and a history kept between sessions).",
    )
    parser.add_argument("-m", "--model", required=True, metavar="CHECKPOINT",
                        help="checkpoint folder, its model.safetensors, an `odin train` run folder "
                             "or a pipeline folder")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-p", "--prompt", default=None, help="prompt text (omit for the interactive loop)")
    source.add_argument("-f", "--file", default=None, metavar="FILE",
                        help="read the prompt from FILE ('-': stdin; one final newline is dropped)")
    parser.add_argument("-e", "--escapes", action="store_true",
                        help=r"read \n, \t and \\ in prompts as newline, tab and backslash "
                             "(multi-line prompts on one line)")
    parser.add_argument("-n", "--max-tokens", "--n-predict", dest="max_tokens", type=_max_tokens, default=512,
                        metavar="N",
                        help="most tokens to generate, <end> included (default 512, room for a program's "
                             "trace; -1: no limit; the context may stop it sooner)")
    parser.add_argument("--temperature", "--temp", type=_non_negative_float, default=0.0, metavar="T",
                        help="sampling temperature; 0 = greedy (default)")
    parser.add_argument("--top-k", type=_non_negative_int, default=0, metavar="K", help="keep the K likeliest tokens (0 = all)")
    parser.add_argument("--top-p", type=_top_p, default=1.0, metavar="P", help="nucleus sampling mass (default 1)")
    parser.add_argument("-s", "--seed", type=int, default=0, metavar="S", help="sampling seed (default 0)")
    parser.add_argument("-t", "--threads", type=_threads, default=None, metavar="N",
                        help="decoding threads, 1..64 (default: the cores, at most 4): each product's columns "
                             "are split over them; the same tokens for any count")
    parser.add_argument("--stop", type=_stop_string, action="append", default=[], metavar="STRING",
                        help="stop when STRING appears in the output (trimmed; repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per prompt and nothing else")
    parser.add_argument("--raw", action="store_true",
                        help="show the model's raw output even if it was trained on digit-reversed answers")
    parser.add_argument("--no-perf", action="store_true",
                        help="no prefill/decode timing line on stderr after each answer")
    return parser
