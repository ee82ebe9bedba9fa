"""CPU per core and process memory from psutil, sampled at most once a second.

psutil.cpu_percent(interval=None) compares with the previous call, so it never sleeps;
sampling faster than ~1 Hz only gives noise."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from odin_dashboard.viewmodel.formatting import fmt_bytes


@dataclass(frozen=True)
class SystemView:
    cores: list[float] = field(default_factory=list)  # 0..1 per logical core
    process_rss: int = 0
    total_memory: int = 0
    memory_text: str = "-"

    @property
    def memory_fraction(self) -> float:
        return self.process_rss / self.total_memory if self.total_memory else 0.0


class SystemSampler:
    def __init__(self, interval: float = 1.0) -> None:
        import psutil  # imported here: a view-model test may run without it

        self._psutil = psutil
        self._process = psutil.Process(os.getpid())
        self.interval = interval
        self._last: Optional[float] = None
        self.view = SystemView()
        psutil.cpu_percent(percpu=True)  # prime: the first call has nothing to compare with

    def sample(self, now: float) -> SystemView:
        if self._last is not None and now - self._last < self.interval:
            return self.view
        self._last = now
        cores = [p / 100.0 for p in self._psutil.cpu_percent(percpu=True)]
        rss = self._process.memory_info().rss
        total = self._psutil.virtual_memory().total
        self.view = SystemView(cores, rss, total, f"{fmt_bytes(rss)} of {fmt_bytes(total)}")
        return self.view
