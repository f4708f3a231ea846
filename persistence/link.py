"""What a producer's client (`client.WriterClient`) writes through: a `WriterLink`.

Three things implement it: the engine's writer actor, reached through Ray (a wallet actor's
records; `engine.runtime.ray_actors.writer_actor.WriterActorLink`), a `LedgerWriter` in the
producer's own process (`writer.py`: a test's), and a `Committer` (`committer.py`: a shard,
which commits its own records, one transaction per batch its client sends, so that a minute
passes one buffer, one flush loop and one retry loop between its billing and its COPY).
"""

from __future__ import annotations

from typing import Protocol


class WriterLink(Protocol):
    async def write(self, batch: list[list], urgent: bool) -> None:
        """Commit `batch`, in order after what was written before: returns once committed."""
        ...

    async def hurry(self) -> None:
        """Commit what is held now: a producer has someone waiting behind a batch it sent as
        write-behind."""
        ...

    async def drain(self) -> None:
        """Return once everything handed over is committed."""
        ...

    async def take_over(self) -> None:
        """Before this producer first reads PostgreSQL: whatever a predecessor of it handed
        over is committed, and nothing more of the predecessor's will be."""
        ...

    def is_transient(self, exc: BaseException) -> bool:
        """Is a failed `write` worth sending again (the other side restarting or away)?"""
        ...
