"""Joining the Ray cluster, and the engine's writer actor: how the rest of the engine reaches
Ray without importing it."""

from __future__ import annotations

import logging
import os

import ray

from engine.runtime.raycalls import WRITER_NAME, actor, actor_or_none, connect, remote
from engine.runtime.writer_actor import WriterActor

WRITER_OPTIONS = {"max_restarts": -1, "max_concurrency": 1000, "num_cpus": 0}


def join(address: str | None, namespace: str) -> bool:
    """Join (or start, with no address) a Ray cluster; True if this call did."""
    if ray.is_initialized():
        return False
    ray.init(
        address=address,
        namespace=namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=os.environ.get("BILLING_LOG_ACTORS") == "1",
    )
    return True


def join_running(address: str | None) -> None:
    """Join the cluster an engine runs in (`address`, or the local one), if not joined yet.
    Without an address and with no local cluster, nothing is joined: an engine started next
    starts its own."""
    if ray.is_initialized():
        return
    try:
        connect(address or "auto")
    except ConnectionError:
        if address:
            raise ConnectionError(f"cannot reach the Ray cluster at {address}") from None


def leave() -> None:
    ray.shutdown()


def address() -> str:
    """The address of the cluster this process joined, for another process to join."""
    return ray.get_runtime_context().gcs_address


def kill_actor(name: str, namespace: str, restart: bool = True) -> bool:
    """Kill the named actor (Ray restarts it unless `restart` is false). False if there is
    none by that name."""
    h = actor_or_none(name, namespace)
    if h is None:
        return False
    ray.kill(h, no_restart=not restart)
    return True


class Writer:
    """The engine's one `writer` actor, named in its namespace."""

    def __init__(self, handle) -> None:
        self._h = handle

    @classmethod
    def running(cls, namespace: str) -> Writer | None:
        h = actor_or_none(WRITER_NAME, namespace)
        return None if h is None else cls(h)

    @classmethod
    async def start(cls, database_url: str, limits, meta: dict, namespace: str) -> Writer:
        h = (
            ray.remote(WriterActor)
            .options(name=WRITER_NAME, namespace=namespace, **WRITER_OPTIONS)
            .remote(database_url, limits, meta)
        )
        await remote(h.ping.remote())
        return cls(h)

    @property
    def key(self):
        """The actor's identity: the same for every handle to this actor, new on a restart of
        the engine."""
        return self._h._actor_id

    def is_current(self, namespace: str) -> bool:
        """Is this still the writer running in `namespace` (not one stopped since)?"""
        running = actor_or_none(WRITER_NAME, namespace)
        return running is not None and running._actor_id == self._h._actor_id

    async def describe(self) -> dict:
        return await remote(self._h.describe.remote())

    async def drain(self) -> None:
        await remote(self._h.drain.remote())

    async def state(self) -> dict:
        return await remote(self._h.state.remote())

    async def jobs(self) -> dict:
        return await remote(self._h.jobs.remote())

    def record_job(self, run: dict) -> None:
        self._h.record_job.remote(run)

    def stop(self) -> None:
        ray.kill(self._h, no_restart=True)


__all__ = ["Writer", "actor", "address", "connect", "join", "join_running", "kill_actor", "leave"]
