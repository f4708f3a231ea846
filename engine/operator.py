"""What an operator asks of an Engine: time (the manual clock), flushing, readiness, its
processes, and the live state of its parts (`inspect`)."""

from __future__ import annotations

import asyncio

from actors.errors import EngineUnavailable, InvalidInput
from actors.money import entity_id, one_of
from engine.explain import explain
from engine.operations import InspectWallet
from engine.retryable import retryable
from persistence import call_ledger, store
from persistence.db import mask_url
from persistence.writer import combined

READY_WRITER_LAG_MS_MAX = 5_000  # /readyz fails while the writer's oldest write waits longer
READY_WAIT_S = 2.0  # each readiness probe's bound
INSPECT_KINDS = ("call", "wallet", "writer", "shards", "config", "jobs")


class Operator:
    """What an operator asks of an Engine, over its running parts (`life`) and its calls
    (`calls`: `advance` bills what fell due, `inspect` and `explain_call` read a call now)."""

    def __init__(self, life, calls) -> None:
        self.life = life
        self.calls = calls

    @retryable
    async def advance(self, seconds: float) -> int:
        """Manual clock only: move time and bill whatever became due; returns the minutes
        billed, once the calls that ended are settled everywhere.

        If it raises (an actor restarting: `EngineUnavailable`), the clock has moved and some
        hosts may not have billed yet. Nothing is lost: every request after it brings the
        wallets it touches up to the new time first, and calling `bill_due()` (or `advance(0)`)
        again finishes the pass; the transfer ids make a repeat harmless."""
        if not self.life.clock.manual:
            raise InvalidInput("advance() needs the manual clock (clock='manual')")
        self.life.clock.advance(seconds)
        return await self.calls.bill_due()

    @retryable
    async def sync(self) -> None:
        """Wait until everything produced so far is committed in PostgreSQL, including what an
        actor that has since died had already handed to the writer."""
        await self.life.placement.sync()
        await self.life.writer.drain()

    async def readiness(self) -> dict:
        """Can the engine answer now? The writer answers with its oldest queued write younger
        than READY_WRITER_LAG_MS_MAX, and PostgreSQL and Redis answer within READY_WAIT_S."""
        checks: dict[str, str] = {}
        lag_ms = None

        async def check(name: str, probe) -> None:
            try:
                await asyncio.wait_for(probe(), READY_WAIT_S)
                checks[name] = "ok"
            except Exception as e:  # noqa: BLE001 - any failure is "not ready", named
                checks[name] = f"{type(e).__name__}: {e}"[:200]

        async def writer() -> None:
            nonlocal lag_ms
            lag_ms = round((await self.writers())["oldest_queued_ms"], 1)
            if lag_ms > READY_WRITER_LAG_MS_MAX:
                raise EngineUnavailable(f"writer lag {lag_ms} ms > {READY_WRITER_LAG_MS_MAX}")

        async def postgres() -> None:
            await store.ping(await self.life.pool())

        await asyncio.gather(
            check("writer", writer),
            check("postgres", postgres),
            check("redis", self.life.sweeps().ping),
        )
        ready = all(v == "ok" for v in checks.values())
        return {"ready": ready, "checks": checks, "writer_lag_ms": lag_ms}

    async def writers(self) -> dict:
        """What commits the engine's writes: the writer actor and each shard's own writer, as
        one (`writer.combined`)."""
        hosts = await self.life.placement.inspect()
        own = {h["name"]: h["writer"] for h in hosts if h.get("writer")}
        return combined(await self.life.writer.state(), own)

    async def processes(self) -> dict[int, str]:
        """The engine's Ray actor processes, by pid: what each hosts (for memory reports)."""
        life = self.life
        pids = {(await life.writer.state())["pid"]: "writer"}
        return pids | await life.placement.processes(life.clock.now())

    @retryable
    async def inspect(self, kind: str, ident: int | None = None) -> dict | list:
        """The live state of one of INSPECT_KINDS: a call or a wallet brought up to now (by
        id), the writer, the shards (or the actor-per-call actors), the config, the jobs."""
        one_of(kind, INSPECT_KINDS, "inspect kind")
        if kind == "writer":
            return await self.writers()
        life = self.life
        if kind == "shards":
            return await life.placement.inspect()
        if kind == "config":
            return life.config.public() | {"database": mask_url(life.database_url)}
        if kind == "jobs":
            # The scheduler runs in the process that started the engine; its runs are also
            # kept on the writer, for an engine attached from elsewhere.
            if life.scheduler is not None:
                return life.scheduler.state()
            return {"last": await life.writer.jobs()}
        entity_id(ident, f"{kind} id")
        if kind == "wallet":
            return await life.placement.ask(InspectWallet(now=life.clock.now(), user_id=ident))
        return await self.calls.get_call(ident)

    @retryable
    async def explain_call(self, call_id: int) -> dict:
        """Every minute of a call explained (`engine/explain.py`): its minutes and the
        payer's other coin transfers during it in time order, each with the balance after it,
        and the end with the rule that decided it. An ongoing call is brought up to now
        first; what its host billed that is not committed yet shows `committed_at` null."""
        call = await self.calls.get_call(call_id)
        ledger = await call_ledger.read(
            await self.life.pool(), call["call_id"], call["user_id"], call["connected_at"]
        )
        return explain(call, ledger, self.life.config.heartbeat_timeout_s)
