"""The engine behind the older API: attached to a running one, or started here.

From a plain script with only environment variables set: with `RAY_ADDRESS`, or with
`billing-engine up` running on the same data dir (it records itself in engine.json there), the
services attach to that engine; with none running they start one on the configured or embedded
defaults, which then lives as long as the process.
"""

from __future__ import annotations

import asyncio
import weakref

from actors.errors import InvalidInput
from engine.api import Engine
from engine.config import from_env

# One engine handle per event loop: each asyncio.run() of the older examples gets its own.
_engines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def engine() -> Engine:
    loop = asyncio.get_running_loop()
    e = _engines.get(loop)
    if e is None or not e.is_current():
        # Engine.start() joins RAY_ADDRESS, else the engine recorded in the data dir; with
        # neither it starts a local Ray and an engine of its own.
        e = await Engine(from_env()).start()
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
