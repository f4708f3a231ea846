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
from engine.runtime.raycalls import WRITER_NAME, actor, is_transient, remote
from persistence.records import pack
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
        await self.writer.hurry()

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


class WriterActorLink:
    """A producer's way to the writer actor (`persistence.link.WriterLink`): its batches packed
    (msgpack) into one Ray message each. The handle is looked up at the first use (the writer
    may start after its producers)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handle = None

    def _writer(self):
        if self._handle is None:
            self._handle = actor(WRITER_NAME, self.namespace)
        return self._handle

    async def write(self, batch: list[list], urgent: bool) -> None:
        await remote(self._writer().write.remote(pack(batch), urgent))

    async def hurry(self) -> None:
        await remote(self._writer().hurry.remote())

    async def drain(self) -> None:
        await remote(self._writer().drain.remote())

    async def take_over(self) -> None:
        """A restarted producer's predecessor may have handed the writer records that commit
        only after the successor would have read PostgreSQL: all of them first."""
        await self.drain()

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return is_transient(exc)
