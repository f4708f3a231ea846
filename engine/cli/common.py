"""What the console's commands share: the console, the engine's settings from the flags, and
how a command reaches the running engine (or its database)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console

from actors.errors import BillingError
from engine.config import from_env

# Piped or redirected, rich would cut tables to 80 columns (`copy_l…`): a file gets them whole.
PIPED_WIDTH = 200


def make_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)


console = make_console()


def config_of(args: argparse.Namespace, **defaults):
    keys = (
        "metrics_on_network",
        "database_url",
        "redis_url",
        "ray_address",
        "placement",
        "shards",
        "minute_seconds",
        "data_dir",
    )
    given = {k: getattr(args, k, None) for k in keys}
    for k, v in defaults.items():
        if given.get(k) is None:
            given[k] = v
    return from_env(**given)


def require_running(config) -> None:
    """A command that reads a running engine needs its address: given, or recorded by `up`."""
    from engine.runtime import cluster

    if not config.ray_address and cluster.recorded(config.data_dir) is None:
        raise BillingError(
            f"no running engine found: none recorded in {config.data_dir}/{cluster.RECORD_NAME} "
            "and no --address or RAY_ADDRESS given (the address `billing-engine up` printed)"
        )


def on_running_engine(args: argparse.Namespace, work):
    """`await work(engine)` on an engine attached to the running one (refused, naming where,
    if none runs), detached after: what inspect, explain, statement and top share."""
    from engine.api import Engine

    config = config_of(args)
    require_running(config)

    async def run():
        engine = await Engine(config).start(attach_only=True)
        try:
            return await work(engine)
        finally:
            await engine.stop()

    return asyncio.run(run())


def on_engine_database(args: argparse.Namespace, work):
    """`await work(pool)` on the engine's database: DATABASE_URL / --database-url, else the
    running engine's (attached through Ray), else the data dir's embedded one (started here
    for the command, unless another process holds it)."""
    from engine.embedded import embedded_for
    from engine.runtime import cluster
    from persistence.db import close_pools, get_pool

    config = config_of(args)
    if config.database_url is None and (
        config.ray_address or cluster.recorded(config.data_dir) is not None
    ):
        return on_running_engine(args, lambda engine: _pooled(engine, work))
    config, embedded = embedded_for(config, redis=False)

    async def run():
        try:
            return await work(await get_pool(config.database_url))
        finally:
            await close_pools()

    try:
        return asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()


async def _pooled(engine, work):
    return await work(await engine.pool())
