"""Run short generated Python programs in a subprocess sandbox and capture what they print.

The code-task generator (:mod:`odin.data.code`) computes every answer by *running* the
program it generated. This module does that safely and fast.

Threat model
------------
The programs are ours: they come from a small grammar in :mod:`odin.data.code`, not from
users or the network. Still, every program is contained as if it were hostile: the
Python-level guards (layer 4) are known to be escapable (e.g. through
``object.__subclasses__()``), so the guarantees below come from the operating system and
hold whatever the program does. Tests check each one with the Python guards turned off
(``guards=False``), i.e. as a program that got past them.

What a program cannot do (Linux; ``isolation_report()`` says what this machine achieved):

* outlive the run: the worker has its own session and its whole process group is killed
  when a batch ends (also when the worker exited by itself); a forked child dies with its
  worker (``PR_SET_PDEATHSIG``) and is killed as soon as its result is read;
* start a process or a thread: ``RLIMIT_NPROC`` 0 wherever programs run (as root this needs
  the drop to ``nobody``, since root ignores the limit), so neither the memory cap nor the
  CPU limit can be multiplied by forking;
* read or write the host's files or reach its Unix sockets: the worker's root is its own
  empty private directory (``chroot`` in a new mount namespace; as root directly, otherwise
  inside a new user namespace), ``RLIMIT_FSIZE`` 0;
* reach a network: a new, empty network namespace (abstract Unix sockets included);
* write another program's answer (``isolation="fork"``, the default): each program runs in
  a child of its own whose standard streams are ``/dev/null`` and whose only channel is the
  pipe of its own result; the worker is not ptrace-able by it (``PR_SET_DUMPABLE`` 0).
  With ``isolation="exec"`` (25x faster, for trusted code) programs share the worker
  process, so a program that escaped the guards could change the results of the later
  programs of its batch.

What is *not* guaranteed: on a kernel that refuses user namespaces (non-root), the private
root and the network namespace are missing (reported, not faked); a program can always
print a wrong answer for itself, and can kill its own worker, which costs only that
program (recorded as ``killed``); CPU time of one program is bounded by the timeout, not
shared fairly with other processes of the machine.

Layers (outermost first)
------------------------
1. **Worker process** ``python -X utf8 -I -S -c <worker>``: isolated mode (environment
   variables and user site ignored, no ``site``), an empty environment, a fresh empty
   private working directory, its own session (the whole group is killed at the end).
2. **OS isolation set by the worker before it reads any program**: on Linux the new
   network and mount namespaces, ``chroot`` into the private directory, as root a drop to
   uid/gid 65534 (nobody), not dumpable; then ``RLIMIT_AS`` (address space, default
   256 MiB: unbounded allocation fails with ``MemoryError``), ``RLIMIT_FSIZE = 0`` (no byte
   can be written to a regular file), ``RLIMIT_CORE = 0``, ``RLIMIT_NOFILE = 32``,
   ``RLIMIT_NPROC = 0`` (in the worker with ``exec``, in each child with ``fork``) and
   ``RLIMIT_CPU`` per program (``ceil(cpu used so far + timeout) + 1`` s, so a computation
   stuck in C code that never checks for signals, like ``sum(range(10**12))``, is still
   killed).
3. **Per-program timeout**: a wall-clock timer (``ITIMER_REAL``) interrupts the program at
   ``timeout``; the CPU limit above and the deadlines (a forked child without a result
   after ``timeout + 1`` s is killed; a worker that reports nothing for ``timeout + 5`` s is
   killed with its group) are the backstops. When a worker dies, the program it was
   running is recorded as failed and a fresh worker continues with the next one.
4. **Python guards** (``guards=True``, the default): the program's builtins lack ``open``,
   ``exec``, ``eval``, ``compile``, ``input``, ``breakpoint``, ``globals``, ``vars`` … and
   ``__import__`` raises ``ImportError`` (so ``import socket`` / ``os`` / ``subprocess``
   fail); while a program runs, an audit hook (:pep:`578`, cannot be removed) refuses
   imports, ``open``, sockets, process creation, ``ctypes`` and file-system changes.

Every program gets a :class:`RunResult` whose ``status`` is ``ok`` (finished normally; its
stdout is exact), ``error`` (an exception; ``error`` holds ``"Type: message"``),
``timeout``, ``memory`` (``MemoryError``), ``output_limit`` (more than ``max_output``
bytes printed), ``killed`` (by a signal, e.g. a crash) or
``sandbox_error`` (the worker could not run it). Only ``ok`` results may be used as
answers.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["ISOLATION_MODES", "RunResult", "STATUSES", "isolation_report", "run", "run_many"]

STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error")
ISOLATION_MODES: tuple[str, ...] = ("fork", "exec")  # the first is the default
DEFAULT_TIMEOUT = 2.0
DEFAULT_MEMORY_MB = 256
DEFAULT_MAX_OUTPUT = 4096
DEFAULT_BATCH_SIZE = 500
_STALL_SLACK = 5.0  # seconds beyond the timeout before the parent gives up on a silent worker


@dataclass(frozen=True)
class RunResult:
    status: str  # one of STATUSES
    stdout: str = ""  # exactly what the program printed (only for status "ok")
    error: str = ""  # "Type: message" for error/memory; a reason otherwise
    seconds: float = 0.0
    # with trace=True: the execution trace, one step per executed top-level assignment
    # ("d=-96+(0*5)=-96") or other change of a top-level int/str variable ("i=1"), in order;
    # only for status "ok"
    trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The worker runs as `python -X utf8 -I -S -c WORKER_SOURCE <json-config>` and reads a JSON
# list of programs on stdin. It writes one JSON line first (what isolation it achieved),
# then one line per program, in order. Everything it needs is imported before it drops
# privileges (the interpreter's files may not be readable by nobody).
WORKER_SOURCE = r'''
import sys, os, io, json, resource, signal, select, time, builtins, re, tokenize
cfg = json.loads(sys.argv[1])
fork_mode = cfg["isolation"] == "fork"
report = {"network_namespace": False, "private_root": False, "dropped_privileges": False, "no_fork": False}
libc = None
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4

def _isolate():
    global libc
    if not sys.platform.startswith("linux"):
        return
    root = os.geteuid() == 0
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
        # a new mount namespace too, so that the chroot below is allowed without root
        # (inside a user namespace) and changes nothing outside this process
        flags = CLONE_NEWNET | CLONE_NEWNS if root else CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS
        if libc.unshare(flags) == 0:
            report["network_namespace"] = True
        elif root:
            report["network_namespace"] = libc.unshare(CLONE_NEWNET) == 0
    except Exception:
        pass
    # The working directory is a fresh empty folder of our own: make it the root, so that no
    # file of the host (world-readable ones, Unix sockets) can even be named. Everything the
    # worker needs is imported above.
    try:
        os.chroot(".")
        os.chdir("/")
        report["private_root"] = True
    except OSError:
        pass
    if root:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            report["dropped_privileges"] = os.geteuid() != 0
        except Exception:
            pass
    if libc is not None:
        # not ptrace-able (nor its /proc/PID/mem) by a program running as the same user
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)

def _forbid_processes():
    """No new process or thread from here on (RLIMIT_NPROC 0 counts every task of the user,
    so any fork or clone fails); returns True when a fork is really refused."""
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    try:
        pid = os.fork()
    except OSError:
        return True
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return False

devnull = os.open(os.devnull, os.O_RDWR)  # before the chroot hides /dev
_isolate()
mem = int(cfg["memory_bytes"])
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
if not fork_mode:
    report["no_fork"] = _forbid_processes()
else:  # each child forbids itself (below); the worker still forks them. Check that it holds:
    probe = os.fork()
    if probe == 0:
        os._exit(0 if _forbid_processes() else 1)
    report["no_fork"] = os.waitpid(probe, 0)[1] == 0
programs = json.loads(sys.stdin.buffer.read().decode("utf-8"))
timeout = float(cfg["timeout"])
max_output = int(cfg["max_output"])
guards = bool(cfg["guards"])
tracing = bool(cfg["trace"])
out = sys.stdout
out.write(json.dumps({"report": report}) + "\n")
out.flush()

BLOCKED_BUILTINS = ("open", "exec", "eval", "compile", "input", "breakpoint", "help", "exit", "quit",
                    "globals", "locals", "vars", "memoryview", "__loader__", "__spec__")
BLOCKED_EVENTS = ("import", "open", "socket.", "subprocess.", "os.", "shutil.", "ctypes.", "_posixsubprocess",
                  "pty.", "fcntl.", "mmap.", "sys.", "code.", "compile", "builtins.input", "webbrowser",
                  "urllib", "http", "ftplib", "smtplib", "glob.", "tempfile.", "marshal.", "pickle.", "signal.",
                  "resource.", "syslog.", "sqlite3.", "_thread.", "winreg.", "msvcrt.")
state = {"active": False}

def _hook(event, args):
    # a tracer that raises is removed by the interpreter, which audits as sys.settrace
    if state["active"] and event.startswith(BLOCKED_EVENTS) and not (tracing and event == "sys.settrace"):
        raise RuntimeError("sandbox: %s is not allowed" % event)

if guards:
    sys.addaudithook(_hook)

def _deny_import(*args, **kwargs):
    raise ImportError("imports are disabled in the sandbox")

class Timeout(BaseException):
    pass

class OutputLimit(BaseException):
    pass

class Capture(io.TextIOBase):
    def __init__(self):
        self.parts = []
        self.size = 0
        self.over = False
    def writable(self):
        return True
    def write(self, text):
        text = str(text)
        self.size += len(text.encode("utf-8", "replace"))
        if self.size > max_output:
            self.over = True
            raise OutputLimit()
        self.parts.append(text)
        return len(text)

def _on_alarm(signum, frame):
    raise Timeout()

signal.signal(signal.SIGALRM, _on_alarm)

ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)(\+=|-=|\*=|//=|%=|=)(?!=)(.*)$")
PRINT = re.compile(r"^print\((.*)\)$")
RETURN = re.compile(r"^\s+return\s+(.*)$")
CALL = re.compile(r"^[A-Za-z_]\w*\(")

def _one_call(expr):
    """True when expr is a single call, name(...), and nothing around it."""
    if not CALL.match(expr) or not expr.endswith(")"):
        return False
    depth = 0
    for at, char in enumerate(expr):
        depth += (char == "(") - (char == ")")
        if depth == 0 and char == ")":
            return at == len(expr) - 1
    return False

def _with_values(expr, env, strings=False):
    """expr with every int variable (and with strings=True every str variable, as a literal)
    replaced by its current value (names only, never inside a string literal or after a dot)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError):
        return expr
    out, at, prev = [], 0, None
    for tok in tokens:
        kind = type(env.get(tok.string)) if tok.type == tokenize.NAME else None
        if (kind is int or (strings and kind is str)) and prev != ".":
            out.append(expr[at:tok.start[1]])
            out.append(str(env[tok.string]) if kind is int else repr(env[tok.string]))
            at = tok.end[1]
        if tok.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            prev = tok.string
    out.append(expr[at:])
    return "".join(out)

