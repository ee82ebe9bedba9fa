"""Stage 1, crawl: bring material in — files from the inbox, pages from the web.

* :func:`read_inbox_file` reads one ready inbox file under the configured limits and
  returns its bytes (or raises :class:`~odin.pipeline.errors.StageError` naming why not).
* :func:`parse_url_list` turns a ``.urls`` file (one URL per line, ``#`` comments) into URLs.
* :class:`Fetcher` downloads one page: http and https only (at every redirect, at most
  ``max_redirects`` of them), the configured User-Agent, a timeout per socket operation and
  a deadline for the whole exchange (the sockets are shut down when it passes, so a server
  that drips bytes cannot hold a fetch), a size cap enforced while reading, robots.txt
  (RFC 9309, parsed by Protego; fetched with the same limits, cached per host) and a
  minimum interval between two requests to the same host.

HTTP is urllib's (with no ftp, file or data handler installed); robots.txt is Protego's.
"""
from __future__ import annotations

import errno
import http.client
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Optional

from protego import Protego

from odin.pipeline import inbox_fs
from odin.pipeline.config import Crawl
from odin.pipeline.errors import NotReady, StageError

TEXT_CONTENT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml",
                      "application/javascript", "application/x-javascript", "application/ld+json")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
ROBOTS_TTL_SECONDS = 3600.0
DISALLOW_ALL = "User-agent: *\nDisallow: /\n"


# ---------------------------------------------------------------------------- files
def is_url_list(path: Path) -> bool:
    return path.suffix.lower() == ".urls"


def check_file_type(path: Path, config: Crawl) -> None:
    suffix = path.suffix.lower()
    if suffix == ".urls" or suffix in config.extensions or (not suffix and config.no_extension):
        return
    shown = ", ".join(config.extensions[:8]) + (", ..." if len(config.extensions) > 8 else "")
    raise StageError("unsupported-type", f"unsupported file type {suffix or '(none)'!r}: not text-like "
                                         f"(taken: .urls, {shown}; [crawl].extensions)")


