"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time

WAIT_S_MAX = 20.0


async def eventually(predicate, timeout_s: float = WAIT_S_MAX, what: str = "condition"):
    """Poll an (async or plain) predicate until it holds; every wait in a test is bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(0.02)


async def audit_violations(pool) -> dict[str, int]:
    from persistence.audit import run_audit

    return {name: n for name, n in await run_audit(pool) if n}