def _tracer(env, steps, source):
    """A sys.settrace function writing the program's execution trace into steps: one step
    per executed top-level assignment, "name=<right side with the int variables' values
    substituted>=<new value>" ("d=-96+(0*5)=-96"; just "name=value" when the right side is
    the value), and "name=value" for any other change of a top-level int/str variable (a
    loop variable); a top-level print adds "print(<arguments with the values written in>)"
    before it runs. An assignment whose right side is one call of a program function also
    writes the expression that function returned, with its arguments' values written in
    ("c=f(200)=200-9=191"), so the function's body is worked out in the trace, not guessed.
    The module frame is checked before every line and when it returns."""
    lines = source.split("\n")
    last = {}
    size = [0]
    pending = [None]  # (name, right side with values) of the assignment that is running
    returned = []  # the return expressions, values written in, of calls made by that line

    def emit(text):
        size[0] += len(text) + 1
        if size[0] > max_output:  # a runaway loop must not fill memory with its trace
            raise OutputLimit()
        steps.append(text)

    def flush():
        changed = []
        for name, value in env.items():
            if type(value) not in (int, str) or name.startswith("__"):
                continue
            old = last.get(name, flush)
            if old is flush or type(old) is not type(value) or old != value:
                last[name] = value
                changed.append(name)
        if pending[0] is not None:
            name, shown = pending[0]
            pending[0] = None
            value = env.get(name)
            if type(value) in (int, str):
                last[name] = value
                if name in changed:
                    changed.remove(name)
                text = str(value)
                if len(returned) == 1 and returned[0] != text and _one_call(shown):
                    shown += "=" + returned[0]
                emit("%s=%s" % (name, text) if shown == text else "%s=%s=%s" % (name, shown, text))
        for name in changed:
            emit("%s=%s" % (name, env[name]))

    def local(frame, event, arg):
        if event in ("line", "return"):
            flush()
        if event == "line" and 0 < frame.f_lineno <= len(lines):
            match = ASSIGNMENT.match(lines[frame.f_lineno - 1])
            if match:
                name, op, right = match.groups()
                shown = _with_values(right, env)
                del returned[:]
                if op != "=":
                    if any(c in shown[1:] for c in "+-*/%"):
                        shown = "(" + shown + ")"
                    target = env.get(name)
                    shown = (str(target) if type(target) is int else name) + op[:-1] + shown
                pending[0] = (name, shown)
            else:
                match = PRINT.match(lines[frame.f_lineno - 1])
                if match:
                    emit("print(%s)" % _with_values(match.group(1), env))
        return local

    def called(frame, event, arg):
        if event == "line" and 0 < frame.f_lineno <= len(lines):
            match = RETURN.match(lines[frame.f_lineno - 1])
            if match:
                returned.append(_with_values(match.group(1), frame.f_locals, strings=True))
        return called

    def start(frame, event, arg):
        code = frame.f_code
        if code.co_filename != "<program>":
            return None
        if code.co_name == "<module>":
            return local
        # only functions called from a top-level line: their return is written into its step
        caller = frame.f_back
        return called if caller is not None and caller.f_code.co_name == "<module>" else None
    return start

