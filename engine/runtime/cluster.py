"""Joining the Ray cluster, and the engine's writer actor: how the rest of the engine reaches
Ray without importing it."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from dataclasses import dataclass

import ray

from actors.errors import EngineUnavailable
from engine import private, record
from engine.runtime.ray_actors.writer_actor import WriterActor
from engine.runtime.raycalls import (
    WRITER_NAME,
    actor,
    actor_or_none,
    join_ray,
    loopback_only,
    remote,
)

log = logging.getLogger("billing.cluster")

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


# Ray says once per process that a local cluster uses token authentication; the engine handles
# the token (see `connect`), so that is noise on every command.
logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)

_dashboard_url: str | None = None  # of the Ray this process started, if it runs one


@dataclass(frozen=True)
class Joined:
    """What `join` did: `started` if this process called ray.init (and so shuts Ray down
    when it stops); the cluster's `address`; the `namespace` the engine runs in; `via` says
    how the cluster was found ("given", "record", "own", "already")."""

    started: bool
    address: str
    namespace: str
    via: str


@dataclass(frozen=True)
class Found:
    """Where `join` would go: the cluster's `address` (None: a local Ray of our own), the
    `namespace`, and `via` ("given", "record", "own", "already")."""

    address: str | None
    namespace: str
    via: str


def find(address: str | None, namespace: str, data_dir: str | None = None) -> Found:
    """The cluster a billing engine runs in, one way for every client: this process's Ray if
    it has joined one, the `address` given (RAY_ADDRESS or --address), else the engine recorded
    in `data_dir/engine.json` by the process that started it (its namespace too), else a local
    Ray of our own. Never a cluster found by chance."""
    if ray.is_initialized():
        return Found(_current_address(), namespace, "already")
    if address:
        return Found(address, namespace, "given")
    record = recorded(data_dir) if data_dir is not None else None
    if record is not None:
        return Found(record["ray_address"], record["namespace"], "record")
    return Found(None, namespace, "own")


@contextlib.contextmanager
def lean_ray(dashboard: bool, logs_to_driver: bool):
    """A local Ray started inside starts only what is used of it. Without `logs_to_driver`,
    no log monitor: it tails every worker's log files ten times a second to forward their
    lines to the driver (84 CPU-s of one earlier test run). Without `dashboard`, no API server
    (Ray's dashboard and its job and state APIs: `ray list`, `serve deploy` to this Ray) and
    no autoscaler monitor (a local Ray never scales; `ray status` asks it): 43 and 20 CPU-s of
    one test run of 20-odd Rays, each a Python process that imports Ray whole. Ray 2's
    `ray.init` has no switch for any of them (`ray start --include-log-monitor=false` has one)
    and tolerates a missing API server; where the Ray at hand has no such step, nothing
    changes."""
    from ray._private import node

    left_out = [] if logs_to_driver else ["start_log_monitor"]
    if not dashboard:
        left_out += ["start_api_server", "start_monitor"]
    saved = {name: getattr(node.Node, name) for name in left_out if hasattr(node.Node, name)}
    for name in saved:
        setattr(node.Node, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        for name, start in saved.items():
            setattr(node.Node, name, start)


def join(
    address: str | None,
    namespace: str,
    data_dir: str | None = None,
    dashboard: bool = False,
    found: Found | None = None,
    on_network: bool = False,
) -> Joined:
    """Join the cluster `find` names (or `found`, if the caller found it already). An address
    that does not answer within CONNECT_TIMEOUT_S is an `EngineUnavailable` naming it. A Ray
    of our own runs Ray's dashboard if `dashboard`, and listens on loopback unless
    `on_network` (start_own)."""
    where = found or find(address, namespace, data_dir)
    address, namespace, via = where.address, where.namespace, where.via
    if via == "already":
        return Joined(False, address, namespace, via)
    if address:
        if address != "auto" and not reachable(address):
            raise EngineUnavailable(f"cannot reach the Ray cluster at {address}")
        join_ray(address, namespace)
        # Say where: a client that attached to the wrong engine should see it at once.
        source = "given" if via == "given" else f"recorded in {data_dir}/{RECORD_NAME}"
        print(
            f"billing engine: joined Ray at {address} ({source}), namespace {namespace}",
            file=sys.stderr,
        )
        return Joined(True, _current_address(), namespace, via)
    start_own(namespace, dashboard, on_network)
    return Joined(True, _current_address(), namespace, "own")


def start_own(namespace: str, dashboard: bool = False, on_network: bool = False, **more):
    """Start a local Ray of the engine's own, private to this machine's user: every port on
    127.0.0.1 unless `on_network` (Ray's metrics export needs no token: on the machine's
    address, anyone who reaches it reads the engine's counts), its session files (logs,
    sockets) under a folder only this user may enter (Ray makes its own 0777), and Ray's
    token file readable by this user alone. `more` goes to ray.init."""
    global _dashboard_url
    if not on_network:
        loopback_only()
    to_driver = os.environ.get("BILLING_LOG_ACTORS") == "1"
    with lean_ray(dashboard, to_driver):
        context = ray.init(
            address="local",
            namespace=namespace,
            include_dashboard=dashboard,
            logging_level=logging.WARNING,
            log_to_driver=to_driver,
            _temp_dir=os.path.join(private.tmp_folder(), "ray"),
            **more,
        )
    with contextlib.suppress(OSError):
        os.chmod(os.path.expanduser(RAY_TOKEN_FILE), 0o600)
    _dashboard_url = getattr(context, "dashboard_url", None) or None
    return context


RAY_TOKEN_FILE = "~/.ray/auth_token"


def dashboard_urls() -> dict:
    """Where to look at this cluster: Ray's dashboard, and each node's Prometheus endpoint
    (where the engine's `ray_billing_*` metrics are)."""
    dashboard = _dashboard_url
    metrics = [
        f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        for n in ray.nodes()
        if n.get("Alive") and n.get("MetricsExportPort")
    ]
    return {"dashboard": f"http://{dashboard}" if dashboard else None, "metrics": metrics}


def _current_address() -> str:
    return ray.get_runtime_context().gcs_address


RECORD_NAME = record.NAME


def write_record(data_dir: str, namespace: str, **more) -> str:
    """Record in `data_dir` the cluster and namespace of the engine this process started, for
    another process to attach to (`billing-engine up`, then a script, inspect, jobs, stop);
    `more` adds what such a process may need without Ray (the embedded database's URL)."""
    return record.write(data_dir, ray_address=address(), namespace=namespace, **more)


def remove_record(data_dir: str) -> None:
    record.remove(data_dir)


def recorded(data_dir: str) -> dict | None:
    """The engine recorded in `data_dir`, if its cluster still answers (a record left by an
    engine that died is not one)."""
    found = record.read(data_dir)
    addr = (found or {}).get("ray_address")
    if not isinstance(addr, str):
        return None
    return found if reachable(addr, timeout_s=1.0) else None


def leave() -> None:
    ray.shutdown()


def address() -> str:
    """The address of the cluster this process joined, for another process to join."""
    return _current_address()


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
    "Joined",
    "Writer",
    "actor",
    "address",
    "join_ray",
    "join",
    "kill_actor",
    "leave",
    "recorded",
    "remove_record",
    "write_record",
]
