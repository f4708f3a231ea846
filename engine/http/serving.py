"""The HTTP API on Ray Serve: the FastAPI app of engine/http/app.py as a Serve deployment whose
replicas attach to the running engine. In Serve's high-throughput mode (the default, see
engine/http/options.py) HAProxy takes the requests and hands them to the replicas, which
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

import engine.http.bounds as http_bounds
from engine import keys
from engine.http.app import build_app
from engine.http.door import Keys
from engine.http.options import ServeOptions
from engine.keys import SCOPES, FailedKeys, Key, KeyRing
from engine.runtime import metrics
from persistence.door_counts import FailureCounts

log = logging.getLogger("billing.serving")

APP_NAME = "billing"
DEPLOYMENT_NAME = "billing_api"
IMPORT_PATH = "engine.http.serving:app"
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
                held["engine"] = engine = await Engine.attach(namespace)
            held["checked_at"] = time.monotonic()
        return engine

    return get_engine


def app(args: dict):
    """The Serve application (Serve's builder: `import_path` engine.http.serving:app).
    `args`: `namespace` of the engine (default "billing"); `auth`: "keys" (the default) or
    "none" (`--insecure-no-auth`); `keys`, the live keys' digests and scopes when deployed (the
    replicas read them again from PostgreSQL every KEYS_REFRESH_S) and `fixed_keys`, keys kept
    nowhere else (BILLING_API_TOKEN's); any field of ServeOptions (`replicas`, the door's
    bounds, ...; the address is Serve's own, in the config's `http_options`). `token_sha256`,
    as configs printed before keys had it, is a fixed key with every scope."""
    fields = ServeOptions.__dataclass_fields__
    known = {"namespace", "auth", "keys", "fixed_keys", "token_sha256", *fields}
    unknown = set(args) - known
    if unknown:
        raise ValueError(f"unknown arguments of the billing app: {', '.join(sorted(unknown))}")
    namespace = args.get("namespace", "billing")
    options = ServeOptions(**{k: v for k, v in args.items() if k in fields})
    get_engine = _engine_getter(namespace)
    api = build_app(get_engine, door_keys(args, get_engine, options), metrics.request,
                    body_bytes_max=options.body_bytes_max)  # fmt: skip

    @serve.deployment(
        name=DEPLOYMENT_NAME,
        num_replicas=options.replicas,
        max_ongoing_requests=options.replica_requests_max,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": options.env()}},
        logging_config=LOGGING,
    )
    @serve.ingress(api)
    class BillingApi:
        def __init__(self) -> None:
            # Before Serve starts this replica's own servers (HTTP for direct ingress, and
            # gRPC for calls between deployments).
            http_bounds.install(
                options.headers_max, options.header_bytes_max, options.request_timeout_s
            )
            grpc_on_loopback()

    return BillingApi.bind()


def grpc_on_loopback() -> None:
    """On a node whose address is 127.0.0.1 (a Ray of the engine's own), bind the replica's
    gRPC server for calls between deployments there too: Serve binds it on every interface
    (`[::]:0`), where only Ray's token guards it. On any other node, as Serve does."""
    import ray
    from ray.serve._private import replica

    if ray.util.get_node_ip_address() != "127.0.0.1":
        return
    bind = replica.add_port_to_grpc_server
    replica.add_port_to_grpc_server = lambda server, address: bind(
        server, address.replace("[::]", "127.0.0.1")
    )


def door_keys(args: dict, get_engine, options: ServeOptions) -> Keys | None:
    """The keys a replica checks (None: no authentication), kept fresh from the engine's
    PostgreSQL."""
    auth = args.get("auth", "keys")
    if auth not in ("keys", "none"):
        raise ValueError(f"auth must be 'keys' or 'none', got {auth!r}")
    if auth == "none":
        return None
    stored = [Key.from_arg(k) for k in args.get("keys") or ()]
    fixed = [Key.from_arg(k) for k in args.get("fixed_keys") or ()]
    if args.get("token_sha256"):
        fixed.append(Key("token", args["token_sha256"], SCOPES))

    async def read_live() -> list[Key]:
        return await keys.live(await (await get_engine()).pool())

    counts: list = []  # the replica's one FailureCounts, made at its first wrong key

    async def count_shared(source: str, window_s: int):
        if not counts:
            counts.append(FailureCounts((await get_engine()).redis_url))
        return await counts[0].count(source, window_s)

    failed = FailedKeys(options.key_failures_max, options.key_failure_window_s, shared=count_shared)
    return Keys(KeyRing(stored, fixed), read_live, failed)


def start(namespace: str, options: ServeOptions, auth: dict) -> str:
    """Serve the API at http://host:port (the process has joined the cluster, and applied
    `options` before it started or joined Ray); `auth`: the app's `auth`, `keys` and
    `fixed_keys` arguments."""
    serve.start(
        http_options=http_options(options),
        logging_config=LOGGING,
        controller_options={"runtime_env": {"env_vars": options.env()}},
    )
    args = {"namespace": namespace} | auth | dataclasses.asdict(options)
    serve.run(app(args), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{options.host}:{options.port}"


def http_options(options: ServeOptions) -> dict:
    """Serve's HTTP options: the address, and how long an idle kept-alive connection stays."""
    return {
        "host": options.host,
        "port": options.port,
        "keep_alive_timeout_s": options.idle_timeout_s,
    }


def config(namespace: str, options: ServeOptions, auth: dict) -> dict:
    """A Serve config file's content (`serve deploy`, or a KubeRay RayService's
    serveConfigV2) that serves the API of the engine running in `namespace` on the cluster's
    own Serve, with Serve's mode for the controller, HAProxy and the replicas, and the keys'
    digests (`auth`: the app's `auth`, `keys` and `fixed_keys` arguments)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": http_options(options),
        "controller_options": {"runtime_env": {"env_vars": options.env()}},
        "logging_config": LOGGING,
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"namespace": namespace} | auth | dataclasses.asdict(options),
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
