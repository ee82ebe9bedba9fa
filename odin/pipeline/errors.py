"""Why an item failed a stage: a short machine-readable code plus a sentence for people.

A stage raises :class:`StageError`; the runner decides what happens next. *Permanent*
errors are facts about the content (binary data, invalid UTF-8, an empty file, HTTP 404,
robots.txt says no) that a retry cannot change, so the item goes to quarantine at once.
The others (network trouble, HTTP 5xx, timeouts, permission denied) are retried with
exponential backoff, and quarantined when the attempts run out.
"""
from __future__ import annotations

# code -> whether a retry could help. The codes are stored in pipeline.db (items.reason)
# and listed in docs/pipeline.md; keep them stable.
REASONS: dict[str, bool] = {
    "unreachable": True,  # connection refused / reset, DNS failure, no route
    "timeout": True,
    "http-error": False,  # 4xx; 5xx/408/429 are raised as "http-retry"
    "http-retry": True,
    "robots": False,  # robots.txt disallows the URL for our user agent
    "robots-unavailable": True,  # robots.txt answered 5xx / could not be fetched
    "bad-url": False,
    "content-type": False,  # the server sent an image, a PDF...
    "too-large": False,
    "empty": False,
    "unsupported-type": False,  # a file extension that is not text-like
    "binary": False,
    "invalid-utf8": False,
    "vanished": False,  # gone between "ready" and being read
    "symlink": False,  # a symbolic link in the inbox: never followed, recorded instead
    "special-file": False,  # a FIFO, socket or device in the inbox: never opened for its content
    "permission": True,
    "too-short": False,
    "low-quality": False,
    "io-error": True,
    "tokenizer": True,
    "training": True,
    "internal": True,  # a bug: reported with a traceback in pipeline.log, retried
}


class StageError(Exception):
    """A stage could not process an item; ``code`` is one of :data:`REASONS`."""

    def __init__(self, code: str, message: str) -> None:
        if code not in REASONS:
            raise ValueError(f"unknown failure code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return REASONS[self.code]

    def __str__(self) -> str:
        return self.message


class NotReady(Exception):
    """The input is not finished yet (it changed while being read): try again later, no failure."""
