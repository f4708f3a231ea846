"""One asyncpg pool per process, per database URL."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import weakref

import asyncpg

from actors.errors import EngineUnavailable
from persistence.schema import migrate

POOL_SIZE_MAX = 8
CONNECT_TIMEOUT_S = 5.0
STAGING_TABLE = "ledger_staging"

# Per event loop (a pool belongs to the loop that made it), and weakly: a closed loop's pools
# go with it, and a new loop that happens to reuse its id never sees them.
_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mask_url(url: str | None) -> str:
    """The URL with any password replaced, for logs, errors and `inspect`."""
    if not url:
        return str(url)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # The writer COPYs each batch into this table, then inserts from it with ON CONFLICT.
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (
                transfer_id text COLLATE "C", user_id bigint, unit text, amount bigint,
                tx_type text, call_id bigint, minute_no integer, at_ms bigint, billed_ms bigint
            ) ON COMMIT DELETE ROWS"""
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset when a connection goes back to the pool: ours hold no session state (no
    LISTEN, advisory locks, cursors or SETs; transactions are closed by their context
    managers), and asyncpg's default reset is a round trip of four statements on every
    release (4 % of a shard's CPU under load)."""


async def get_pool(url: str) -> asyncpg.Pool:
    """The process's pool for `url`, created (and the schema migrated) on first use."""
    loop = asyncio.get_running_loop()
    pools = _pools.setdefault(loop, {})
    pool = pools.get(url)
    if pool is not None and not pool.is_closing():
        return pool
    async with _locks.setdefault(loop, asyncio.Lock()):
        pool = pools.get(url)
        if pool is None or pool.is_closing():  # a caller may have closed the shared pool
            pool = await _create_pool(url)
            pools[url] = pool
    return pool


# Every connection of the engine's: its queries are lookups by key and by arrays of keys,
# planned for the indexes. A custom plan per execution (PostgreSQL's default for the first five,
# and after them whenever it estimates one cheaper) re-planned the wallet loads at every batch:
# 1 ms each, 110 of the 170 us of database time per call start. And no JIT: it compiles a
# plan at every execution whose estimated cost passes `jit_above_cost`, which the generic plans
# of array look-ups do (a ledger range is estimated at thousands of rows): the look-up of
# buckets' debits took 17.5 ms with JIT and 0.3 ms without, the wallets of 100 people 23 ms
# against 0.7 (PostgreSQL 15 here, JIT on by default).
SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan", "jit": "off"}


def _unreachable(url: str, e: BaseException) -> EngineUnavailable:
    return EngineUnavailable(f"cannot reach PostgreSQL at {mask_url(url)}: {e}")


async def _create_pool(url: str) -> asyncpg.Pool:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        raise _unreachable(url, e) from None
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        return await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=POOL_SIZE_MAX,
            init=_init_connection,
            reset=_keep_session,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=SERVER_SETTINGS,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        raise _unreachable(url, e) from None


async def connect(url: str) -> asyncpg.Connection:
    """A connection of its own, set up as the pool's are (a writer that commits on one
    connection holding its fence). The schema is migrated first, by the process's pool."""
    await get_pool(url)
    try:
        conn = await asyncpg.connect(
            url, timeout=CONNECT_TIMEOUT_S, server_settings=SERVER_SETTINGS
        )
    except (TimeoutError, OSError) as e:  # a ConnectionError: transient for the writer
        raise _unreachable(url, e) from None
    try:
        await _init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def close_pools() -> None:
    pools = _pools.pop(asyncio.get_running_loop(), {})
    for pool in pools.values():
        await pool.close()


def with_database(url: str, name: str) -> str:
    """The same server's URL with another database."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def recreate_database(admin_url: str, name: str, drop_only: bool = False) -> None:
    """Drop database `name` on the server of `admin_url` and, unless drop_only, create it
    empty. For the tests and `chaos`, which each work in a database of their own."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
