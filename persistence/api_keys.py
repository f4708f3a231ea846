"""API keys as PostgreSQL keeps them: a name, the key's SHA-256 and its scopes; never the key
(engine/keys.py makes keys and says what they may do)."""

from __future__ import annotations

import asyncpg

from actors.errors import IdempotencyConflict, InvalidInput

KEY_COLUMNS = """name, sha256, scopes, extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM revoked_at)::float8 AS revoked_at"""


async def create(pool: asyncpg.Pool, name: str, sha256: str, scopes, live_max: int) -> dict:
    """Keep a new key's digest; a name already used (revoked or not) is refused, as is a key
    past `live_max` live ones. One transaction, so two at once cannot both pass the count."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
        live = await conn.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        if live >= live_max:
            raise InvalidInput(f"{live} keys are live, the most there may be: revoke one first")
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO api_keys (name, sha256, scopes) VALUES ($1, $2, $3)
                    RETURNING {KEY_COLUMNS}""",
                name,
                sha256,
                list(scopes),
            )
        except asyncpg.UniqueViolationError:
            raise IdempotencyConflict(
                f"a key named {name!r} exists (or existed: names are not reused)"
            ) from None
    return _public(row)


async def revoke(pool: asyncpg.Pool, name: str) -> dict | None:
    """Revoke the key `name`; its row as it is after (None: no such key). A second revoke
    changes nothing and says when the first one was."""
    row = await pool.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1
            RETURNING {KEY_COLUMNS}""",
        name,
    )
    return None if row is None else _public(row)


async def listed(pool: asyncpg.Pool) -> list[dict]:
    """Every key ever made, the live ones first, each without its digest."""
    rows = await pool.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY revoked_at IS NOT NULL, created_at, name"
    )
    return [_public(r) for r in rows]


async def live(pool: asyncpg.Pool) -> list[tuple[str, str, list[str]]]:
    """(name, sha256, scopes) of every live key: what the door checks requests against."""
    rows = await pool.fetch("SELECT name, sha256, scopes FROM api_keys WHERE revoked_at IS NULL")
    return [(r["name"], r["sha256"], list(r["scopes"])) for r in rows]


async def any_made(pool: asyncpg.Pool) -> bool:
    """Has this database ever had a key (revoked ones count)?"""
    return await pool.fetchval("SELECT EXISTS (SELECT 1 FROM api_keys)")


def _public(row) -> dict:
    out = dict(row)
    out.pop("sha256")
    out["scopes"] = list(out["scopes"])
    return out
