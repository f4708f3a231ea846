"""What a host tells the engine's metrics (`engine.runtime.metrics` in a Ray actor): minutes
billed, calls started and settled. A host outside Ray (a test's) tells nobody."""

from __future__ import annotations

from typing import Protocol


class Meter(Protocol):
    def billed(self, minutes: int, started: int = 0) -> None: ...
    def settled(self, reasons: list[str]) -> None: ...


class NoMeter:
    def billed(self, minutes: int, started: int = 0) -> None:
        return None

    def settled(self, reasons: list[str]) -> None:
        return None
