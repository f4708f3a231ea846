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


async def restart_actor(name: str, namespace: str = "billing") -> None:
    """Kill a named actor (Ray restarts it) and return once its successor answers. `ray.kill`
    is asynchronous: without waiting for a new process, the old one may still answer."""
    import os

    import ray

    def pid_of(h):
        return h.__ray_call__.remote(lambda self: os.getpid())

    h = ray.get_actor(name, namespace=namespace)
    before = await pid_of(h)
    ray.kill(h, no_restart=False)

    async def new_pid():
        try:
            return await pid_of(h) != before
        except Exception:  # noqa: BLE001 - restarting
            return False

    await eventually(new_pid, what=f"{name} restarted")


async def answered(ask):
    """`ask()`'s answer, or None while the actor behind it restarts. A refusal or a broken rule
    of money is an answer too, and is raised."""
    from actors.errors import BillingError, InvariantViolation

    try:
        return await ask()
    except (BillingError, InvariantViolation):
        raise
    except Exception:  # noqa: BLE001 - restarting
        return None
