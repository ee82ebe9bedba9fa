"""The pipeline's stages one by one: cleaning and duplicate detection, the shard format and
window sampling, URL lists and polite fetching against a local server, inbox readiness
with a real watchdog observer, and the state store's claims."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline_helpers import LocalWeb, closed_port, html_page, make_text, wait_for

from odin.pipeline.config import Crawl, Preprocess
from odin.pipeline.crawler import Fetcher, normalise_url, parse_url_list, read_inbox_file
from odin.pipeline.errors import StageError
from odin.pipeline.preprocess import Deduper, MinHasher, clean_document, html_to_text, normalise
from odin.pipeline.shards import (
    ShardError, eval_windows, padded_window, read_shard, sample_windows, shard_id, write_shard,
)
from odin.pipeline.store import Store
from odin.pipeline.watcher import InboxWatcher

PRE = Preprocess(min_chars=20)


def failure(call, *args, **kwargs) -> StageError:
    with pytest.raises(StageError) as caught:
        call(*args, **kwargs)
    return caught.value


# ---------------------------------------------------------------------- preprocess
def test_html_becomes_text_without_scripts_styles_or_navigation() -> None:
    text = html_to_text(html_page("Title here", 3).decode())
    assert text.startswith("Title here\n") and "café & more" in text
    assert "var x" not in text and "color" not in text and "Home | About" not in text
    pre = html_to_text("<p>a   b</p><pre>x  =  1\n    y</pre><ul><li>one<li>two</ul>")
    assert "a b" in pre and "x  =  1\n    y" in pre and "- one\n" in pre and "- two" in pre


def test_normalisation_and_whitespace() -> None:
    raw = "Cafe\u0301 \u00a0x\r\nline\u200b two\x07  \r\n\n\n\n\nend\u2028next   \n"
    assert normalise(raw, "NFC") == "Caf\u00e9  x\nline two\n\nend\nnext"
    assert normalise("\ufb01ne", "NFKC") == "fine" and normalise("\ufb01ne", "NFC") == "\ufb01ne"


def test_decoding_failures_have_precise_reasons() -> None:
    assert failure(clean_document, b"", ".txt", PRE).code == "empty"
    assert failure(clean_document, b"  \n ", ".txt", PRE).code == "empty"
    error = failure(clean_document, b"plain text \xff more text here", ".txt", PRE)
    assert error.code == "invalid-utf8" and "byte 11 (0xff)" in error.message
    assert "PDF" in failure(clean_document, b"%PDF-1.7 ...", ".txt", PRE).message
    assert "NUL byte at offset 3" in failure(clean_document, b"abc\x00def", ".md", PRE).message
    assert "control bytes" in failure(clean_document, bytes(range(1, 9)) * 20, ".txt", PRE).message
    assert failure(clean_document, b"<html><body><script>x</script></body></html>", ".html", PRE).code == "empty"


def test_declared_charsets_and_boms_are_honoured() -> None:
    latin = ("<html><head><meta charset='iso-8859-1'></head>"
             "<body><p>Caf\u00e9 au lait, s'il vous pla\u00eet, merci</p></body></html>")
    assert "Café au lait" in clean_document(latin.encode("latin-1"), ".html", PRE).text
    assert "Caf\u00e9" in clean_document(("Caf\u00e9 " * 10).encode("utf-16"), ".txt", PRE).text
    assert clean_document(b"\xef\xbb\xbf" + b"word " * 10, ".txt", PRE).text.startswith("word")
    assert "Caf\u00e9" in clean_document(("Caf\u00e9 " * 10).encode("latin-1"), ".txt", PRE, charset="latin-1").text


def test_quality_filters() -> None:
    assert failure(clean_document, b"short", ".txt", Preprocess(min_chars=50)).code == "too-short"
    numbers = "\n".join(f"{i}, {i * 3}, {i % 7}" for i in range(50)).encode()
    assert "letters" in failure(clean_document, numbers, ".csv", PRE).message
    repeated = ("same line again\n" * 20 + "one other line\n").encode()
    assert "repeat" in failure(clean_document, repeated, ".txt", PRE).message
    ok = clean_document(make_text(1).encode(), ".txt", PRE)
    assert ok.text == make_text(1).strip() and len(ok.text_hash) == 64


def test_minhash_finds_near_duplicates_only() -> None:
    hasher = MinHasher(5)
    a = make_text(1, 30)
    words = a.split()
    words[10] = "changed"
    b = " ".join(words)
    c = make_text(2, 30)
    sa, sb, sc = (hasher.signature(t) for t in (a, b, c))
    assert hasher.similarity(sa, sb) > 0.85 and hasher.similarity(sa, sc) < 0.1
    assert len(set(hasher.bands(sa)) & set(hasher.bands(sb))) > 0
    assert hasher.signature("") is None


def test_deduper_remembers_across_connections(tmp_path: Path) -> None:
    store = Store(tmp_path / "pipeline.db")
    deduper = Deduper(store, Preprocess(min_chars=20))
    first = clean_document(make_text(5, 20).encode(), ".txt", PRE)
    sig = deduper.signature(first.text)
    assert deduper.find("a", first, sig) is None
    with store.tx():
        deduper.record("a", first, sig)
    assert deduper.find("a", first, sig) is None  # itself is not a duplicate (a redo after a crash)
    again = Deduper(Store(tmp_path / "pipeline.db"), Preprocess(min_chars=20))
    assert again.find("b", first, sig).kind == "duplicate"
    near = clean_document(first.text.replace(first.text.split()[3], "zzz", 1).encode(), ".txt", PRE)
    found = again.find("c", near, again.signature(near.text))
    assert found is not None and found.kind == "near-duplicate" and found.of == "a"
    other = clean_document(make_text(6, 20).encode(), ".txt", PRE)
    assert again.find("d", other, again.signature(other.text)) is None


# ---------------------------------------------------------------------- shards
@pytest.mark.parametrize("vocab", [300, 70000])
def test_shard_round_trip_and_checks(tmp_path: Path, vocab: int) -> None:
    tokens = np.arange(1000) % vocab
    sid = shard_id(1, tokens)
    write_shard(tmp_path, "train", sid, tokens, vocab_size=vocab, tokenizer_sha256="t" * 64,
                sources=[{"hash": "h", "tokens": 1000}])
    shard = read_shard(tmp_path, "train", sid, tokenizer_sha256="t" * 64, verify=True)
    assert shard.tokens.dtype == (np.uint16 if vocab <= 65536 else np.uint32)
    assert np.array_equal(shard.tokens, tokens) and shard.header["sources"][0]["hash"] == "h"
    with pytest.raises(ShardError, match="another tokenizer"):
        read_shard(tmp_path, "train", sid, tokenizer_sha256="u" * 64)
    with pytest.raises(ShardError, match=">= vocab_size"):
        write_shard(tmp_path, "train", "x", np.array([vocab]), vocab_size=vocab, tokenizer_sha256="", sources=[])
    path = tmp_path / "train" / f"{sid}.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ShardError, match="expected 1000 tokens"):
        read_shard(tmp_path, "train", sid)


def test_windows_are_a_pure_function_of_seed_shard_and_step() -> None:
    tokens = np.arange(500, dtype=np.uint16)
    a = sample_windows(tokens, "000001-aa", 7, 3, 4, 16)
    assert a.shape == (4, 17) and a.dtype == np.int32
    assert np.array_equal(a, sample_windows(tokens, "000001-aa", 7, 3, 4, 16))
    assert not np.array_equal(a, sample_windows(tokens, "000001-aa", 7, 4, 4, 16))
    assert not np.array_equal(a, sample_windows(tokens, "000002-bb", 7, 3, 4, 16))
    assert np.all(np.diff(a, axis=1) == 1)  # contiguous windows inside the shard
    with pytest.raises(ShardError):
        sample_windows(tokens[:10], "s", 0, 0, 2, 16)
    windows = eval_windows(np.arange(50), 16)
    assert windows.shape == (3, 17) and windows[1, 0] == 16 and windows[-1, -1] == 48
    assert eval_windows(np.arange(5), 16).shape == (1, 5)


# ---------------------------------------------------------------------- crawl
def test_url_lists() -> None:
    data = (b"# comment\n\nhttp://Example.COM/a#frag\nhttps://example.com/b?q=1\nhttp://example.com/a\n"
            b"ftp://x/y\nnot a url\n")
    urls, bad = parse_url_list(data, Crawl())
    assert urls == ["http://example.com/a", "https://example.com/b?q=1"]
    assert [line for line, _ in bad] == ["ftp://x/y", "not a url"]
    assert normalise_url("http://h:80") == "http://h:80/"
    with pytest.raises(ValueError, match="bad port"):
        normalise_url("http://h:99999/")
    urls, bad = parse_url_list(b"http://a/1\nhttp://a/2\nhttp://a/3\n", Crawl(max_urls_per_list=2))
    assert len(urls) == 2 and "max_urls_per_list" in bad[0][1]


def test_inbox_file_checks(tmp_path: Path) -> None:
    config = Crawl(max_file_bytes=100)
    assert failure(read_inbox_file, tmp_path / "gone.txt", config).code == "vanished"
    (tmp_path / "big.txt").write_bytes(b"x" * 101)
    assert "101 bytes > [crawl].max_file_bytes = 100" in failure(read_inbox_file, tmp_path / "big.txt", config).message
    (tmp_path / "empty.md").write_bytes(b"")
    assert failure(read_inbox_file, tmp_path / "empty.md", config).code == "empty"
    (tmp_path / "a.exe").write_bytes(b"MZ")
    assert failure(read_inbox_file, tmp_path / "a.exe", config).code == "unsupported-type"
    (tmp_path / "README").write_bytes(b"hello")
    assert read_inbox_file(tmp_path / "README", config)[0] == b"hello"


@pytest.fixture
def web():
    pages = {
        "/robots.txt": (200, "text/plain",
                        b"User-agent: odin-pipeline\nDisallow: /no/\n\nUser-agent: *\nDisallow: /\n"),
        "/yes.html": (200, "text/html", html_page("yes", 1)),
        "/no/page.html": (200, "text/html", html_page("no", 2)),
        "/big.txt": (200, "text/plain", b"x" * 5000),
        "/gone": (410, "text/plain", b"gone"),
        "/busy": (503, "text/plain", b"busy"),
        "/pdf": (200, "application/pdf", b"%PDF-1.4"),
    }
    server = LocalWeb(pages)
    yield server
    server.close()


def test_fetcher_obeys_robots_limits_and_reports_each_failure(web: LocalWeb) -> None:
    fetcher = Fetcher(Crawl(timeout_seconds=0.5, max_page_bytes=4000, per_host_interval_seconds=0.0))
    page = fetcher.fetch(web.url("/yes.html"))
    assert page.status == 200 and page.suffix == ".html" and b"yes" in page.body
    assert failure(fetcher.fetch, web.url("/no/page.html")).code == "robots"
    assert "/no/page.html" not in [p for p, _ in web.requests]
    assert failure(fetcher.fetch, web.url("/big.txt")).code == "too-large"
    gone = failure(fetcher.fetch, web.url("/gone"))
    assert (gone.code, gone.retryable) == ("http-error", False) and "HTTP 410" in gone.message
    busy = failure(fetcher.fetch, web.url("/busy"))
    assert (busy.code, busy.retryable) == ("http-retry", True)
    assert failure(fetcher.fetch, web.url("/pdf")).code == "content-type"
    assert failure(fetcher.fetch, web.url("/slow")).code == "timeout"
    dead = failure(fetcher.fetch, f"http://127.0.0.1:{closed_port()}/x")
    assert dead.code == "unreachable" and "connection refused" in dead.message
    assert [p for p, _ in web.requests].count("/robots.txt") == 1  # cached per host
    assert {ua for _, ua in web.requests} == {Crawl().user_agent}


def test_robots_txt_errors(web: LocalWeb) -> None:
    web.handler.pages["/robots.txt"] = (503, "text/plain", b"")
    fetcher = Fetcher(Crawl(per_host_interval_seconds=0.0))
    assert failure(fetcher.fetch, web.url("/yes.html")).code == "robots-unavailable"
    web.handler.pages["/robots.txt"] = (404, "text/plain", b"")
    assert Fetcher(Crawl(per_host_interval_seconds=0.0)).fetch(web.url("/yes.html")).status == 200


def test_per_host_rate_limit(web: LocalWeb) -> None:
    fetcher = Fetcher(Crawl(per_host_interval_seconds=0.3))
    started = time.monotonic()
    for _ in range(2):
        fetcher.fetch(web.url("/yes.html"))
    # robots.txt, then two pages: three requests, each at least 0.3 s after the previous
    assert time.monotonic() - started >= 0.6
    assert fetcher.wait_seconds(web.url("/x")) > 0 and fetcher.wait_seconds("http://other.example/") == 0


# ---------------------------------------------------------------------- the inbox
@pytest.mark.parametrize("mode", ["events", "poll"])
def test_watcher_readiness(tmp_path: Path, mode: str) -> None:
    inbox = tmp_path / "inbox"
    watcher = InboxWatcher(inbox, settle_seconds=1.5 if mode == "events" else 0.3, rescan_seconds=60,
                           ignore=(".*", "*.part"), mode=mode)
    (inbox / "early.txt").parent.mkdir(parents=True)
    (inbox / "early.txt").write_text("there before the start")
    watcher.start()
    try:
        assert watcher.pending() == 1  # the start-up scan
        if mode == "events":  # written and closed: ready at once, long before settle_seconds
            started = time.monotonic()
            (inbox / "closed.txt").write_text("done")
            wait_for(lambda: inbox / "closed.txt" in watcher.ready(), 5, "closed.txt")
            assert time.monotonic() - started < 1.0
        # a file still growing is not ready
        handle = open(inbox / "growing.txt", "w")
        handle.write("a")
        handle.flush()
        stop = threading.Event()

        def grow() -> None:
            while not stop.is_set():
                handle.write("more")
                handle.flush()
                time.sleep(0.05)
        writer = threading.Thread(target=grow)
        writer.start()
        time.sleep(0.8)
        assert inbox / "growing.txt" not in watcher.ready()
        stop.set()
        writer.join()
        handle.close()
        wait_for(lambda: inbox / "growing.txt" in watcher.ready(), 5, "growing.txt once finished")
        # ignored names, and a whole folder renamed into the inbox
        (inbox / ".hidden").write_text("x")
        (inbox / "download.part").write_text("x")
        outside = tmp_path / "folder"
        (outside / "deep").mkdir(parents=True)
        (outside / "deep" / "one.md").write_text("1")
        (outside / "two.md").write_text("2")
        outside.rename(inbox / "folder")
        wait_for(lambda: {inbox / "folder/deep/one.md", inbox / "folder/two.md"} <= set(watcher.ready()), 5,
                 "the moved folder's files")
        assert not {inbox / ".hidden", inbox / "download.part"} & set(watcher.ready())
        watcher.take(inbox / "early.txt")
        assert inbox / "early.txt" not in watcher.ready()
    finally:
        watcher.stop()


# ---------------------------------------------------------------------- the store
def test_claims_are_exclusive_and_reset_after_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "pipeline.db"
    store = Store(db)
    for i in range(20):
        assert store.insert_item(f"k{i:02d}", stage="preprocess", status="pending", name=f"n{i}")
    assert not store.insert_item("k00", stage="preprocess", status="pending", name="again")
    claimed: list[str] = []

    def claim_all() -> None:
        own = Store(db)
        while (row := own.claim("preprocess")) is not None:
            claimed.append(row["hash"])
    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [f"k{i:02d}" for i in range(20)]  # each exactly once
    assert store.reset_running() == 20
    assert store.claim("preprocess")["hash"] == "k00"  # oldest first
    store.update_item("k01", status="failed", next_try=time.time() + 60)
    assert store.claim("preprocess")["hash"] == "k02"  # k01 waits for its retry time
    ro = Store(db, readonly=True)
    assert ro.counts()["preprocess"]["running"] == 2
    store.event("info", "hello", stage="crawl", name="x")
    assert ro.events()[-1]["message"] == "hello"


def test_padded_window_for_a_short_shard() -> None:
    window, mask = padded_window(np.array([5, 6, 7], np.uint16), 6, pad_id=0)
    assert window.tolist() == [5, 6, 7, 0, 0, 0, 0] and mask.tolist() == [1, 1, 0, 0, 0, 0]
