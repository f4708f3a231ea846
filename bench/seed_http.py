"""`seed_http`: the older system's way behind HTTP, for the HTTP rows of `billing-engine bench`
to stand beside. A FastAPI app on uvicorn, one process, the routes of the engine's API, each
request one transaction on an asyncpg pool of the same PostgreSQL (lock the wallet row, check,
update, insert the ledger row, commit), presence in the same Redis. Run as

    python -m bench.seed_http --port P --database-url URL --redis-url URL

It serves the benchmark's people (bench.setup.people) and nothing else: no idempotency, no
time order, no settlement rules, exactly as cheap as the older system was."""

from __future__ import annotations

import argparse
import contextlib
import time

import asyncpg
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

SEED_POOL_SIZE = 16
REDIS_CONNECTIONS_MAX = 1_000  # redis-py's default refused heartbeats at concurrency 200
RATE_COINS = 10  # audio, basic
RATE_PAISE = 100
ONLINE = "seed:presence:online"
LAST_SEEN = "seed:presence:last_seen"

BALANCE = """SELECT w.settled_coins, coalesce(e.earnings_paise, 0) AS earnings_paise
             FROM wallets w LEFT JOIN listener_earnings e ON e.listener_id = w.user_id
             WHERE w.user_id = $1"""
LOCK = "SELECT settled_coins FROM wallets WHERE user_id = $1 FOR UPDATE"
MOVE = """UPDATE wallets SET settled_coins = settled_coins + $2::bigint WHERE user_id = $1
          RETURNING settled_coins"""
LEDGER = """INSERT INTO ledger (transfer_id, user_id, unit, amount, tx_type, call_id, minute_no,
                                created_at)
            VALUES ($1::text, $2, $3, $4::bigint, $5, $6, $7, now())"""
LISTENER_BUSY = "SELECT 1 FROM calls WHERE listener_id = $1 AND status = 'ongoing' LIMIT 1"
NEW_CALL = """INSERT INTO calls (call_id, user_id, listener_id, call_type, tier, rate_coins,
                                 rate_paise, status, connected_at, billed_minutes, coins_spent)
              VALUES (nextval('calls_call_id_seq'), $1, $2, 'audio', 'basic', $3, $4,
                      'ongoing', now(), 1, $3)
              RETURNING call_id, extract(epoch FROM connected_at)::float8 AS connected_at"""
END_CALL = """UPDATE calls SET status = 'completed', end_reason = 'hangup', ended_at = now(),
                               earnings_paise = billed_minutes * rate_paise
              WHERE call_id = $1 AND status = 'ongoing'
              RETURNING user_id, listener_id, billed_minutes, coins_spent, earnings_paise"""
CREDIT = """UPDATE listener_earnings SET earnings_paise = earnings_paise + $2::bigint
            WHERE listener_id = $1"""


def refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": "Refused", "message": message}}, status_code=status)


def build(database_url: str, redis_url: str) -> FastAPI:
    held: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        held["pool"] = await asyncpg.create_pool(database_url, min_size=4, max_size=SEED_POOL_SIZE)
        held["redis"] = aioredis.from_url(redis_url, max_connections=REDIS_CONNECTIONS_MAX)
        yield
        await held["pool"].close()
        await held["redis"].aclose()

    app = FastAPI(title="the older system's way", lifespan=lifespan)
    _wallet_routes(app, held)
    _call_routes(app, held)
    return app


def _wallet_routes(app: FastAPI, held: dict) -> None:
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/wallets/{user_id}")
    async def wallet(user_id: int):
        row = await held["pool"].fetchrow(BALANCE, user_id)
        if row is None:
            return refused(404, f"no user {user_id}")
        return {"user_id": user_id, "balance_coins": row[0], "earnings_paise": row[1]}

    @app.post("/v1/wallets/{user_id}/top-ups")
    async def top_up(user_id: int, body: dict):
        amount, key = body["amount"], body.get("idempotency_key") or str(time.time_ns())
        async with held["pool"].acquire() as conn, conn.transaction():
            if await conn.fetchval(LOCK, user_id) is None:
                return refused(404, f"no user {user_id}")
            balance = await conn.fetchval(MOVE, user_id, amount)
            tid = f"ext:{user_id}:{key}"
            await conn.execute(LEDGER, tid, user_id, "coins", amount, "purchase", None, None)
        return {"transfer_id": tid, "applied": True, "user_id": user_id, "balance_coins": balance}

    @app.post("/v1/presence/{user_id}/heartbeat")
    async def heartbeat(user_id: int):
        now = time.time()
        async with held["redis"].pipeline(transaction=False) as pipe:
            pipe.sadd(ONLINE, user_id)
            pipe.zadd(LAST_SEEN, {str(user_id): now})
            await pipe.execute()
        return {"online": True}


def _call_routes(app: FastAPI, held: dict) -> None:
    @app.post("/v1/calls", status_code=201)
    async def start_call(body: dict):
        user, listener = body["user_id"], body["listener_id"]
        async with held["pool"].acquire() as conn, conn.transaction():
            balance = await conn.fetchval(LOCK, user)
            if balance is None or balance < RATE_COINS:
                return refused(402, "insufficient coins")
            if await conn.fetchval(LISTENER_BUSY, listener):
                return refused(409, "listener busy")
            call = await conn.fetchrow(NEW_CALL, user, listener, RATE_COINS, RATE_PAISE)
            await conn.execute(MOVE, user, -RATE_COINS)
            tid = f"call:{call['call_id']}:1"
            await conn.execute(LEDGER, tid, user, "coins", -RATE_COINS, "spend", call[0], 1)
        return {"call_id": call[0], "user_id": user, "listener_id": listener, "status": "ongoing"}

    @app.post("/v1/calls/{call_id}/end")
    async def end_call(call_id: int):
        async with held["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(END_CALL, call_id)
            if row is None:
                return refused(404, f"no ongoing call {call_id}")
            await conn.execute(CREDIT, row["listener_id"], row["earnings_paise"])
            tid = f"earn:call:{call_id}"
            paise = row["earnings_paise"]
            await conn.execute(
                LEDGER, tid, row["listener_id"], "paise", paise, "earn", call_id, None
            )
        return {"call_id": call_id, "status": "completed"} | dict(row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--redis-url", required=True)
    args = p.parse_args()
    app = build(args.database_url, args.redis_url)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
