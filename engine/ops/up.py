"""`billing-engine up` and `serve-config`: the engine as a service, its HTTP API on Ray Serve,
a start that makes good what a crashed run left, and the Serve config for a cluster's own
Serve."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from actors.errors import BillingError
from engine.ops.cli import _config, _require_running, console


def run_up(args: argparse.Namespace) -> int:
    from engine.runtime import cluster

    config = _config(args, dashboard=args.dashboard)
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
    # Serve's mode is read from the environment when Serve is imported, in every process of
    # the Ray this process starts: set before anything imports Ray.
    options.apply()
    return asyncio.run(_serve(config, options if args.http else None))


async def _serve(config, options) -> int:
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
        if options is not None:
            http = await _start_http(cfg["namespace"], options, config.data_dir)
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
        from engine.runtime import serving

        serving.stop()


async def _start_http(namespace: str, options, data_dir: str) -> str:
    from engine import leftovers
    from engine.runtime import serving

    # Serve says at INFO what it starts; `up` prints the one line that matters.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    digest = _token_digest()
    url = await asyncio.to_thread(serving.start, namespace, options, digest)
    for folder in leftovers.haproxy_folders():
        leftovers.remember(data_dir, "haproxy", marker=folder)
    mode = "throughput (HAProxy)" if options.throughput_mode else "Serve's proxy"
    console.print(
        f"http={url} docs={url}/docs token={'none' if digest is None else 'required'} "
        f"replicas={options.replicas} mode={mode}"
    )
    return url


def _token_digest() -> str | None:
    from engine.http import token_digest

    token = os.environ.get("BILLING_API_TOKEN") or None
    return None if token is None else token_digest(token)


def _serve_options(args: argparse.Namespace):
    from engine import serve_options

    return serve_options.from_env(
        host=args.http_host,
        port=args.http_port,
        replicas=args.http_replicas,
        throughput_mode=args.throughput_mode,
    )


def print_serve_config(args: argparse.Namespace) -> int:
    """Print the Serve config that serves the API of the engine running at --address."""
    import yaml

    from engine.runtime import cluster, serving

    config = _config(args)
    _require_running(config)
    joined = cluster.join(config.ray_address, config.namespace, config.data_dir)
    try:
        if cluster.Writer.running(joined.namespace) is None:
            raise BillingError(
                f"no billing engine runs in Ray namespace {joined.namespace} at {joined.address}:"
                " start it with `billing-engine up --address A --no-http` first"
            )
    finally:
        cluster.leave()
    out = serving.config(joined.namespace, _serve_options(args), _token_digest())
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
