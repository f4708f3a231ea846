"""The one source of time. Minutes are `minute_seconds` long; tests move a manual clock."""

from __future__ import annotations

import time


class RealClock:
    manual = False

    def now(self) -> float:
        return time.time()


class ManualClock:
    """Time that moves only when a test moves it."""

    manual = True

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a manual clock moves forward, not by {seconds}")
        self._now += seconds
        return self._now

    def set(self, t: float) -> float:
        self._now = max(self._now, float(t))
        return self._now


def make_clock(kind: str) -> RealClock | ManualClock:
    return ManualClock() if kind == "manual" else RealClock()
