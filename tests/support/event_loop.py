"""How long the GUI event loop went without running: a 10 ms QTimer records the time between its ticks."""

from __future__ import annotations

import time


class EventLoopWatch:
    """with EventLoopWatch() as watch: ...  then watch.longest (seconds) and watch.ticks."""

    def __init__(self, interval_ms: int = 10) -> None:
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.timeout.connect(self._tick)
        self._interval = interval_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def __enter__(self) -> EventLoopWatch:
        self._last = time.perf_counter()
        self._timer.start(self._interval)
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()

    @property
    def ticks(self) -> int:
        return len(self.gaps)

    @property
    def longest(self) -> float:
        """The longest gap, the first one (timer start-up) left out."""
        return max(self.gaps[1:], default=0.0)
