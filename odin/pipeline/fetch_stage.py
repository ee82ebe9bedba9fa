"""The fetch stage: pages from the web, several hosts at once, one request at a time per host.

A slow or hostile host must not hold up the rest. Each page is fetched in a thread of its
own, at most :data:`PARALLEL_HOSTS` at once and never two for the same host (together
with ``[crawl].per_host_interval_seconds`` that is the politeness limit), while the
dispatcher — the stage's thread, the only one that touches pipeline.db for pages — claims
due URLs of hosts that are free and records what comes back. Every fetch ends within
``[crawl].timeout_seconds`` however the server behaves (the whole-exchange deadline of
:class:`~odin.pipeline.crawler.Fetcher`), so a slow host costs one slot for that long,
and the URLs of other hosts, the other stages and the shard flush go on meanwhile.

On stop, a fetch still under way is left to its thread (a daemon, ended by its deadline);
its item stays ``running`` in pipeline.db and is fetched again on the next start.
"""
from __future__ import annotations

import queue
import sqlite3
import threading
import urllib.parse
from typing import Callable, Union

from odin.pipeline.config import PipelineConfig, PipelinePaths
from odin.pipeline.crawler import Fetcher, Page, normalise_url
from odin.pipeline.errors import StageError
from odin.pipeline.inbox_fs import write_with_mode
from odin.pipeline.intake import human_size
from odin.pipeline.quarantine import fail_item
from odin.pipeline.store import Store

PARALLEL_HOSTS = 4  # fetches at once, each to a different host
Notify = Callable[..., None]


def origin_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class FetchStage:
    def __init__(self, paths: PipelinePaths, config: PipelineConfig, store: Store, notify: Notify,
                 current: dict[str, str], busy: dict[str, bool], stop: threading.Event,
                 internal: Callable[[str, BaseException], StageError]) -> None:
        self.paths, self.config, self.store, self.notify = paths, config, store, notify
        self.current, self.busy, self.stop, self.internal = current, busy, stop, internal
        self.fetcher = Fetcher(config.crawl)
        self.in_flight: dict[str, tuple[sqlite3.Row, str, str]] = {}  # item hash -> (row, url, origin)
        self.results: queue.Queue[tuple[str, Union[Page, BaseException]]] = queue.Queue()

    def run(self) -> None:
        while not self.stop.is_set():
            self._record(wait=0.0)
            started = self._dispatch()
            if not started:  # a result, or time for a waiting host, ends the wait
                self._record(wait=0.2)
        self._record(wait=0.0)

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> int:
        if len(self.in_flight) >= PARALLEL_HOSTS:
            return 0
        busy = {origin for _, _, origin in self.in_flight.values()}
        # hosts asked too recently wait; other hosts' URLs are not queued behind them
        waiting = {origin for origin in self.fetcher.recent_origins() if self.fetcher.wait_seconds(origin + "/") > 0}
        started = 0
        rows = self.store.due("crawl", kind="url", limit=50,
                              exclude_prefixes=[origin + "/" for origin in sorted(busy | waiting)])
        for row in rows:
            if len(self.in_flight) >= PARALLEL_HOSTS or self.stop.is_set():
                break
            try:
                url = normalise_url(row["source"])
            except ValueError as error:
                claimed = self.store.claim("crawl", kind="url", key=row["hash"])
                if claimed is not None:
                    fail_item(self.store, self.paths, self.config.retry, claimed, "crawl",
                              StageError("bad-url", str(error)), self.notify)
                continue
            origin = origin_of(url)
            if origin in busy or self.fetcher.wait_seconds(url) > 0:
                continue
            claimed = self.store.claim("crawl", kind="url", key=row["hash"])
            if claimed is None:
                continue
            busy.add(origin)
            self.in_flight[claimed["hash"]] = (claimed, url, origin)
            threading.Thread(target=self._fetch_one, args=(claimed["hash"], url), daemon=True,
                             name=f"odin-pipeline-fetch-{origin}").start()
            started += 1
        self._show()
        return started

    def _fetch_one(self, key: str, url: str) -> None:
        try:
            result: Union[Page, BaseException] = self.fetcher.fetch(url, self.stop)
        except BaseException as error:  # recorded by the dispatcher, whatever it is
            result = error
        self.results.put((key, result))

    def _show(self) -> None:
        self.busy["fetch"] = bool(self.in_flight)
        names = [row["name"] for row, _, _ in self.in_flight.values()]
        if names:
            self.current["fetch"] = ", ".join(names[:2]) + (f" (+{len(names) - 2})" if len(names) > 2 else "")
        else:
            self.current.pop("fetch", None)

    # ------------------------------------------------------------------ results
    def _record(self, wait: float) -> None:
        """Record every finished fetch (waiting up to ``wait`` seconds for the first)."""
        try:
            key, result = self.results.get(timeout=wait) if wait > 0 else self.results.get_nowait()
        except queue.Empty:
            return
        while True:
            row, url, _ = self.in_flight.pop(key)
            try:
                self._record_one(row, url, result)
            finally:
                self._show()
            try:
                key, result = self.results.get_nowait()
            except queue.Empty:
                return

    def _record_one(self, row: sqlite3.Row, url: str, result: Union[Page, BaseException]) -> None:
        retry = self.config.retry
        if isinstance(result, StageError):
            fail_item(self.store, self.paths, retry, row, "crawl", result, self.notify)
            return
        if isinstance(result, BaseException):
            fail_item(self.store, self.paths, retry, row, "crawl", self.internal("fetch", result), self.notify)
            return
        page = result
        try:
            write_with_mode(self.paths.raw / f"{row['hash']}{page.suffix}", page.body, 0o666)
            self.store.advance(row["hash"], "preprocess", ext=page.suffix, charset=page.charset,
                               size=len(page.body),
                               note=f"redirected to {page.final_url}" if page.final_url != url else None)
        except Exception as error:
            fail_item(self.store, self.paths, retry, row, "crawl", self.internal("fetch", error), self.notify)
            return
        self.notify("info", "crawl", url, f"fetched ({human_size(len(page.body))}, {page.content_type})",
                    item=row["hash"])