def read_inbox_file(path: Path, config: Crawl, root: Optional[Path] = None) -> tuple[bytes, os.stat_result]:
    """The complete bytes of a ready inbox file; ``root`` is the inbox (default: its folder).

    Nothing on the way is followed: a symbolic link (the entry itself, or a folder on its
    path) is never read through, and only a regular file is opened (see inbox_fs).
    Raises StageError for: a symbolic link, something that is not a regular file, an
    unsupported type, a file larger than ``max_file_bytes``, an empty file, permission
    denied, a file that vanished; NotReady when the file changed while it was read (a
    writer is still at it) or a folder on its path is a link (the link itself is then
    the entry to take)."""
    root = path.parent if root is None else root
    rel = path.relative_to(root).as_posix()
    try:
        entry = inbox_fs.lstat_entry(root, rel)
        if stat.S_ISLNK(entry.st_mode):
            target = inbox_fs.read_link(root, rel)
            raise StageError("symlink", f"symbolic link (to {target!r}): links in the inbox are never followed")
        if not stat.S_ISREG(entry.st_mode):
            raise StageError("special-file", f"not a regular file ({inbox_fs.kind_of(entry.st_mode)}): "
                                             f"only regular files are read")
        check_file_type(path, config)
        if entry.st_size > config.max_file_bytes:
            raise StageError("too-large", f"file too large: {entry.st_size:,} bytes > "
                                          f"[crawl].max_file_bytes = {config.max_file_bytes:,}")
        if entry.st_size == 0:
            raise StageError("empty", "empty file (0 bytes)")
        data, before, after = inbox_fs.read_regular(root, rel, config.max_file_bytes)
    except inbox_fs.LinkOnPath:
        raise NotReady("a folder on its path is a symbolic link") from None
    except FileNotFoundError:
        raise StageError("vanished", "the file vanished before it could be read (deleted or moved "
                                     "away after it was seen)") from None
    except PermissionError as error:
        raise StageError("permission", f"permission denied reading the file ({error.strerror})") from None
    except OSError as error:
        if error.errno == errno.ELOOP:  # swapped for a link after the lstat
            raise StageError("symlink", "symbolic link: links in the inbox are never followed") from None
        if hasattr(error, "st"):  # swapped for a FIFO, a device... after the lstat
            raise StageError("special-file", f"not a regular file ({inbox_fs.kind_of(error.st.st_mode)}): "
                                             f"only regular files are read") from None
        if error.errno in (errno.ENOTDIR, errno.EISDIR):
            raise NotReady("the path changed (a folder and a file swapped)") from None
        raise StageError("io-error", f"could not read the file: {error}") from None
    if len(data) > config.max_file_bytes:
        raise StageError("too-large", f"file grew past [crawl].max_file_bytes = {config.max_file_bytes:,} "
                                      f"while being read")
    if ((after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
            or (before.st_dev, before.st_ino) != (entry.st_dev, entry.st_ino) or len(data) != after.st_size):
        raise NotReady("changed while being read")
    return data, after


def parse_url_list(data: bytes, config: Crawl) -> tuple[list[str], list[tuple[str, str]]]:
    """(valid URLs in order without repeats, [(line, why it is not a URL)])."""
    text = data.decode("utf-8", errors="replace")
    urls: list[str] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            url = normalise_url(line)
        except ValueError as error:
            bad.append((line, str(error)))
            continue
        if url not in seen:
            seen.add(url)
            urls.append(url)
    if len(urls) > config.max_urls_per_list:
        for url in urls[config.max_urls_per_list:]:
            bad.append((url, f"beyond [crawl].max_urls_per_list = {config.max_urls_per_list}"))
        urls = urls[: config.max_urls_per_list]
    return urls, bad


def normalise_url(text: str) -> str:
    """http(s) URL with a lower-case scheme and host and no fragment; ValueError otherwise."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {text[:200]!r}")
    if not parts.hostname:
        raise ValueError(f"URL without a host: {text[:200]!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"URL with a bad port: {text[:200]!r}") from None
    netloc = parts.netloc.rsplit("@", 1)[-1].lower()
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


# ---------------------------------------------------------------------------- the web
@dataclass(frozen=True)
class Page:
    url: str  # as requested
    final_url: str  # after redirects
    status: int
    content_type: str  # "text/html"
    charset: Optional[str]
    body: bytes

    @property
    def suffix(self) -> str:
        if "html" in self.content_type:
            return ".html"
        if "json" in self.content_type:
            return ".json"
        if "xml" in self.content_type:
            return ".xml"
        return ".txt"


class _Deadline:
    """The time limit of one whole exchange (connection, headers, every byte of the body,
    redirects included). A per-read timeout alone lets a server that drips a byte every few
    seconds hold a fetch for ever; at the deadline every socket of the exchange is shut down,
    which ends whatever call is blocked on it, however the server behaves."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the deadline passed while connecting")
            self._sockets.append(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # closed already
                    pass

    def cancel(self) -> None:
        self._timer.cancel()


def _with_deadline(base: type) -> type:
    """An http.client connection class whose sockets obey the request's _Deadline."""

    class Connection(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection

            def connect_within(address: Any, timeout: Any = None, source_address: Any = None) -> socket.socket:
                limit = deadline.remaining() if timeout is None else min(timeout, deadline.remaining())
                return deadline.track(create(address, limit, source_address))
            # the TLS handshake runs on this socket too, so it is covered from the first byte
            self._create_connection = connect_within

    return Connection


_HTTPConnection = _with_deadline(http.client.HTTPConnection)
_HTTPSConnection = _with_deadline(http.client.HTTPSConnection)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_HTTPConnection, req, deadline=req.odin_deadline)  # type: ignore[attr-defined]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_HTTPSConnection, req, context=self._context,  # type: ignore[attr-defined]
                            deadline=req.odin_deadline)  # type: ignore[attr-defined]


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http(s), at most ``limit`` hops, within the same deadline.
    (urllib's own handler also follows ftp://, and reads the whole body of each redirect.)"""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Message) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location.strip())
            if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
                fp.close()
                raise StageError("bad-url", f"redirected to a URL that is not http(s): {target[:200]!r} "
                                            f"(from {req.full_url}; only http and https are followed)")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Message, newurl: str) -> Any:
        hops = getattr(req, "odin_hops", 0) + 1
        first = getattr(req, "odin_first", req.full_url)
        if hops > self.limit:
            fp.close()
            raise StageError("http-error", f"too many redirects: more than [crawl].max_redirects = {self.limit} "
                                           f"(from {first})")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.odin_hops, new.odin_first, new.odin_deadline = hops, first, req.odin_deadline
        fp.close()  # the body of a redirect is never read (urllib would read all of it)
        return new


