"""Stage 2, preprocess: raw bytes -> clean text, and "have we seen this before?".

:func:`clean_document` is a pure function: binary and non-UTF-8 content is refused (with
the byte offset), HTML becomes text (scripts, styles and navigation dropped, blocks on
their own lines), the text is Unicode-normalised (NFC by default), control and zero-width
characters go, line ends and blank lines are tidied, and the quality filters run (minimum
length, share of letters, share of repeated lines).

:class:`Deduper` finds exact duplicates (SHA-256 of the clean text) and near duplicates
(MinHash over word shingles with LSH banding) among everything that passed before; both
indexes live in pipeline.db, so "seen before" spans restarts.
"""
from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Optional

import numpy as np

from odin.pipeline.config import Preprocess
from odin.pipeline.errors import StageError
from odin.pipeline.store import Store

HTML_SUFFIXES = (".html", ".htm", ".xhtml")
# signatures of binary formats that often hide behind a text extension
MAGIC = {b"\x89PNG": "a PNG image", b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive (or docx/xlsx)",
         b"\x7fELF": "an ELF executable", b"\x1f\x8b": "gzip data", b"GIF8": "a GIF image",
         b"\xff\xd8\xff": "a JPEG image", b"BZh": "bzip2 data", b"\xfd7zXZ": "xz data",
         b"7z\xbc\xaf": "a 7-zip archive", b"OggS": "Ogg media", b"ID3": "an MP3 file",
         b"\x00asm": "WebAssembly", b"SQLite format 3": "an SQLite database"}
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"))  # ZWSP, word joiner, BOM, soft hyphen
_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x0b\x0c\x85]")
_SPACES = re.compile(r"[^\S\n\t]")  # every Unicode space except newline and tab
_BLANKS = re.compile(r"\n{3,}")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Cleaned:
    text: str
    text_hash: str  # SHA-256 of the clean text: the exact-duplicate key
    html: bool


# ---------------------------------------------------------------------------- decoding
def detect_binary(data: bytes) -> Optional[str]:
    """Why ``data`` is not text, or None."""
    for magic, what in MAGIC.items():
        if data.startswith(magic):
            return f"binary content ({what})"
    head = data[:65536]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NUL bytes legitimately
        return None
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"binary content (NUL byte at offset {nul})"
    controls = sum(head.count(bytes([c])) for c in range(32) if c not in (9, 10, 12, 13, 27))
    if head and controls / len(head) > 0.05:
        return f"binary content ({100 * controls / len(head):.0f}% control bytes)"
    return None


def _declared_charset(data: bytes) -> Optional[str]:
    match = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_.:-]+)", data[:4096], re.IGNORECASE)
    return match.group(1).decode("ascii").lower() if match else None


def decode(data: bytes, charset: Optional[str] = None, html: bool = False) -> str:
    """Bytes -> str: BOMs honoured; a charset from HTTP or an HTML <meta> is used when it
    names one Python knows; everything else must be valid UTF-8."""
    if not data.strip():
        raise StageError("empty", "empty file (nothing but whitespace)" if data else "empty file (0 bytes)")
    why = detect_binary(data)
    if why:
        raise StageError("binary", why)
    if data.startswith(b"\xef\xbb\xbf"):
        data, charset = data[3:], "utf-8"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        charset = "utf-16"
    if charset is None and html:
        charset = _declared_charset(data)
    encoding = "utf-8"
    if charset:
        try:
            encoding = codecs.lookup(charset).name
        except LookupError:
            encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        bad = data[error.start:error.start + 1].hex()
        if encoding.replace("-", "").replace("_", "") in ("utf8", "utf8sig"):
            raise StageError("invalid-utf8", f"invalid UTF-8 at byte {error.start} (0x{bad}): "
                                             f"{error.reason}") from None
        raise StageError("invalid-utf8", f"not valid {encoding} (declared charset) at byte "
                                         f"{error.start} (0x{bad})") from None


def looks_like_html(data: bytes, suffix: str) -> bool:
    if suffix.lower() in HTML_SUFFIXES:
        return True
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


