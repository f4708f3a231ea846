"""`billing-engine up` and `serve-config`: the engine as a service, its HTTP API on Ray Serve,
a start that makes good what a crashed run left, and the Serve config for a cluster's own
Serve."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from rich.console import Console

from actors.errors import BillingError
from engine.cli.common import config_of, console, on_running_engine, require_running


def run_up(args: argparse.Namespace) -> int:
    from engine.runtime import cluster

    # The key goes no further than this process: nothing it starts (Ray, its workers, the
    # embedded PostgreSQL and Redis, HAProxy) inherits it; the replicas get its digest.
    fixed = _env_token_keys()
    config = config_of(args, dashboard=args.dashboard)
    options = _serve_options(args)
    record = cluster.recorded(config.data_dir)
    if record is not None:
        raise BillingError(
            f"an engine is already up on data dir {config.data_dir} (process {record.get('pid')}, "
            f"Ray at {record['ray_address']}): stop it first, or give another --data-dir"
        )
    _reap_leftovers(config.data_dir)
    if args.http and not port_free(options.host, options.port):
        raise BillingError(
            f"{options.host}:{options.port} is in use: give another --http-port, or --no-http"
        )
    run_dir = None
    own_ray = cluster.find(config.ray_address, config.namespace, config.data_dir).via == "own"
    if args.http and options.throughput_mode and own_ray:
        import engine.http.haproxy as haproxy

        run_dir = haproxy.RunDir(options.request_timeout_s)
        os.environ.update(run_dir.env())
    # Serve's mode is read from the environment when Serve is imported, in every process of
    # the Ray this process starts: set before anything imports Ray.
    options.apply()
    door = Door(args.insecure_no_auth, fixed)
    try:
        return asyncio.run(_serve(config, options if args.http else None, door, run_dir))
    finally:
        if run_dir is not None:
            from engine import leftovers

            run_dir.remove()
            leftovers.forget(config.data_dir, leftovers.RUN_DIR)


class Door:
    """How `up` guards the HTTP API: keys (the default), or none (`--insecure-no-auth`)."""

    def __init__(self, insecure: bool, fixed: list) -> None:
        self.insecure = insecure
        self.fixed = fixed  # keys from the environment (BILLING_API_TOKEN), kept nowhere else

    async def arguments(self, pool) -> dict:
        """The Serve app's `auth`, `keys` and `fixed_keys` arguments: the live keys' digests."""
        from engine import keys

        if self.insecure:
            return {"auth": "none"}
        return {
            "auth": "keys",
            "keys": [k.as_arg() for k in await keys.live(pool)],
            "fixed_keys": [k.as_arg() for k in self.fixed],
        }

    async def open(self, engine, url: str | None) -> dict:
        """The arguments, once the first `up` on a database has made its first key and printed
        it (the one time it is shown); a warning at every start without keys."""
        from engine import keys
        from persistence import api_keys

        pool = await engine.pool()
        if self.insecure:
            warn_insecure(url)
        elif not await api_keys.any_made(pool):
            made = await keys.create(pool, keys.FIRST_KEY_NAME, keys.SCOPES)
            console.print(
                f"API key {made['name']!r} made ({', '.join(made['scopes'])}); shown this "
                f"once, keep it secret:\n  {made['key']}\n"
                f'use it: curl -H "Authorization: Bearer {made["key"]}" '
                f"{url or 'http://HOST:PORT'}/v1/...\n"
                "more keys: billing-engine keys create NAME --scopes read,calls"
            )
        out = await self.arguments(pool)
        if out["auth"] == "keys" and not out["keys"] and not out["fixed_keys"]:
            console.print(
                "[yellow]no live API key: every request is refused until one is made "
                "(`billing-engine keys create NAME --scopes ...`)[/]"
            )
        return out


def warn_insecure(url: str | None, out=None) -> None:
    (out or console).print(
        "[bold red]WARNING: --insecure-no-auth: the HTTP API needs no key; anyone who "
        f"reaches {url or 'it'} can move money[/]"
    )


def _env_token_keys() -> list:
    """BILLING_API_TOKEN, taken out of the environment, as a key with every scope."""
    from engine.keys import SCOPES, Key, digest

    token = os.environ.pop("BILLING_API_TOKEN", None)
    return [Key("env-token", digest(token), SCOPES)] if token else []


async def _serve(config, options, door: Door, run_dir=None) -> int:
    """`up`: the engine, and its HTTP API unless `options` is None, until SIGINT/SIGTERM."""
    from engine.api import Engine
    from engine.runtime import cluster

    engine = await Engine(config).start()
    if engine.attached:
        await engine.stop()
        raise BillingError(
            f"an engine already runs in Ray namespace {engine.config.namespace} at "
            f"{cluster.address()}: attach to it instead, or set BILLING_NAMESPACE"
        )
    if run_dir is not None:
        from engine import leftovers

        # Remembered once the engine holds the data dir (its start stops and removes what a
        # dead run left there): a crash from here on, the next `up` removes it.
        leftovers.remember(config.data_dir, leftovers.RUN_DIR, marker=run_dir.path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cfg = engine.config.public()
    console.print(
        f"[bold]billing engine up[/] placement={cfg['placement']} "
        f"ray={cluster.address()} namespace={cfg['namespace']}"
    )
    http = None
    try:
        url = None if options is None else f"http://{options.host}:{options.port}"
        auth = await door.open(engine, url)
        if options is not None:
            http = await _start_http(cfg["namespace"], options, config.data_dir, auth)
        urls = cluster.dashboard_urls()
        if urls["dashboard"]:
            console.print(f"dashboard={urls['dashboard']} metrics={' '.join(urls['metrics'])}")
        console.print("inspect it with: billing-engine inspect shards|writer|call ID|wallet ID")
        await stop.wait()
    finally:
        console.print("stopping: draining the writer")
        if http is not None:
            await asyncio.to_thread(_stop_http, engine, config.data_dir)
        await engine.stop()
    console.print("stopped cleanly")
    return 0


def _reap_leftovers(data_dir: str) -> None:
    """Stop what a run on this data dir that died left running (its HAProxy holding the HTTP
    port, its embedded servers), if no live process holds the data dir."""
    from actors.errors import DataDirInUse
    from engine import leftovers
    from engine.embedded import DataDirLock

    try:
        lock = DataDirLock(data_dir).acquire()
    except DataDirInUse:
        return  # its holder is alive: what it started is its own
    try:
        for what in leftovers.reap(data_dir):
            console.print(f"stopped {what}, left running by a run that died")
    finally:
        lock.release()


def _stop_http(engine, data_dir: str) -> None:
    """Stop taking requests. Serve's own shutdown waits 30 s for its controller here; on a Ray
    of our own, which stops with the engine, stopping HAProxy is enough (Ray would leave it
    running, holding the port)."""
    from engine import leftovers

    if engine.owns_ray:
        leftovers.stop(leftovers.running(data_dir, "haproxy"))
        leftovers.forget(data_dir, "haproxy")
    else:
        import engine.http.serving as serving

        serving.stop()


async def _start_http(namespace: str, options, data_dir: str, auth: dict) -> str:
    import engine.http.serving as serving
    from engine import leftovers

    # Serve says at INFO what it starts; `up` prints the one line that matters.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    url = await asyncio.to_thread(serving.start, namespace, options, auth)
    for folder in leftovers.haproxy_folders():
        leftovers.remember(data_dir, "haproxy", marker=folder)
    mode = "throughput (HAProxy)" if options.throughput_mode else "Serve's proxy"
    key = "none (--insecure-no-auth)" if auth["auth"] == "none" else "required"
    console.print(f"http={url} docs={url}/docs key={key} replicas={options.replicas} mode={mode}")
    return url


def _serve_options(args: argparse.Namespace):
    import engine.http.options as serve_options

    return serve_options.from_env(
        host=args.http_host,
        port=args.http_port,
        replicas=args.http_replicas,
        throughput_mode=args.throughput_mode,
    )


def print_serve_config(args: argparse.Namespace) -> int:
    """Print the Serve config that serves the API of the engine running at --address, with
    the digests of its live keys (read from its database), or refuse naming why."""
    import yaml

    import engine.http.serving as serving

    fixed = _env_token_keys()
    config = config_of(args)
    require_running(config)

    async def auth_of(engine) -> dict:
        out = await Door(args.insecure_no_auth, fixed).arguments(await engine.pool())
        if out["auth"] == "none":
            warn_insecure(None, Console(stderr=True))  # stdout is the config
        elif not out["keys"] and not out["fixed_keys"]:
            raise BillingError(
                f"the engine in Ray namespace {engine.config.namespace} has no live API key: "
                "make one (`billing-engine keys create NAME --scopes ...`), or pass "
                "--insecure-no-auth to serve it without keys"
            )
        return {"namespace": engine.config.namespace, "auth": out}

    found = on_running_engine(args, auth_of)
    out = serving.config(found["namespace"], _serve_options(args), found["auth"])
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0


def port_free(host: str, port: int) -> bool:
    """Can a server listen at host:port? Asked the way servers bind (SO_REUSEADDR, as HAProxy
    and uvicorn do): a port whose last connections wait in TIME_WAIT after a stop or a crash
    is free; one with a listener is not."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
