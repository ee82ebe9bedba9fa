"""Small background jobs (build a dataset, load a checkpoint) so the GUI never blocks."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class BackgroundTask:
    """Runs fn(*args) in a daemon thread; poll `done`, then read `result` or `error`."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.name = name
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=f"odin-dashboard-{name}", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self.result = fn(*args)
        except BaseException as error:  # reported in the GUI, never raised there
            self.error = error

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> bool:
        self._thread.join(timeout)
        return self.done