# ---------------------------------------------------------------------------- HTML
class _TextExtractor(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg", "math", "nav", "iframe", "object",
            "canvas", "select", "button", "head"}
    BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "aside", "h1", "h2", "h3", "h4",
             "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "table", "tr", "blockquote", "pre", "hr",
             "br", "figure", "figcaption", "form", "fieldset", "address", "details", "summary", "title",
             "caption", "body", "html"}
    VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.title: list[str] = []
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in self.SKIP and tag not in self.VOID:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "li" and not self.skip:
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in ("br", "hr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in self.SKIP and self.skip:
            self.skip -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            # inside <pre> spaces and line breaks are content: protected from the tidying below
            self.parts.append(data.replace(" ", "\ue000").replace("\n", "\ue001") if self.pre
                              else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        title = " ".join("".join(self.title).split())
        body = "".join(self.parts)
        lines = [line.strip() for line in body.split("\n")]
        text = _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n").replace("\ue000", " ").replace("\ue001", "\n")
        return (title + "\n\n" + text) if title and title not in text[:len(title) + 200] else text


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


# ---------------------------------------------------------------------------- cleaning
def normalise(text: str, form: str) -> str:
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = _NEWLINES.sub("\n", text).translate(_ZERO_WIDTH)
    text = _CONTROLS.sub("", text)  # C0/C1 controls other than tab and newline carry no text
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip("\n")


def check_quality(text: str, config: Preprocess) -> None:
    if len(text) < config.min_chars:
        raise StageError("too-short", f"too short after cleaning: {len(text)} characters < "
                                      f"[preprocess].min_chars = {config.min_chars}")
    visible = sum(1 for ch in text if not ch.isspace())
    letters = sum(1 for ch in text if ch.isalpha())
    if visible and letters / visible < config.min_alpha_fraction:
        raise StageError("low-quality", f"low quality: {100 * letters / visible:.0f}% of the characters are "
                                        f"letters (< [preprocess].min_alpha_fraction = "
                                        f"{100 * config.min_alpha_fraction:.0f}%)")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) >= 5:
        repeated = (len(lines) - len(set(lines))) / len(lines)
        if repeated > config.max_repeated_line_fraction:
            raise StageError("low-quality", f"low quality: {100 * repeated:.0f}% of the lines repeat earlier "
                                            f"ones (> [preprocess].max_repeated_line_fraction = "
                                            f"{100 * config.max_repeated_line_fraction:.0f}%)")


def clean_document(data: bytes, suffix: str, config: Preprocess, charset: Optional[str] = None) -> Cleaned:
    """Raw bytes -> :class:`Cleaned`, or StageError (binary, invalid-utf8, empty, too-short, low-quality)."""
    html = looks_like_html(data, suffix)
    text = decode(data, charset, html)
    if html:
        text = html_to_text(text)
    text = normalise(text, config.unicode_form)
    if not text.strip():
        raise StageError("empty", "no text left after cleaning" + (" (HTML without visible text)" if html else ""))
    check_quality(text, config)
    return Cleaned(text, hashlib.sha256(text.encode("utf-8")).hexdigest(), html)


# ---------------------------------------------------------------------------- near duplicates
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


class MinHasher:
    """MinHash signatures of word n-gram shingles; 128 hash functions in 32 LSH bands of 4.

    Two texts with Jaccard similarity s share at least one band with probability
    1 - (1 - s^4)^32: 99.9% at s = 0.6, 0.5% at s = 0.2. The hash functions come from a
    fixed seed: signatures stored in pipeline.db must stay comparable across versions."""

    NUM_PERM, BANDS = 128, 32

    def __init__(self, shingle_words: int) -> None:
        self.k = shingle_words
        rng = np.random.default_rng(0x0D1B)
        self.a = rng.integers(1, 1 << 63, self.NUM_PERM, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 63, self.NUM_PERM, dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        if not words:
            return np.zeros(0, np.uint64)
        ids = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
        n = min(self.k, len(words))
        width = len(words) - n + 1
        shingle = np.zeros(width, np.uint64)
        for j in range(n):  # polynomial hash of n consecutive word ids (uint64 wraps around)
            shingle = shingle * np.uint64(1_000_003) + ids[j:j + width]
        return np.unique(shingle)

    def signature(self, text: str) -> Optional[np.ndarray]:
        shingles = self.shingles(text)
        if shingles.size == 0:
            return None
        signature = np.full(self.NUM_PERM, np.iinfo(np.uint64).max, np.uint64)
        for start in range(0, shingles.size, 4096):
            x = shingles[start:start + 4096, None] * self.a[None, :] + self.b[None, :]
            x ^= x >> np.uint64(31)  # splitmix64 finaliser: spreads every input bit
            x *= _M1
            x ^= x >> np.uint64(27)
            x *= _M2
            x ^= x >> np.uint64(33)
            np.minimum(signature, x.min(axis=0), out=signature)
        return signature

    def bands(self, signature: np.ndarray) -> list[tuple[int, str]]:
        rows = self.NUM_PERM // self.BANDS
        return [(band, hashlib.blake2b(signature[band * rows:(band + 1) * rows].tobytes(), digest_size=8).hexdigest())
                for band in range(self.BANDS)]

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(a == b))


@dataclass(frozen=True)
class Duplicate:
    kind: str  # "duplicate" | "near-duplicate"
    of: str  # the item it duplicates
    similarity: float


class Deduper:
    """Exact and near-duplicate lookups against everything recorded in pipeline.db."""

    def __init__(self, store: Store, config: Preprocess) -> None:
        self.store = store
        self.threshold = config.near_duplicate_threshold
        self.hasher = MinHasher(config.shingle_words)

    def signature(self, text: str) -> Optional[np.ndarray]:
        return self.hasher.signature(text) if self.threshold < 1.0 else None

    def find(self, key: str, cleaned: Cleaned, signature: Optional[np.ndarray]) -> Optional[Duplicate]:
        other = self.store.scalar("SELECT item FROM texts WHERE text_hash = ?", (cleaned.text_hash,))
        if other is not None and other != key:
            return Duplicate("duplicate", other, 1.0)
        if signature is None:
            return None
        candidates: set[str] = set()
        for band, bucket in self.hasher.bands(signature):
            for row in self.store.query("SELECT item FROM lsh WHERE band = ? AND bucket = ?", (band, bucket)):
                candidates.add(row[0])
        candidates.discard(key)
        best: Optional[Duplicate] = None
        for candidate in sorted(candidates):
            blob = self.store.scalar("SELECT sig FROM signatures WHERE item = ?", (candidate,))
            if blob is None:
                continue
            similarity = self.hasher.similarity(signature, np.frombuffer(blob, np.uint64))
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Duplicate("near-duplicate", candidate, similarity)
        return best

    def record(self, key: str, cleaned: Cleaned, signature: Optional[np.ndarray]) -> None:
        """Remember a kept text (call inside the transaction that advances the item)."""
        db = self.store.db
        db.execute("INSERT OR IGNORE INTO texts(text_hash, item) VALUES(?, ?)", (cleaned.text_hash, key))
        if signature is not None and db.execute("INSERT OR IGNORE INTO signatures(item, sig) VALUES(?, ?)",
                                                (key, signature.tobytes())).rowcount:
            db.executemany("INSERT INTO lsh(band, bucket, item) VALUES(?, ?, ?)",
                           [(band, bucket, key) for band, bucket in self.hasher.bands(signature)])
