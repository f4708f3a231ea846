"""The HTTP API on Ray Serve: the FastAPI app of engine/http.py as a Serve deployment whose
replicas attach to the running engine. In Serve's high-throughput mode (the default, see
engine/serve_options.py) HAProxy takes the requests and hands them to the replicas, which
listen for HTTP themselves; more replicas, or a proxy on every node, scale it with the cluster.

Two ways to run it: `start()` from `billing-engine up`, or `serve deploy` of the config
`billing-engine serve-config` prints, on a cluster whose engine runs without HTTP; `app` is the
application builder both use."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from ray import serve

from engine.http import build_app
from engine.runtime import metrics
from engine.serve_options import ServeOptions

log = logging.getLogger("billing.serving")

APP_NAME = "billing"
DEPLOYMENT_NAME = "billing_api"
IMPORT_PATH = "engine.runtime.serving:app"
ENGINE_RECHECK_S = 5.0  # how often a replica checks that its engine still runs
# Serve's per-request access log line is a tenth of a replica's CPU at saturation here; errors
# are still logged, and every request is counted in metrics.
LOGGING = {"log_level": "WARNING", "enable_access_log": False}


def _engine_getter(namespace: str):
    """`get_engine()` for the replica: it attaches once to the engine running in `namespace`."""
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
                from engine.api import Engine

                logs.configure()
                held["engine"] = engine = await Engine.attached(namespace)
            held["checked_at"] = time.monotonic()
        return engine

    return get_engine


def app(args: dict):
    """The Serve application (Serve's builder: `import_path` engine.runtime.serving:app).
    `args`: `namespace` of the engine (default "billing"), `token_sha256` of the API token
    (None: no token), and any field of ServeOptions (`replicas`, `replica_requests_max`,
    `throughput_mode`; the address is Serve's own, in the config's `http_options`)."""
    fields = ServeOptions.__dataclass_fields__
    unknown = set(args) - {"namespace", "token_sha256", *fields}
    if unknown:
        raise ValueError(f"unknown arguments of the billing app: {', '.join(sorted(unknown))}")
    namespace = args.get("namespace", "billing")
    options = ServeOptions(**{k: v for k, v in args.items() if k in fields})
    api = build_app(_engine_getter(namespace), args.get("token_sha256"), metrics.request)

    @serve.deployment(
        name=DEPLOYMENT_NAME,
        num_replicas=options.replicas,
        max_ongoing_requests=options.replica_requests_max,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": options.env()}},
        logging_config=LOGGING,
    )
    @serve.ingress(api)
    class BillingApi:
        pass

    return BillingApi.bind()


def start(namespace: str, options: ServeOptions, token_sha256: str | None = None) -> str:
    """Serve the API at http://host:port (the process has joined the cluster, and applied
    `options` before it started or joined Ray)."""
    serve.start(
        http_options={"host": options.host, "port": options.port},
        logging_config=LOGGING,
        controller_options={"runtime_env": {"env_vars": options.env()}},
    )
    args = {"namespace": namespace, "token_sha256": token_sha256} | dataclasses.asdict(options)
    serve.run(app(args), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{options.host}:{options.port}"


def config(namespace: str, options: ServeOptions, token_sha256: str | None = None) -> dict:
    """A Serve config file's content (`serve deploy`, or a KubeRay RayService's
    serveConfigV2) that serves the API of the engine running in `namespace` on the cluster's
    own Serve, with Serve's mode for the controller, HAProxy and the replicas."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": options.host, "port": options.port},
        "controller_options": {"runtime_env": {"env_vars": options.env()}},
        "logging_config": LOGGING,
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"namespace": namespace, "token_sha256": token_sha256},
                "runtime_env": {"env_vars": options.env()},
                "deployments": [
                    {
                        "name": DEPLOYMENT_NAME,
                        "num_replicas": options.replicas,
                        "max_ongoing_requests": options.replica_requests_max,
                    }
                ],
            }
        ],
    }


def stop() -> None:
    try:
        serve.shutdown()
    except Exception as e:  # noqa: BLE001 - stopping: say it, carry on
        log.warning("Serve did not shut down cleanly: %s", e)
