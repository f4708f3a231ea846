"""The HTTP API on Ray Serve: the FastAPI app of engine/http.py as a Serve deployment whose
replicas attach to the running engine, behind Serve's HTTP proxy. More replicas, or a proxy on
every node, scale it with the cluster."""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve

from engine.http import build_app
from engine.runtime import metrics

log = logging.getLogger("billing.serving")

APP_NAME = "billing"
DEPLOYMENT_NAME = "billing_api"
REPLICAS = 1  # API replicas; each holds one attached Engine
REQUESTS_PER_REPLICA_MAX = 1_000  # Serve queues requests beyond this per replica
ENGINE_RECHECK_S = 5.0  # how often a replica checks that its engine still runs


def _application(namespace: str, token_sha256: str | None, replicas: int):
    """The Serve application: built here, pickled to each replica, where `get_engine` attaches
    once to the engine running in `namespace`."""
    held: dict = {}

    async def get_engine():
        # Whether the engine is still the one running is a lookup in Ray's GCS that blocks
        # the replica's event loop: asked at most every ENGINE_RECHECK_S, not per request.
        engine = held.get("engine")
        now = time.monotonic()
        if engine is not None and now - held["checked_at"] < ENGINE_RECHECK_S:
            return engine
        lock = held.setdefault("lock", asyncio.Lock())
        async with lock:
            engine = held.get("engine")
            if engine is None or not engine.is_current():
                from engine import logs
                from engine.api import attached_engine

                logs.configure()
                held["engine"] = engine = await attached_engine(namespace)
            held["checked_at"] = time.monotonic()
        return engine

    app = build_app(get_engine, token_sha256, metrics.request)

    @serve.deployment(
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        max_ongoing_requests=REQUESTS_PER_REPLICA_MAX,
        ray_actor_options={"num_cpus": 0},
    )
    @serve.ingress(app)
    class BillingApi:
        pass

    return BillingApi.bind()


def start(
    namespace: str,
    host: str,
    port: int,
    token_sha256: str | None = None,
    replicas: int = REPLICAS,
) -> str:
    """Serve the API at http://host:port (the process must have joined the cluster)."""
    serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
    serve.run(
        _application(namespace, token_sha256, replicas),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )
    return f"http://{host}:{port}"


def stop() -> None:
    try:
        serve.shutdown()
    except Exception as e:  # noqa: BLE001 - stopping: say it, carry on
        log.warning("Serve did not shut down cleanly: %s", e)
