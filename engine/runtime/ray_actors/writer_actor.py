"""The ledger writer as a Ray actor, named `writer` in the engine's namespace.

It is also how an engine is found: an engine runs in a namespace exactly when its writer does
(`cluster.Writer.running`). So it carries the two small things another process needs from the
engine it attaches to: what to attach with (`describe`: URLs and config) and the scheduler's
last run of each job (`jobs`, for `inspect jobs`). A registry actor of its own would be one more
process (about 83 MiB here) that could outlive the engine or disagree with it."""

from __future__ import annotations

import os

import ray

from engine import logs
from engine.config import tune_gc_for_hot_path
from engine.runtime import metrics
from persistence.writer import LedgerWriter, WriterLimits


class WriterActor:
    def __init__(self, database_url: str, limits: WriterLimits, meta: dict | None = None) -> None:
        tune_gc_for_hot_path()
        logs.configure()
        self.writer = LedgerWriter(database_url, limits, metrics.writer_observer("writer"))
        # What another process needs to attach to this engine: its URLs and its config. Stays
        # inside the Ray cluster; `state()` shows only masked URLs.
        self.meta = meta or {}
        self.jobs_last: dict[str, dict] = {}  # the scheduler's last run of each job

    async def write(self, packed: bytes, urgent: bool = False) -> None:
        await self.writer.write(packed, urgent)

    async def hurry(self) -> None:
        self.writer.hurry()

    async def drain(self) -> None:
        await self.writer.drain()

    async def state(self) -> dict:
        node = ray.get_runtime_context().get_node_id()
        return self.writer.state() | {"pid": os.getpid(), "node_id": node}

    async def record_job(self, run: dict) -> None:
        self.jobs_last[run["job"]] = run

    async def jobs(self) -> dict:
        return self.jobs_last

    async def describe(self) -> dict:
        return self.meta

    async def ping(self) -> bool:
        return True
