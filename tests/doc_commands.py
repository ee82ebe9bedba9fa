"""Command lines shown in README.md and docs/*.md, and what each names: program,
sub-command path and flags (the documented side of tests/test_installed_commands.py).

Commands are taken from fenced shell blocks (```bash, ```sh or a plain ```; one command
per line, `&&`, `;` and ` | ` split it) and from inline code anywhere (tables, prose) that
starts with an ODIN program name. Sub-commands and options are told apart with the CLIs'
own argparse parsers, so a new sub-command (`odin export gguf`) is recognised by itself;
an option or sub-command the CLI does not have is reported as a problem.
"""
from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

PROGRAMS = ("odin", "odin-infer", "odin-pipeline", "odin-dashboard")
LAUNCHERS = ("mpirun", "mpiexec")  # `mpirun -np 2 odin train ...`: the launcher is part of the command
SHELL_FENCES = ("", "bash", "sh", "shell", "console")  # fenced blocks whose lines may be commands
DIAGRAM = re.compile(r"[─│┌┐└┘├┤┬┴┼►▶→]")  # box drawing: a diagram naming a program, not a command


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str  # the command as written
    program: str
    path: tuple[str, ...]  # sub-commands, e.g. ("export", "web")
    flags: frozenset[str]
    problem: str = ""  # an unknown sub-command or flag
    launcher: str = ""  # mpirun / mpiexec when the program is started by one


def parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from odin.cli import build_parser as odin_parser
    from odin.infer_cli import build_parser as infer_parser
    from odin.pipeline.cli import _parser as pipeline_parser
    from odin_dashboard.main import build_parser as dashboard_parser

    return {"odin": odin_parser, "odin-infer": infer_parser, "odin-pipeline": pipeline_parser,
            "odin-dashboard": dashboard_parser}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-commands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _flag_tokens(token: str) -> list[str]:
    """'[--seed' -> ['--seed']; '-s/--seed' -> ['-s', '--seed']; '--out=DIR' -> ['--out']."""
    token = token.strip("[](){}\"',")
    if not token.startswith("-") or token == "-" or re.match(r"-\d", token):
        return []
    parts = re.split(r"[/|]", token)
    if not all(p.startswith("-") for p in parts):
        parts = parts[:1]
    return [p.split("=", 1)[0].strip("[](){}\"',") for p in parts if p.strip("-")]


def parse(text: str, where: str, parser_of: dict[str, Callable[[], argparse.ArgumentParser]]) -> Command | None:
    text = text.replace("\\|", "|").strip()
    text = re.sub(r"^\$\s+", "", text)
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # unbalanced quotes in prose: whitespace is good enough for names and flags
        tokens = text.split(" #")[0].split()
    launcher = ""
    if tokens and tokens[0] in LAUNCHERS:  # its own options up to the program it starts
        starts = [i for i, token in enumerate(tokens) if token in PROGRAMS]
        if not starts:
            return None
        launcher, tokens = tokens[0], tokens[starts[0]:]
    if not tokens or tokens[0] not in PROGRAMS:
        return None
    program, rest = tokens[0], tokens[1:]
    parser = parser_of[program]()
    path: list[str] = []
    flags: set[str] = set()
    problem = ""
    for token in rest:
        names = _flag_tokens(token)
        if names:
            for name in names:
                if name not in _option_strings(parser) and not problem:
                    problem = f"{' '.join((program, *path))} has no option {name}"
            flags.update(names)
            continue
        subs = _subparsers(parser)
        if subs and not flags and token in subs:
            path.append(token)
            parser = subs[token]
        elif subs and not flags and token.strip("[]().…") and not problem:
            problem = f"{' '.join((program, *path))} has no sub-command {token!r}"
    return Command(where, text, program, tuple(path), frozenset(flags), problem, launcher)


def _split(fragment: str) -> Iterator[str]:
    for part in re.split(r"\s*(?:&&|;|\s\|\s)\s*", fragment):
        if part.strip():
            yield part.strip()


def documented_commands(files: list[Path], root: Path) -> list[Command]:
    parser_of = parsers()
    found: list[Command] = []
    for path in files:
        fence = None
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                fence = None if fence is not None else stripped[3:].strip().lower()
                continue
            if fence is not None:
                if fence not in SHELL_FENCES or DIAGRAM.search(line):
                    continue
                fragments = [stripped]
            else:  # inline code in tables and prose; a bare program name names it, it runs nothing
                fragments = [f for f in re.findall(r"`([^`]+)`", line) if f.strip() not in PROGRAMS]
            for fragment in fragments:
                for part in _split(fragment):
                    command = parse(part, f"{path.relative_to(root)}:{lineno}", parser_of)
                    if command is not None:
                        found.append(command)
    return found