def _opener(max_redirects: int) -> urllib.request.OpenerDirector:
    """http and https only: no ftp, file or data handler is installed at all."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _HTTPHandler(),
                    _HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), _Redirects(max_redirects),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _network_error(url: str, error: BaseException, timeout: float) -> StageError:
    """Turn what urllib raises into one of our reasons with a readable message."""
    reason = getattr(error, "reason", error)
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return StageError("timeout", f"timed out after {timeout:g} s ({host})")
    if isinstance(reason, socket.gaierror):
        return StageError("unreachable", f"host not found: {host} ({reason.strerror or reason})")
    if isinstance(reason, ConnectionRefusedError):
        return StageError("unreachable", f"host unreachable: connection refused by {host}")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNRESET):
        return StageError("unreachable", f"host unreachable: {host} ({reason.strerror})")
    return StageError("unreachable", f"could not fetch from {host}: {reason}")


def _deadline_error(url: str, timeout: float) -> StageError:
    host = urllib.parse.urlsplit(url).netloc
    return StageError("timeout", f"timed out after {timeout:g} s ({host}): no complete response within "
                                 f"[crawl].timeout_seconds")


def _fetch_error(url: str, error: BaseException, timeout: float) -> StageError:
    if isinstance(error, ValueError):  # a bad URL or port
        return StageError("bad-url", f"cannot fetch {url}: {error}")
    if isinstance(error, (urllib.error.URLError, OSError)):
        return _network_error(url, error, timeout)
    # http.client's own errors (a bad status line, an incomplete read...)
    return StageError("unreachable", f"could not fetch {url}: {type(error).__name__}: {error}")


class Fetcher:
    """Downloads pages politely. One instance is used by the fetch thread only."""

    def __init__(self, config: Crawl) -> None:
        self.config = config
        self._opener = _opener(config.max_redirects)
        self._next_slot: dict[str, float] = {}  # origin -> monotonic time of the next allowed request
        self._robots: dict[str, tuple[float, Optional[Protego], Optional[StageError]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ rate limit
    def wait_seconds(self, url: str) -> float:
        """How long until ``url``'s host may be asked again (0: now)."""
        return max(0.0, self._next_slot.get(_origin(url), 0.0) - time.monotonic())

    def recent_origins(self) -> list[str]:
        """Origins asked before (some of them may still have to wait)."""
        with self._lock:
            return list(self._next_slot)

    def _wait_for_slot(self, url: str, stop: Optional[threading.Event]) -> None:
        origin = _origin(url)
        delay = self.wait_seconds(url)
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        with self._lock:
            self._next_slot[origin] = time.monotonic() + self.config.per_host_interval_seconds

    # ------------------------------------------------------------------ HTTP
    def _get(self, url: str, stop: Optional[threading.Event]) -> Page:
        """GET with the limits; HTTP errors come back as StageError (codes kept in .page_status)."""
        self._wait_for_slot(url, stop)
        request = urllib.request.Request(url, headers={"User-Agent": self.config.user_agent,
                                                       "Accept": "text/html, text/plain;q=0.9, */*;q=0.5"})
        timeout = self.config.timeout_seconds
        limit = self.config.max_page_bytes
        deadline = _Deadline(timeout)
        request.odin_deadline = deadline  # type: ignore[attr-defined]
        try:
            with self._opener.open(request, timeout=timeout) as response:
                headers: Message = response.headers
                length = headers.get("Content-Length")
                if length and length.isdigit() and int(length) > limit:
                    raise StageError("too-large", f"page too large: {int(length):,} bytes > "
                                                  f"[crawl].max_page_bytes = {limit:,}")
                chunks: list[bytes] = []
                size = 0
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:  # stop reading: never hold more than the cap
                        raise StageError("too-large", f"page larger than [crawl].max_page_bytes = {limit:,}")
                    chunks.append(chunk)
                if deadline.expired:  # the shut-down socket looked like the end of the page
                    raise _deadline_error(url, timeout)
                content_type = headers.get_content_type() if headers.get("Content-Type") else "text/plain"
                return Page(url, response.geturl(), response.status, content_type,
                            headers.get_content_charset(), b"".join(chunks))
        except urllib.error.HTTPError as error:
            if deadline.expired:
                raise _deadline_error(url, timeout) from None
            code = error.code
            retry = code >= 500 or code in (408, 429)
            error.close()
            raise StageError("http-retry" if retry else "http-error",
                             f"HTTP {code} {error.reason or ''}".rstrip() + f" for {url}") from None
        except StageError:
            raise
        except Exception as error:
            if deadline.expired:  # whatever the shut-down socket made the reading code raise
                raise _deadline_error(url, timeout) from None
            raise _fetch_error(url, error, timeout) from None
        finally:
            deadline.cancel()

    # ------------------------------------------------------------------ robots.txt

    def _robots_for(self, url: str, stop: Optional[threading.Event]) -> Protego:
        origin = _origin(url)
        cached = self._robots.get(origin)
        if cached is not None and time.monotonic() - cached[0] < ROBOTS_TTL_SECONDS:
            parser, error = cached[1], cached[2]
        else:
            parser, error = self._load_robots(origin, stop)
            # a transient failure is not cached for long: the next URL of that host asks again
            stamp = time.monotonic() - (ROBOTS_TTL_SECONDS - 30.0 if error is not None else 0.0)
            self._robots[origin] = (stamp, parser, error)
        if error is not None:
            raise error
        assert parser is not None
        return parser

    def _load_robots(self, origin: str, stop: Optional[threading.Event]):
        robots_url = origin + "/robots.txt"
        try:
            page = self._get(robots_url, stop)
        except StageError as error:
            # RFC 9309: 4xx -> no rules; 401/403 -> treated as "disallow all" (as robotparser does);
            # 5xx or unreachable -> assume complete disallow for now, retry later
            if error.code == "http-error":
                forbidden = " 401" in error.message or " 403" in error.message
                return Protego.parse(DISALLOW_ALL if forbidden else ""), None
            if error.code in ("unreachable", "timeout"):  # the host itself: say so
                return None, StageError(error.code, f"{error.message} (asking for robots.txt)")
            return None, StageError("robots-unavailable", f"robots.txt of {origin} could not be read "
                                                           f"({error.message}); retrying later")
        # RFC 9309 (wildcards *, end anchors $, the longest match wins, Allow beats Disallow
        # on a tie): Protego implements it; urllib.robotparser has prefixes only
        return Protego.parse(page.body.decode("utf-8", errors="replace")), None

    def allowed(self, url: str, stop: Optional[threading.Event] = None) -> bool:
        parser = self._robots_for(url, stop)
        return bool(parser.can_fetch(url, self.config.user_agent))

    # ------------------------------------------------------------------ one page
    def fetch(self, url: str, stop: Optional[threading.Event] = None) -> Page:
        """Robots check, then the page; StageError for every way it can go wrong."""
        if not self.allowed(url, stop):
            raise StageError("robots", f"disallowed by {_origin(url)}/robots.txt for user agent "
                                       f"{self.config.user_agent!r}")
        page = self._get(url, stop)
        if _origin(page.final_url) != _origin(url) and not self.allowed(page.final_url, stop):
            raise StageError("robots", f"redirected to {page.final_url}, which its robots.txt disallows")
        if not page.content_type.startswith(TEXT_CONTENT_TYPES):
            raise StageError("content-type", f"unsupported content type {page.content_type!r} at {url}")
        if not page.body:
            raise StageError("empty", f"empty response from {url}")
        return page
