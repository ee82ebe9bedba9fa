"""Stage 1, crawl: bring material in — files from the inbox, pages from the web.

* :func:`read_inbox_file` reads one ready inbox file under the configured limits and
  returns its bytes (or raises :class:`~odin.pipeline.errors.StageError` naming why not).
* :func:`parse_url_list` turns a ``.urls`` file (one URL per line, ``#`` comments) into URLs.
* :class:`Fetcher` downloads one page: HTTP(S) only, the configured User-Agent, a timeout
  per connection and for the whole page, a size cap enforced while reading, robots.txt
  (fetched with the same limits, cached per host) and a minimum interval between two
  requests to the same host.

Only the standard library is used (urllib.request, urllib.robotparser).
"""
from __future__ import annotations

import errno
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Optional

from odin.pipeline.config import Crawl
from odin.pipeline.errors import NotReady, StageError

TEXT_CONTENT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml",
                      "application/javascript", "application/x-javascript", "application/ld+json")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
ROBOTS_TTL_SECONDS = 3600.0


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


def read_inbox_file(path: Path, config: Crawl) -> tuple[bytes, os.stat_result]:
    """The complete bytes of a ready inbox file.

    Raises StageError for: an unsupported type, a file larger than ``max_file_bytes``,
    an empty file, permission denied, a file that vanished; NotReady when the file changed
    while it was read (a writer is still at it)."""
    check_file_type(path, config)
    try:
        before = path.stat()
        if before.st_size > config.max_file_bytes:
            raise StageError("too-large", f"file too large: {before.st_size:,} bytes > "
                                          f"[crawl].max_file_bytes = {config.max_file_bytes:,}")
        if before.st_size == 0:
            raise StageError("empty", "empty file (0 bytes)")
        with open(path, "rb") as handle:
            data = handle.read(config.max_file_bytes + 1)
        after = path.stat()
    except FileNotFoundError:
        raise StageError("vanished", "the file vanished before it could be read (deleted or moved "
                                     "away after it was seen)") from None
    except PermissionError as error:
        raise StageError("permission", f"permission denied reading the file ({error.strerror})") from None
    except IsADirectoryError:
        raise NotReady("became a folder") from None
    except OSError as error:
        raise StageError("io-error", f"could not read the file: {error}") from None
    if len(data) > config.max_file_bytes:
        raise StageError("too-large", f"file grew past [crawl].max_file_bytes = {config.max_file_bytes:,} "
                                      f"while being read")
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != after.st_size:
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


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.max_redirections = limit


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


class Fetcher:
    """Downloads pages politely. One instance is used by the fetch thread only."""

    def __init__(self, config: Crawl) -> None:
        self.config = config
        self._opener = urllib.request.build_opener(_LimitedRedirects(config.max_redirects))
        self._next_slot: dict[str, float] = {}  # origin -> monotonic time of the next allowed request
        self._robots: dict[str, tuple[float, Optional[urllib.robotparser.RobotFileParser], Optional[StageError]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ rate limit
    def wait_seconds(self, url: str) -> float:
        """How long until ``url``'s host may be asked again (0: now)."""
        return max(0.0, self._next_slot.get(_origin(url), 0.0) - time.monotonic())

    def _wait_for_slot(self, url: str, stop: Optional[threading.Event]) -> None:
        origin = _origin(url)
        delay = self.wait_seconds(url)
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        self._next_slot[origin] = time.monotonic() + self.config.per_host_interval_seconds

    # ------------------------------------------------------------------ HTTP
    def _get(self, url: str, stop: Optional[threading.Event]) -> Page:
        """GET with the limits; HTTP errors come back as StageError (codes kept in .page_status)."""
        self._wait_for_slot(url, stop)
        request = urllib.request.Request(url, headers={"User-Agent": self.config.user_agent,
                                                       "Accept": "text/html, text/plain;q=0.9, */*;q=0.5"})
        timeout = self.config.timeout_seconds
        limit = self.config.max_page_bytes
        deadline = time.monotonic() + timeout
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
                    if time.monotonic() > deadline:
                        raise StageError("timeout", f"timed out after {timeout:g} s reading {url}")
                    chunk = response.read(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:  # stop reading: never hold more than the cap
                        raise StageError("too-large", f"page larger than [crawl].max_page_bytes = {limit:,}")
                    chunks.append(chunk)
                content_type = headers.get_content_type() if headers.get("Content-Type") else "text/plain"
                return Page(url, response.geturl(), response.status, content_type,
                            headers.get_content_charset(), b"".join(chunks))
        except urllib.error.HTTPError as error:
            code = error.code
            retry = code >= 500 or code in (408, 429)
            error.close()
            raise StageError("http-retry" if retry else "http-error",
                             f"HTTP {code} {error.reason or ''}".rstrip() + f" for {url}") from None
        except StageError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: bad URL / port
            if isinstance(error, ValueError):
                raise StageError("bad-url", f"cannot fetch {url}: {error}") from None
            raise _network_error(url, error, timeout) from None
        except Exception as error:  # http.client errors (bad status line, incomplete read...)
            raise StageError("unreachable", f"could not fetch {url}: {type(error).__name__}: {error}") from None

    # ------------------------------------------------------------------ robots.txt
    def _robots_for(self, url: str, stop: Optional[threading.Event]) -> urllib.robotparser.RobotFileParser:
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
        parser = urllib.robotparser.RobotFileParser(robots_url)
        try:
            page = self._get(robots_url, stop)
        except StageError as error:
            # RFC 9309: 4xx -> no rules; 401/403 -> treated as "disallow all" (as robotparser does);
            # 5xx or unreachable -> assume complete disallow for now, retry later
            if error.code == "http-error":
                if " 401" in error.message or " 403" in error.message:
                    parser.disallow_all = True
                else:
                    parser.allow_all = True
                return parser, None
            if error.code in ("unreachable", "timeout"):  # the host itself: say so
                return None, StageError(error.code, f"{error.message} (asking for robots.txt)")
            return None, StageError("robots-unavailable", f"robots.txt of {origin} could not be read "
                                                           f"({error.message}); retrying later")
        parser.parse(page.body.decode("utf-8", errors="replace").splitlines())
        return parser, None

    def allowed(self, url: str, stop: Optional[threading.Event] = None) -> bool:
        parser = self._robots_for(url, stop)
        return parser.can_fetch(self.config.user_agent, url)

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
