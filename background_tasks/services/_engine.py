"""The engine behind the older API: attached to a running one, or started here.

From a plain script with only environment variables set: with `RAY_ADDRESS` (or a local Ray
cluster running `billing-engine up`) the services attach to that engine, in namespace
`billing`; with none running they start one on the configured or embedded defaults, which then
lives as long as the process.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from actors.errors import InvalidInput
from engine.api import Engine, join_cluster
from engine.config import from_env

# One engine handle per event loop: each asyncio.run() of the older examples gets its own.
_engines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def engine() -> Engine:
    loop = asyncio.get_running_loop()
    e = _engines.get(loop)
    if e is None or not e.is_current():
        # With no cluster to join, Engine.start() starts a local one and an engine in it.
        config = from_env()
        join_cluster(os.environ.get("RAY_ADDRESS"), config.data_dir)
        e = await Engine(config).start()
        _engines[loop] = e
    return e


def call_id_of(call) -> int:
    """The call id from a `user_calls` row (asyncpg Record) or a dict with the same keys."""
    try:
        call_id = call["call_id"]
    except (KeyError, TypeError, IndexError):
        raise InvalidInput(
            f"call must be a user_calls row or a dict with call_id, got {call!r}"
        ) from None
    if type(call_id) is not int or call_id <= 0:
        raise InvalidInput(f"call_id must be a positive integer, got {call_id!r}")
    return call_id
