"""odin-pipeline against hostile input: links in the inbox, FIFOs, private files, redirects
to other schemes, endless redirects, a server that drips bytes, robots.txt wildcards, and
names that carry new lines or terminal escape codes.

Every test runs the real command (`python -m odin.pipeline.cli run --once`) in a
subprocess, on real files and links, against real HTTP servers on 127.0.0.1 run by
threads of the test."""
from __future__ import annotations

import http.server
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline_helpers import LocalWeb, config_text, db_count, db_rows, make_text, run_once, write_docs

SECRET = "Zorblax secret marker"  # in files outside the inbox: must never reach the pipeline's files


def files_under(root: Path) -> list[Path]:
    """Every non-folder entry under ``root``, links included, never following one."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [Path(folder) / name for name in files + [d for d in dirs if os.path.islink(Path(folder) / d)]]
    return found


def quarantined(folder: Path) -> dict[str, tuple[str, str]]:
    return {name: (code, error) for name, code, error in
            db_rows(folder, "SELECT name, reason, error FROM items WHERE status = 'quarantined'")}


def docs_into(inbox: Path, tmp: Path, count: int = 8) -> None:
    for path in write_docs(tmp / "docs", count):
        path.rename(inbox / path.name)


# ---------------------------------------------------------------------- the inbox
def test_links_and_special_files_are_never_followed_and_are_quarantined(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(), encoding="utf-8")
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "notes").mkdir(parents=True)
    secret = outside / "secret.txt"
    secret.write_text(f"{SECRET}. " + make_text(900), encoding="utf-8")
    secret.chmod(0o600)
    (outside / "notes" / "inner.md").write_text(f"{SECRET} inside. " + make_text(901), encoding="utf-8")
    before = {p: (p.read_bytes(), p.stat().st_mode) for p in files_under(outside)}
    docs_into(inbox, tmp_path)
    (inbox / "passwd.txt").symlink_to(secret)  # a link to a file outside
    (inbox / "notes-link").symlink_to(outside / "notes")  # a link to a folder outside
    (inbox / "loop").symlink_to("loop")  # a link to itself
    (inbox / "dangling.md").symlink_to(tmp_path / "nothing-here")
    (inbox / "sub" / "deep").mkdir(parents=True)
    (inbox / "sub" / "deep" / "link.md").symlink_to(secret)  # at depth
    os.mkfifo(inbox / "pipe.txt")  # opening it would block a reader for ever
    batch = tmp_path / "batch"  # a folder with a link in it, dropped in as a whole
    write_docs(batch, 2, start=50)
    (batch / "link.txt").symlink_to(secret)
    batch.rename(inbox / "batch")

    result = run_once(folder, config)
    assert result.returncode == 0, result.stderr

    links = {"passwd.txt", "notes-link", "loop", "dangling.md", "sub/deep/link.md", "batch/link.txt"}
    found = quarantined(folder)
    for name in links:
        assert found.get(name, ("", ""))[0] == "symlink", (name, found)
        assert found[name][1].startswith("symbolic link"), found[name]
    assert found.get("pipe.txt", ("", ""))[0] == "special-file", found
    # the regular files around them went through
    assert db_count(folder, "SELECT COUNT(*) FROM items WHERE stage = 'train' AND status = 'done'") == 10
    # nothing of the linked files reached raw/, clean/, the shards or quarantine/
    for path in files_under(folder):
        assert not path.is_symlink(), f"{path} is a link"
        if path.is_file() and path.name != "pipeline.db":
            assert SECRET.encode() not in path.read_bytes(), f"{path} holds bytes of a linked file"
    # each link is recorded (not copied) in quarantine/, and gone from the inbox (the link
    # itself: the files outside are untouched)
    records = [p for p in (folder / "quarantine").iterdir() if p.name.endswith(".link")]
    assert len(records) == len(links)
    assert any(str(secret) in p.read_text() for p in records)
    assert not [p for p in files_under(inbox)], files_under(inbox)
    assert {p: (p.read_bytes(), p.stat().st_mode) for p in files_under(outside)} == before


def test_quarantine_and_copies_never_widen_permissions(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(), encoding="utf-8")
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    docs_into(inbox, tmp_path)
    private = {  # name -> (bytes, mode); the first two end in quarantine, the third is trained
        "private-binary.txt": (b"\x89PNG\r\n\x1a\n" + bytes(300), 0o600),
        "private-latin1.txt": (("Caf\u00e9 " + make_text(3)).encode("latin-1"), 0o640),
        "private-notes.txt": (make_text(77).encode(), 0o600),
    }
    for name, (data, mode) in private.items():
        tmp = inbox / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.rename(inbox / name)

    result = run_once(folder, config)
    assert result.returncode == 0, result.stderr
    found = quarantined(folder)
    assert found["private-binary.txt"][0] == "binary" and found["private-latin1.txt"][0] == "invalid-utf8"
    copies: dict[str, list[Path]] = {name: [] for name in private}
    for path in files_under(folder / "quarantine") + files_under(folder / "raw") + files_under(folder / "clean"):
        for name, (data, _) in private.items():
            if path.read_bytes() == data or path.name.endswith(name):
                copies[name].append(path)
    (key,) = [k for k, in db_rows(folder, "SELECT hash FROM items WHERE name = 'private-notes.txt'")]
    copies["private-notes.txt"].append(folder / "clean" / f"{key}.txt")
    for name, paths in copies.items():
        assert paths, f"no copy of {name} found"
        for path in paths:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & ~private[name][1] == 0, f"{path.name}: {oct(mode)} is wider than {oct(private[name][1])}"


# ---------------------------------------------------------------------- the web
class _Recorder:
    """A TCP listener that only notes that someone connected (a stand-in FTP server)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, str] = {}  # path -> Location
    pages: dict[str, bytes] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append(self.path)
        if self.path in self.routes:
            self.send_response(302)
            self.send_header("Location", self.routes[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.pages.get(self.path.split("?")[0])
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_redirects_are_followed_only_to_http_and_only_so_far(tmp_path: Path) -> None:
    ftp = _Recorder()
    handler = type("Handler", (_RedirectHandler,), {"seen": [], "pages": {"/final": make_text(30).encode()}})
    server, base = _serve(handler)
    handler.routes = {"/to-ftp": f"ftp://127.0.0.1:{ftp.port}/notes.txt", "/to-file": "file:///etc/passwd",
                      "/hop1": "/hop2", "/hop2": "/hop3", "/hop3": "/hop4", "/hop4": "/final",
                      "/short1": "/short2", "/short2": "/final?via=short"}
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(crawl={"max_redirects": 2}), encoding="utf-8")
    (folder / "inbox").mkdir(parents=True)
    (folder / "inbox" / "web.urls").write_text(
        "\n".join(f"{base}{p}" for p in ("/to-ftp", "/to-file", "/hop1", "/short1")) + "\n", encoding="utf-8")
    try:
        result = run_once(folder, config)
    finally:
        server.shutdown()
        server.server_close()
        ftp.close()
    assert result.returncode == 0, result.stderr
    found = quarantined(folder)
    for path in ("/to-ftp", "/to-file"):
        code, error = found[f"{base}{path}"]
        assert code == "bad-url" and "not http(s)" in error, (path, code, error)
    assert ftp.connections == 0, "the redirect to ftp:// was followed"
    code, error = found[f"{base}/hop1"]
    assert code == "http-error" and "too many redirects" in error, (code, error)
    assert "/hop4" not in handler.seen  # stopped after 2 redirects, not at urllib's 10
    # a redirect within the limit is followed
    assert db_rows(folder, "SELECT stage FROM items WHERE name = ?", (f"{base}/short1",))[0][0] != "crawl"


class _DripHandler(http.server.BaseHTTPRequestHandler):
    """/drip answers one byte every 0.1 s for up to ``cap`` seconds, or until ``release``
    says so; whether the client hung up first is recorded."""
    cap = 60.0
    release: Any = staticmethod(lambda: False)
    outcomes: list[str] = []
    released_while_dripping: list[bool] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/drip":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = make_text(40).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        started = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - started < self.cap:
                if self.release():
                    self.released_while_dripping.append(True)
                    self.wfile.write(body[sent:])
                    self.outcomes.append("released")
                    return
                self.wfile.write(body[sent:sent + 1])
                sent += 1
                time.sleep(0.1)
            self.outcomes.append("cap")
        except (BrokenPipeError, ConnectionResetError):
            self.outcomes.append("client hung up")

    def log_message(self, *args: Any) -> None:
        pass


def test_a_dripping_server_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    handler = type("Drip", (_DripHandler,), {"outcomes": [], "released_while_dripping": []})
    server, base = _serve(handler)
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(crawl={"timeout_seconds": 1.0}), encoding="utf-8")
    (folder / "inbox").mkdir(parents=True)
    (folder / "inbox" / "web.urls").write_text(f"{base}/drip\n", encoding="utf-8")
    try:
        # a per-read timeout alone would wait for the server's 60 s, twice (two attempts)
        result = run_once(folder, config, timeout=100)
        assert result.returncode == 0, result.stderr
        code, error = quarantined(folder)[f"{base}/drip"]
        assert code == "timeout" and "timed out after 1 s" in error, (code, error)
        # both attempts were ended by the pipeline hanging up, not by the server giving up
        deadline = time.monotonic() + 10
        while len(handler.outcomes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handler.outcomes == ["client hung up", "client hung up"], handler.outcomes
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_host_holds_neither_other_hosts_nor_the_shard_flush(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    other = LocalWeb({"/page.txt": (200, "text/plain; charset=utf-8", make_text(41).encode())})

    def others_went_on() -> bool:
        fetched = db_count(folder, "SELECT COUNT(*) FROM items WHERE name = ? AND stage != 'crawl'",
                           (other.url("/page.txt"),))
        trained = db_count(folder, "SELECT COUNT(*) FROM shards WHERE status = 'trained'")
        return bool(fetched and trained)

    # the slow host drips until the other host's page was fetched and a shard of the inbox
    # files was trained meanwhile (at most 40 s): with a deadline far away (30 s) only a
    # pipeline that goes on beside it gets there
    handler = type("Drip", (_DripHandler,), {"outcomes": [], "released_while_dripping": [], "cap": 40.0,
                                             "release": staticmethod(others_went_on)})
    server, base = _serve(handler)
    config.write_text(config_text(crawl={"timeout_seconds": 30.0}), encoding="utf-8")
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "web.urls").write_text(f"{base}/drip\n{other.url('/page.txt')}\n", encoding="utf-8")
    docs_into(inbox, tmp_path)
    try:
        result = run_once(folder, config, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
        other.close()
    assert result.returncode == 0, result.stderr
    assert handler.outcomes == ["released"], handler.outcomes
    assert handler.released_while_dripping == [True]
    # and the slow page itself was taken in the end
    assert db_rows(folder, "SELECT stage FROM items WHERE name = ?", (f"{base}/drip",))[0][0] != "crawl"


def test_robots_txt_wildcards_and_end_anchors_are_obeyed(tmp_path: Path) -> None:
    robots = b"User-agent: *\nDisallow: /*.txt$\nDisallow: /private*/\nAllow: /private-ok/\n"
    web = LocalWeb({
        "/robots.txt": (200, "text/plain", robots),
        "/notes.txt": (200, "text/plain", make_text(60).encode()),
        "/notes.txt?format=plain": (200, "text/plain", make_text(61).encode()),
        "/private-2/page.html": (200, "text/plain", make_text(62).encode()),
        "/private-ok/page.html": (200, "text/plain", make_text(63).encode()),
    })
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(), encoding="utf-8")
    (folder / "inbox").mkdir(parents=True)
    urls = ["/notes.txt", "/notes.txt?format=plain", "/private-2/page.html", "/private-ok/page.html"]
    (folder / "inbox" / "web.urls").write_text("\n".join(web.url(u) for u in urls) + "\n", encoding="utf-8")
    try:
        result = run_once(folder, config)
    finally:
        web.close()
    assert result.returncode == 0, result.stderr
    found = quarantined(folder)
    assert found[web.url("/notes.txt")][0] == "robots"
    assert found[web.url("/private-2/page.html")][0] == "robots"
    asked = [path for path, _ in web.requests]
    assert "/notes.txt" not in asked and "/private-2/page.html" not in asked
    # "$" anchors the end: the same file with a query is allowed; Allow wins for private-ok/
    assert "/notes.txt?format=plain" in asked and "/private-ok/page.html" in asked


# ---------------------------------------------------------------------- names in output
def test_names_with_new_lines_and_escape_codes_are_escaped_in_log_and_console(tmp_path: Path) -> None:
    folder, config = tmp_path / "pipe", tmp_path / "pipeline.toml"
    config.write_text(config_text(), encoding="utf-8")
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    docs_into(inbox, tmp_path, 6)
    forged = "evil\n12:00:00 train      ✓ forged line.txt"
    escape = "title\x1b]0;pwned\x07\x1b[2J\u202etxt.exe.md"
    (inbox / forged).write_text(make_text(70), encoding="utf-8")
    (inbox / escape).write_text("too short\n", encoding="utf-8")
    (inbox / "evil-link\x1b[31m.txt").symlink_to("/nonexistent\nforged")
    with open(os.path.join(os.fsencode(inbox), b"caf\xe9-latin1-name.txt"), "wb") as handle:
        handle.write(make_text(71).encode())

    result = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "run", str(folder), "--config",
                             str(config), "--once"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    status = subprocess.run([sys.executable, "-m", "odin.pipeline.cli", "status", str(folder)],
                            capture_output=True, timeout=60)
    assert status.returncode == 0, status.stderr
    log = (folder / "pipeline.log").read_bytes()
    reasons = b"".join(p.read_bytes() for p in (folder / "quarantine").glob("*.reason.txt"))
    for where, text in (("console", result.stderr + result.stdout), ("pipeline.log", log),
                        ("status", status.stdout), ("reason files", reasons)):
        assert b"\x1b" not in text and b"\x07" not in text and "\u202e".encode() not in text, where
        assert not re.search(rb"^12:00:00 train +\S+ forged", text, re.M), f"{where}: a name forged a line"
    assert b"evil\\n12:00:00 train" in log and b"title\\x1b]0;pwned\\x07" in log
    assert b"caf\\xe9-latin1-name.txt" in log
    # every line of the log is a log line (date first) or the indented continuation of one
    for line in log.decode("utf-8").splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d |  ", line), line
    # the names themselves are kept as they are in pipeline.db
    assert db_count(folder, "SELECT COUNT(*) FROM items WHERE name = ?", (forged,)) == 1
