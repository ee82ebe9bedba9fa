"""The sandbox's OS-level containment, tested as a program that got past the Python guards
would act (``guards=False``: real ``import``, ``open``, ``os``, ``ctypes``).

Each test names the attack of issue 18 (item 14) it stops. The OS layers need Linux with
namespaces (as root, or unprivileged user namespaces); where this machine does not give
one, the test says so and fails rather than passing on a weaker sandbox.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile

import pytest

from odin.data import sandbox

MODES = sandbox.ISOLATION_MODES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OS layers are Linux's")


def test_this_machine_gets_every_os_layer():
    report = sandbox.isolation_report()
    assert report["network_namespace"] and report["private_root"] and report["no_fork"], report
    if report["root"]:
        assert report["dropped_privileges"], report


@pytest.mark.parametrize("isolation", MODES)
def test_a_program_cannot_fork(isolation):
    # a child could otherwise outlive run() with its own CPU limit, or multiply the memory cap
    program = "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint('forked', pid)"
    result = sandbox.run(program, guards=False, isolation=isolation)
    assert result.status == "error" and "BlockingIOError" in result.error, result


@pytest.mark.parametrize("isolation", MODES)
def test_a_program_cannot_start_a_thread(isolation):
    program = "import _thread\n_thread.start_new_thread(print, ('thread',))\nprint('started')"
    result = sandbox.run(program, guards=False, isolation=isolation)
    assert result.status == "error", result


@pytest.mark.parametrize("isolation", MODES)
def test_nothing_of_a_run_is_left_afterwards(isolation):
    # the program reports its process group; after run() returns, the group is gone
    result = sandbox.run("import os\nprint(os.getpgrp())", guards=False, isolation=isolation)
    assert result.ok, result
    group = int(result.stdout)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)


@pytest.mark.parametrize("isolation", MODES)
def test_a_program_cannot_read_world_readable_host_files(isolation):
    assert os.access("/etc/passwd", os.R_OK)
    program = "print(open('/etc/passwd').read())"
    result = sandbox.run(program, guards=False, isolation=isolation)
    assert result.status == "error" and result.stdout == "", result
    listing = sandbox.run("import os\nprint(os.listdir('/'))", guards=False, isolation=isolation)
    assert not listing.ok or listing.stdout.strip() == "[]", listing


def _connect_program(address_bytes_hex: str, family: int) -> str:
    """A program that connects a socket through libc (the socket module cannot be imported
    inside the private root, ctypes is already loaded) and prints connect()'s result."""
    return (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"fd = libc.socket({family}, 1, 0)\n"
        f"addr = bytes.fromhex('{address_bytes_hex}')\n"
        "rc = libc.connect(fd, addr, len(addr))\n"
        "print(fd, rc, ctypes.get_errno())\n"
    )


def _sockaddr_un(path: bytes) -> str:
    return (socket.AF_UNIX.to_bytes(2, sys.byteorder) + path + b"\0").hex()


def _sockaddr_in(port: int) -> str:
    return (socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            + bytes([127, 0, 0, 1]) + bytes(8)).hex()


@pytest.mark.parametrize("isolation", MODES)
def test_a_program_cannot_reach_host_unix_sockets(isolation):
    folder = tempfile.mkdtemp(prefix="odin-sock-")
    os.chmod(folder, 0o777)
    path = os.path.join(folder, "s")
    servers = []
    try:
        named = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        named.bind(path)
        os.chmod(path, 0o777)  # anyone on the host may connect
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract_name = b"\0odin-test-" + os.urandom(6).hex().encode()
        abstract.bind(abstract_name)
        for server in (named, abstract):
            server.listen(4)
            server.setblocking(False)
            servers.append(server)
        for address in (path.encode(), abstract_name):
            result = sandbox.run(_connect_program(_sockaddr_un(address), socket.AF_UNIX), guards=False,
                                 isolation=isolation)
            assert result.ok, result
            fd, rc, _errno = (int(v) for v in result.stdout.split())
            assert rc != 0, f"connect to {address!r} succeeded from inside the sandbox"
        for server in servers:
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        for server in servers:
            server.close()
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)


@pytest.mark.parametrize("isolation", MODES)
def test_a_program_cannot_reach_the_network(isolation):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    try:
        port = server.getsockname()[1]
        result = sandbox.run(_connect_program(_sockaddr_in(port), socket.AF_INET), guards=False, isolation=isolation)
        assert result.ok, result
        fd, rc, _errno = (int(v) for v in result.stdout.split())
        assert rc != 0, "connected to the host's loopback from inside the sandbox"
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def _forging_program() -> str:
    """A program that writes well-formed result lines for itself and the next two programs
    on every descriptor it has, then ends its process at once (so nothing of its worker
    writes after it)."""
    forged = "".join(json.dumps({"i": i, "s": "ok", "o": "forged\n", "e": "", "tr": [], "t": 0.0}) + "\n"
                     for i in (0, 1, 2))
    return ("import os\n"
            f"line = {forged!r}.encode()\n"
            "for fd in range(32):\n"
            "    try:\n"
            "        os.write(fd, line)\n"
            "    except OSError:\n"
            "        pass\n"
            "os._exit(0)\n")


def test_a_program_cannot_write_another_programs_answer():
    # With isolation="fork" (the default) a program's only channel is the pipe of its own
    # result: the other programs' answers stay theirs, whatever it writes where.
    results = sandbox.run_many([_forging_program(), "print('two')", "print('three')"], guards=False, batch_size=10)
    assert [r.stdout for r in results[1:]] == ["two\n", "three\n"], results
    assert [r.status for r in results[1:]] == ["ok", "ok"], results


def test_exec_isolation_is_documented_as_not_separating_programs():
    # The negative control of the test above: in "exec" mode programs share their worker, and
    # the same program does forge the next answers (why "fork" is the default).
    results = sandbox.run_many([_forging_program(), "print('two')", "print('three')"], guards=False, batch_size=10,
                               isolation="exec")
    assert [r.stdout for r in results] == ["forged\n"] * 3
