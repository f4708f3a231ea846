"""Reading the live state of a running engine's actors, by name, from another process."""

from __future__ import annotations

import ray

from actors.errors import InvalidInput, UnknownUser
from engine.runtime.raycalls import (
    NAMESPACE,
    WRITER_NAME,
    actor,
    actor_or_none,
    call_name,
    remote,
    shard_name,
    shard_of,
    wallet_name,
)

SHARDS_MAX = 4096


def running_shards(namespace: str = NAMESPACE) -> list:
    shards = []
    while len(shards) < SHARDS_MAX:
        h = actor_or_none(shard_name(len(shards)), namespace)
        if h is None:
            break
        shards.append(h)
    return shards


async def inspect_running(
    what: str, ident: int | None, now: float, ns: str = NAMESPACE
) -> dict | list:
    if actor_or_none(WRITER_NAME, ns) is None:
        address = ray.get_runtime_context().gcs_address
        raise InvalidInput(f"no billing engine is running in Ray namespace {ns!r} at {address}")
    if what == "writer":
        return await remote(actor(WRITER_NAME, ns).state.remote())
    if what == "jobs":
        return await remote(actor(WRITER_NAME, ns).jobs.remote())
    shards = running_shards(ns)
    if what == "shards":
        if shards:
            return [await remote(s.state.remote()) for s in shards]
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == ns
        ]
        return {
            "placement": "actor-per-call",
            "call_actors": sum(n.startswith("call:") for n in names),
            "wallet_actors": sum(n.startswith("wallet:") for n in names),
        }
    if ident is None:
        raise InvalidInput(f"inspect {what} needs an id")
    if what == "wallet":
        if shards:
            shard = shards[shard_of(ident, len(shards))]
            return await remote(shard.inspect_wallet.remote(ident, now))
        h = actor_or_none(wallet_name(ident), ns)
        if h is None:
            raise UnknownUser(f"no wallet actor for user {ident} (it has no ongoing call)")
        return await remote(h.inspect_wallet.remote(ident, now))
    for s in shards:
        out = await remote(s.inspect_call.remote(ident, now))
        if out is not None:
            return out
    h = None if shards else actor_or_none(call_name(ident), ns)
    if h is None:
        return await stored_call(ident, ns)
    return await remote(h.state.remote(now))


async def stored_call(call_id: int, ns: str) -> dict:
    """A call no actor holds (ended, or never made): its row in the engine's database."""
    from persistence import store
    from persistence.db import close_pools, get_pool

    meta = await remote(actor(WRITER_NAME, ns).describe.remote())
    try:
        row = await store.read_call(await get_pool(meta["database_url"]), call_id)
    finally:
        await close_pools()
    return row | {"next_tick_at": None, "answered_from": "stored"}
