"""Joining the Ray cluster, and the engine's writer actor: how the rest of the engine reaches
Ray without importing it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket

import ray

from actors.errors import EngineUnavailable
from engine.runtime.raycalls import WRITER_NAME, actor, actor_or_none, connect, remote
from engine.runtime.writer_actor import WriterActor

WRITER_OPTIONS = {"max_restarts": -1, "max_concurrency": 1000, "num_cpus": 0}


# How long a client waits for a Ray cluster's address to answer before it says so.
CONNECT_TIMEOUT_S = 5.0


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Does something listen at `address` (host:port, or ray://host:port)?"""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        return False


def local_cluster(temp_dir: str | None = None) -> str | None:
    """The address `ray start` last recorded on this machine, if it still answers. A head
    that died leaves its record behind: that ghost is not a cluster."""
    try:
        address = ray._private.utils.read_ray_address(temp_dir)
    except Exception:  # noqa: BLE001 - no record, or a Ray that keeps it elsewhere
        return None
    return address if address and reachable(address, timeout_s=1.0) else None


def join(address: str | None, namespace: str) -> bool:
    """Join the Ray cluster at `address`, or start a local one of our own with none (never a
    cluster found by chance). True if this call did either. An address that does not answer
    within CONNECT_TIMEOUT_S is an `EngineUnavailable` naming it."""
    if ray.is_initialized():
        return False
    if address is not None and address != "auto" and not reachable(address):
        raise EngineUnavailable(f"cannot reach the Ray cluster at {address}")
    ray.init(
        address=address or "local",
        namespace=namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=os.environ.get("BILLING_LOG_ACTORS") == "1",
    )
    return True


RECORD_NAME = "engine.json"


def write_record(data_dir: str, namespace: str) -> str:
    """Record in `data_dir` the cluster and namespace of the engine this process started, for
    another process to attach to (`billing-engine up`, then a script, inspect, jobs)."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, RECORD_NAME)
    with open(path + ".tmp", "w") as f:
        json.dump({"ray_address": address(), "namespace": namespace, "pid": os.getpid()}, f)
    os.replace(path + ".tmp", path)
    return path


def remove_record(data_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(data_dir, RECORD_NAME))


def recorded(data_dir: str) -> dict | None:
    """The engine recorded in `data_dir`, if its cluster still answers (a record left by an
    engine that died is not one)."""
    try:
        with open(os.path.join(data_dir, RECORD_NAME)) as f:
            record = json.load(f)
        addr = record["ray_address"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if reachable(addr, timeout_s=1.0) else None


def running_address(address: str | None, data_dir: str, temp_dir: str | None = None) -> str | None:
    """Where a running engine is: `address`, else the engine recorded in `data_dir`, else the
    cluster `ray start` recorded on this machine; only what answers."""
    if address:
        return address
    record = recorded(data_dir)
    return record["ray_address"] if record is not None else local_cluster(temp_dir)


def join_running(address: str | None, data_dir: str, temp_dir: str | None = None) -> str | None:
    """Join the cluster a running engine is in (see `running_address`), if not joined yet;
    returns the address joined. With none, nothing is joined: an engine started next starts
    its own. An address given that does not answer is an `EngineUnavailable` naming it."""
    if ray.is_initialized():
        return None
    address = running_address(address, data_dir, temp_dir)
    if address is None:
        return None
    if not reachable(address):
        raise EngineUnavailable(f"cannot reach the Ray cluster at {address}")
    connect(address)
    return address


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


__all__ = [
    "Writer",
    "actor",
    "address",
    "connect",
    "join",
    "join_running",
    "kill_actor",
    "leave",
    "recorded",
    "remove_record",
    "running_address",
    "write_record",
]
