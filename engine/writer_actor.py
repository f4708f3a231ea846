"""The ledger writer as a Ray actor, named `writer` in the engine's namespace."""

from __future__ import annotations

import os

from persistence.writer import LedgerWriter, WriterLimits


class WriterActor:
    def __init__(self, database_url: str, limits: WriterLimits) -> None:
        self.writer = LedgerWriter(database_url, limits)

    async def write(self, packed: bytes, urgent: bool = False) -> None:
        await self.writer.write(packed, urgent)

    async def drain(self) -> None:
        await self.writer.drain()

    async def state(self) -> dict:
        return self.writer.state() | {"pid": os.getpid()}

    async def ping(self) -> bool:
        return True
