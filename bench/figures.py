"""What every figures script (`bench.plans_figures`, `bench.offers_figures`) runs on: an engine
on a manual clock and a given card, on a database made anew on the given server (and left there
to look into), its work, then the audit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.money import RateCard
from engine.api import Engine
from engine.config import Config
from persistence.audit import run_audit
from persistence.db import recreate_database, with_database


async def on_engine(
    admin_url: str, redis_url: str, name: str, card: RateCard,
    work: Callable[[Engine], Awaitable[None]],
) -> None:  # fmt: skip
    await recreate_database(admin_url, name)
    config = Config(
        database_url=with_database(admin_url, name),
        redis_url=redis_url,
        clock="manual",
        rate_card=card,
        namespace=name.replace("_", "-"),
    )
    engine = await Engine(config).start()
    try:
        await work(engine)
        found = {k: n for k, n in await run_audit(await engine.pool()) if n}
        print("audit:", found or "clean")
    finally:
        await engine.stop()
