"""odin-infer's interactive loop on a real terminal (a pseudo-terminal): line editing and
recall with readline, a history kept between sessions under XDG_STATE_HOME, and a history
that cannot be written costing nothing but a note."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time

import pytest

from odin.checkpoint import model_from_config, save_model_checkpoint
from odin.config import ModelConfig, RunConfig, TrainConfig
from odin.tokenizers import CharTokenizer

pytest.importorskip("readline", reason="this Python has no readline module")

WAIT_S = 60  # generous: how long to wait for expected output before failing, not a speed check


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = RunConfig(model=ModelConfig(n_layer=1, d_model=16, n_head=2, context=32), train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    path = tmp_path_factory.mktemp("repl") / "ckpt"
    save_model_checkpoint(path, model, CharTokenizer(), config, step=0, trainer_state={})
    return path


class Terminal:
    """odin-infer with a pseudo-terminal as its controlling terminal (stdin, stdout, stderr)."""

    def __init__(self, args: list[str], state_home: str) -> None:
        env = {**os.environ, "XDG_STATE_HOME": state_home, "TERM": "xterm", "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "odin.infer_cli", *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once (conftest.py gives it a default SIGINT)
            os.execve(sys.executable, argv, env)
        self.seen = b""

    def expect(self, text: bytes) -> bytes:
        """Read until ``text`` has appeared after what earlier calls consumed; return what came before it."""
        deadline = time.monotonic() + WAIT_S
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"odin-infer ended before {text!r}: {self.seen!r}"
                self.seen += chunk
        before, _, self.seen = self.seen.partition(text)
        return before

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, interrupt_every: float = 0.0) -> int:
        """The exit status; with ``interrupt_every``, Ctrl-C is typed again at that interval
        until the program ends (see interrupt_at_the_prompt)."""
        deadline = time.monotonic() + WAIT_S
        next_interrupt = time.monotonic() + interrupt_every
        while time.monotonic() < deadline:
            if interrupt_every and time.monotonic() >= next_interrupt:
                self.type(b"\x03")
                next_interrupt = time.monotonic() + interrupt_every
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"odin-infer did not end: {self.seen!r}")


def interrupt_at_the_prompt(term: Terminal) -> int:
    """Ctrl-C at the prompt, as a user does it: again if the first one did nothing. CPython's
    readline loop can miss a SIGINT that lands after the prompt is drawn and before it waits
    for a key (it sees the signal only when select() is interrupted); the next one ends it."""
    term.type(b"\x03")
    return term.wait(interrupt_every=5.0)


def _answer(term: Terminal) -> dict:
    """The JSON answer printed before the next prompt."""
    text = term.expect(b"\n> ").decode()
    line = next(line for line in text.splitlines() if line.startswith("{"))
    return json.loads(line)


def test_line_editing_and_history_across_sessions(checkpoint, tmp_path):
    history = tmp_path / "state" / "odin" / "infer_history"
    history.parent.mkdir(parents=True)
    history.write_text("3+4=\n")  # an earlier session's line
    term = Terminal(["-m", str(checkpoint), "--json", "-n", "2"], str(tmp_path / "state"))
    term.expect(b"> ")
    term.type(b"1+2=\r")
    assert _answer(term)["prompt"] == "1+2="
    term.type(b"\x1b[A\x1b[A\r")  # up twice: past this session's line to the earlier session's
    assert _answer(term)["prompt"] == "3+4="
    term.type(b"+5=\x01" + b"4\r")  # Ctrl-A: to the start of the line, then insert
    assert _answer(term)["prompt"] == "4+5="
    term.type(b"exit\r")
    assert term.wait() == 0
    assert history.read_text().splitlines() == ["3+4=", "1+2=", "3+4=", "4+5=", "exit"]
    assert oct(history.stat().st_mode & 0o777) == "0o600"  # prompts may be private


def test_ctrl_c_at_the_prompt_ends_the_loop_and_keeps_the_history(checkpoint, tmp_path):
    term = Terminal(["-m", str(checkpoint), "--json", "-n", "1"], str(tmp_path))
    term.expect(b"> ")
    term.type(b"7+7=\r")
    assert _answer(term)["prompt"] == "7+7="
    assert interrupt_at_the_prompt(term) == 130
    assert (tmp_path / "odin" / "infer_history").read_text().splitlines() == ["7+7="]


def test_a_history_that_cannot_be_written_is_only_a_note(checkpoint, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # XDG_STATE_HOME is a file: the odin/ folder cannot be made in it
    term = Terminal(["-m", str(checkpoint), "--json", "-n", "1"], str(blocker))
    term.expect(b"> ")
    term.type(b"1+1=\r")
    assert _answer(term)["prompt"] == "1+1="
    term.type(b"\x04")  # Ctrl-D: end of input
    assert term.wait() == 0
    rest = term.seen.decode()
    assert f"odin-infer: note: history not saved to {blocker}/odin/infer_history" in rest
    assert "Traceback" not in rest and "error" not in rest


def test_ctrl_c_during_an_answer_stops_only_that_answer(tmp_path):
    # an RWKV model (no context limit) that answers "7" forever: every weight 0 but the output
    # norm's bias (ones) and the tied embedding row of "7" (ones), so the only nonzero logit is
    # "7"'s, whatever came before; with -n -1 the answer never ends by itself
    config = RunConfig(model=ModelConfig(arch="rwkv", n_layer=1, d_model=16, n_head=1, context=16),
                       train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.params[...] = 0.0
    params = model.named_params()
    params["ln_out_b"][...] = 1.0
    (seven,) = CharTokenizer().encode("7")
    params["emb"][seven] = 1.0
    save_model_checkpoint(tmp_path / "endless", model, CharTokenizer(), config, step=0, trainer_state={})
    term = Terminal(["-m", str(tmp_path / "endless"), "-n", "-1"], str(tmp_path))
    term.expect(b"> ")
    term.type(b"1+1=\r")
    term.expect(b"1+1=\r\n")  # readline accepted the line
    term.expect(b"7777")  # the answer is streaming (a Ctrl-C before it is out could still be the prompt's)
    term.type(b"\x03")
    assert b"odin-infer: note: stopped" in term.expect(b"\n> ")
    term.type(b"exit\r")
    assert term.wait() == 0


def test_a_typed_line_that_is_not_utf8_is_that_lines_error(checkpoint, tmp_path):
    term = Terminal(["-m", str(checkpoint), "--json", "-n", "1"], str(tmp_path))
    term.expect(b"> ")
    term.type(b"1+\xff2=\r")
    assert b"odin-infer: error: line 1 is not UTF-8 text: byte 0xff at byte offset 2" in term.expect(b"\n> ")
    term.type(b"2+2=\r")
    assert _answer(term)["prompt"] == "2+2="
    term.type(b"exit\r")
    assert term.wait() == 0