def _describe(exc):
    try:
        return ("%s: %s" % (type(exc).__name__, exc))[:300]
    except BaseException:
        return type(exc).__name__

def _exec(code):
    """Run one program here; return (status, stdout, error, trace)."""
    env = {"__name__": "__main__"}
    if guards:
        safe = dict(vars(builtins))
        for name in BLOCKED_BUILTINS:
            safe.pop(name, None)
        safe["__import__"] = _deny_import
        env["__builtins__"] = safe
    capture = Capture()
    steps = []
    status, error = "ok", ""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(-(-(used.ru_utime + used.ru_stime + timeout) // 1)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
    saved_out, saved_err = sys.stdout, sys.stderr
    try:
        compiled = compile(code, "<program>", "exec")
        sys.stdout = capture
        sys.stderr = Capture()
        if tracing:  # before the audit hook turns on: it refuses sys.* events
            sys.settrace(_tracer(env, steps, code))
        state["active"] = True
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            exec(compiled, env)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            state["active"] = False
            sys.settrace(None)
    except Timeout:
        status, error = "timeout", "no result within %gs" % timeout
    except OutputLimit:
        status, error = "output_limit", "a trace of more than %d bytes" % max_output
    except MemoryError:
        status, error = "memory", "MemoryError"
    except BaseException as exc:
        status, error = "error", _describe(exc)
    finally:
        state["active"] = False
        sys.stdout, sys.stderr = saved_out, saved_err
    if capture.over:
        status, error = "output_limit", "more than %d bytes of output" % max_output
    text = "".join(capture.parts) if status == "ok" else ""
    env.clear()
    return status, text, error, (steps if status == "ok" else [])

_unreaped = []

def _reap(block):
    """Collect the exit of killed children (all of them with block=True)."""
    while _unreaped:
        pid, _ = os.waitpid(_unreaped[0], 0 if block else os.WNOHANG)
        if pid == 0:
            return
        _unreaped.pop(0)

def _fork(code):
    """Run one program in a forked child; return (status, stdout, error, trace).

    The child holds nothing of the worker's: its standard streams are /dev/null and its only
    way out is the pipe of its own result, so a program, whatever it does, can write no
    answer but its own. It cannot fork (RLIMIT_NPROC 0), dies with the worker
    (PR_SET_PDEATHSIG) and is killed as soon as its result is read."""
    r, w = os.pipe()
    out.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            if libc is not None:
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
            os.write(w, (json.dumps(list(_exec(code))) + "\n").encode("utf-8"))
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout + 1.0
    chunks = []
    timed_out = False
    while not (chunks and chunks[-1].endswith(b"\n")):
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if not select.select([r], [], [], left)[0]:
            continue
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        os.kill(pid, signal.SIGKILL)  # done or overdue: nothing of it may go on
    except ProcessLookupError:
        pass
    os.close(r)
    if timed_out:
        _unreaped.append(pid)
        return "timeout", "", "no result within %gs" % timeout, []
    try:
        status, text, error, steps = json.loads(b"".join(chunks).decode("utf-8"))
        # reaped later: waiting for its exit here would cost a scheduling round trip per program
        _unreaped.append(pid)
        return status, text, error, steps
    except ValueError:
        pass
    _, wstatus = os.waitpid(pid, 0)  # how it ended tells what to record
    if chunks:
        return "sandbox_error", "", "the program's result was garbled", []
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        if sig == signal.SIGXCPU:
            return "timeout", "", "CPU time limit (SIGXCPU)", []
        return "killed", "", "killed by %s" % signal.Signals(sig).name, []
    return "sandbox_error", "", "child exited with status %d and no result" % os.WEXITSTATUS(wstatus), []

for index, code in enumerate(programs):
    started = time.monotonic()
    status, text, error, steps = (_fork if fork_mode else _exec)(code)
    _reap(block=len(_unreaped) > 64)
    out.write(json.dumps({"i": index, "s": status, "o": text, "e": error, "tr": steps,
                          "t": round(time.monotonic() - started, 6)}) + "\n")
    out.flush()
_reap(block=True)
'''


def _config_json(timeout: float, memory_mb: int, max_output: int, guards: bool, isolation: str,
                 trace: bool = False) -> str:
    return json.dumps({"timeout": float(timeout), "memory_bytes": int(memory_mb) * 1024 * 1024,
                       "max_output": int(max_output), "guards": bool(guards), "isolation": isolation,
                       "trace": bool(trace)})


def _validate(timeout: float, memory_mb: int, max_output: int, jobs: int, batch_size: int, isolation: str) -> None:
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= 600):
        raise ValueError(f"timeout must be a number of seconds in (0, 600], got {timeout!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not 64 <= memory_mb <= 1 << 20:
        raise ValueError(f"memory_mb must be an integer >= 64, got {memory_mb!r}")
    for name, value in (("max_output", max_output), ("jobs", jobs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {list(ISOLATION_MODES)}, got {isolation!r}")


def _death_result(returncode: int | None, stderr: bytes, timed_out: bool, timeout: float) -> RunResult:
    """What to record for the program a worker was running when it died."""
    if timed_out:
        return RunResult("timeout", "", f"no result within {timeout:g}s (worker killed)")
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        if sig == signal.SIGXCPU:
            return RunResult("timeout", "", f"CPU time limit ({name})")
        return RunResult("killed", "", f"killed by {name}")
    tail = stderr.decode("utf-8", "replace").strip().splitlines()
    if tail and "MemoryError" in tail[-1]:
        return RunResult("memory", "", "MemoryError")
    return RunResult("sandbox_error", "", f"worker exited with status {returncode}" + (f": {tail[-1]}" if tail else ""))


class _Worker:
    """One worker process running programs[start:end]; results arrive as JSON lines."""

    def __init__(self, programs: Sequence[str], start: int, end: int, config: str, timeout: float) -> None:
        self.start, self.end, self.timeout = start, end, timeout
        self.next = start  # index of the next result expected
        self.workdir = tempfile.mkdtemp(prefix="odin-sandbox-")
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "utf8", "-I", "-S", "-c", WORKER_SOURCE, config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={}, cwd=self.workdir, close_fds=True, start_new_session=True,
        )
        payload = json.dumps(list(programs[start:end])).encode("utf-8")
        try:  # the worker reads all of stdin before writing anything: no deadlock
            self.proc.stdin.write(payload)  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        self.buffer = b""
        self.stderr = b""
        self.report: dict | None = None
        self.streams = [self.proc.stdout, self.proc.stderr]
        self.corrupt = False
        self.deadline = time.monotonic() + timeout + _STALL_SLACK + 5.0  # start-up gets a little more

    def feed(self, stream, results: list) -> int:
        """Read what ``stream`` has; store finished results; return how many arrived."""
        chunk = os.read(stream.fileno(), 1 << 16)
        if not chunk:
            self.streams.remove(stream)
            return 0
        if stream is self.proc.stderr:
            self.stderr = (self.stderr + chunk)[-4000:]
            return 0
        lines = (self.buffer + chunk).split(b"\n")
        self.buffer = lines.pop()
        new = 0
        for line in lines:
            try:
                record = json.loads(line)
                if "report" in record:
                    self.report = record["report"]
                    continue
                index = self.start + int(record["i"])
                result = RunResult(str(record["s"]), str(record["o"]), str(record["e"]), float(record["t"]),
                                   tuple(str(step) for step in record["tr"]))
                if index != self.next or result.status not in STATUSES:
                    raise ValueError("out of order")
            except (ValueError, KeyError, TypeError):
                # Something else wrote to the worker's stdout: stop trusting this worker.
                self.corrupt = True
                return new
            results[index] = result
            self.next = index + 1
            new += 1
        if new:
            self.deadline = time.monotonic() + self.timeout + _STALL_SLACK
        return new

    def close(self) -> None:
        # The worker's whole process group goes, even when the worker itself has already
        # exited: nothing a program started may outlive the run.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_many(
    programs: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_output: int = DEFAULT_MAX_OUTPUT,
    jobs: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    isolation: str = "fork",
    guards: bool = True,
    trace: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """Run every program in the sandbox; one :class:`RunResult` per program, in input order.

    ``jobs`` workers run at once, each on up to ``batch_size`` programs; ``on_progress(k)``
    is called with the number of programs finished so far. ``guards=False`` turns off only
    the Python-level guards (layer 4), to check that the OS layers hold on their own.
    ``trace=True`` also records each result's :attr:`RunResult.trace` (its size counts
    against ``max_output``, so a runaway loop ends as ``output_limit``).
    """
    _validate(timeout, memory_mb, max_output, jobs, batch_size, isolation)
    programs = list(programs)
    for index, program in enumerate(programs):
        if not isinstance(program, str):
            raise ValueError(f"program {index} must be a string, got {type(program).__name__}")
    config = _config_json(timeout, memory_mb, max_output, guards, isolation, trace)
    results: list[RunResult | None] = [None] * len(programs)
    pending = [(start, min(start + batch_size, len(programs))) for start in range(0, len(programs), batch_size)]
    pending.reverse()
    running: list[_Worker] = []
    finished = 0
    try:
        while pending or running:
            while pending and len(running) < jobs:
                start, end = pending.pop()
                running.append(_Worker(programs, start, end, config, timeout))
            owner = {stream: worker for worker in running for stream in worker.streams}
            wait = max(0.0, min(worker.deadline for worker in running) - time.monotonic())
            ready = select.select(list(owner), [], [], min(wait, 1.0))[0] if owner else []
            progressed = 0
            for stream in ready:
                progressed += owner[stream].feed(stream, results)
            for worker in list(running):
                stalled = bool(worker.streams) and time.monotonic() > worker.deadline
                if worker.streams and not stalled and not worker.corrupt:
                    continue
                worker.close()
                running.remove(worker)
                if worker.next < worker.end:  # it died (or stalled) on program worker.next
                    results[worker.next] = (
                        RunResult("sandbox_error", "", "the worker's output was garbled") if worker.corrupt
                        else _death_result(worker.proc.returncode, worker.stderr, stalled, timeout))
                    progressed += 1
                    if worker.next + 1 < worker.end:
                        pending.append((worker.next + 1, worker.end))
            if progressed:
                finished += progressed
                if on_progress is not None:
                    on_progress(finished)
    finally:
        for worker in running:
            worker.close()
    return results  # type: ignore[return-value]


def run(code: str, *, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
        max_output: int = DEFAULT_MAX_OUTPUT, isolation: str = "fork", guards: bool = True,
        trace: bool = False) -> RunResult:
    """Run one program in the sandbox (in a worker of its own); see :func:`run_many`."""
    return run_many([code], timeout=timeout, memory_mb=memory_mb, max_output=max_output,
                    isolation=isolation, guards=guards, trace=trace)[0]


_REPORT: dict | None = None


def isolation_report() -> dict:
    """Which OS layers a worker achieves on this machine: ``network_namespace``,
    ``private_root`` (the chroot), ``dropped_privileges`` (root only) and ``no_fork`` (a fork
    is really refused), plus ``platform`` and ``root``. Cached."""
    global _REPORT
    if _REPORT is None:
        config = _config_json(DEFAULT_TIMEOUT, DEFAULT_MEMORY_MB, 16, True, "exec")
        worker = _Worker([], 0, 0, config, DEFAULT_TIMEOUT)
        sink: list = []
        try:
            while worker.streams and time.monotonic() < worker.deadline:
                for stream in select.select(worker.streams, [], [], 1.0)[0]:
                    worker.feed(stream, sink)
        finally:
            worker.close()
        _REPORT = dict(worker.report or {"network_namespace": False, "private_root": False,
                                         "dropped_privileges": False, "no_fork": False})
        _REPORT["platform"] = sys.platform
        _REPORT["root"] = hasattr(os, "geteuid") and os.geteuid() == 0
    return dict(_REPORT)
