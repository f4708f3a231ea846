"""`billing-engine`: bill live calls by the minute. The commands (demo, up, stop, serve-config,
inspect, explain, top, statement, audit, bench, chaos, jobs run); their flags are in
`engine.cli.parser` (`billing-engine COMMAND --help` for each)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from actors.errors import BillingError, OperatorError
from actors.times import iso_times
from engine import logs
from engine.cli.common import config_of, console, on_engine_database, on_running_engine
from engine.cli.parser import build_parser


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.cli.demo import run_demo

    if args.calls < 1 or args.minutes < 1:
        raise BillingError("--calls and --minutes must be at least 1")
    config = config_of(args, minute_seconds=1.0)
    return asyncio.run(run_demo(config, args.calls, args.minutes, console))


def cmd_up(args: argparse.Namespace) -> int:
    from engine.cli.up import run_up

    return run_up(args)


def cmd_stop(args: argparse.Namespace) -> int:
    from engine.cli.stop import stop

    data_dir = config_of(args).data_dir
    took = stop(data_dir, args.wait)
    console.print(f"the engine of {data_dir} stopped in {took:.1f} s")
    return 0


def cmd_serve_config(args: argparse.Namespace) -> int:
    from engine.cli.up import print_serve_config

    return print_serve_config(args)


def cmd_inspect(args: argparse.Namespace) -> int:
    """The Engine's own `inspect`, from an engine attached to the running one."""
    out = on_running_engine(args, lambda engine: engine.inspect(args.what, args.id))
    console.print_json(json.dumps(iso_times(out), default=str))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from engine.cli.explain_view import show

    show(on_running_engine(args, lambda engine: engine.explain_call(args.id)), args.json, console)
    return 0


def cmd_statement(args: argparse.Namespace) -> int:
    from engine.cli.statement_view import every_row, show
    from persistence.statement import STATEMENT_PAGE_MAX

    rows = on_running_engine(args, lambda e: every_row(e, args.user_id, STATEMENT_PAGE_MAX))
    show(args.user_id, rows, args.csv, console)
    return 0


def cmd_rate_cards(args: argparse.Namespace) -> int:
    from engine.cli.rate_cards_view import run, table

    listed = on_running_engine(args, lambda e: run(e, args.schedule, args.at, args.key))
    console.print_json(json.dumps(iso_times(listed))) if args.json else console.print(table(listed))
    return 0


def cmd_offers(args: argparse.Namespace) -> int:
    from engine.cli.offers_view import run, table

    listed = on_running_engine(args, lambda e: run(e, args.create, args.key, args.show))
    console.print_json(json.dumps(iso_times(listed))) if args.json else console.print(table(listed))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from engine.cli.top import run

    return on_running_engine(args, lambda engine: run(engine, args.once, console))


def cmd_jobs(args: argparse.Namespace) -> int:
    from engine.api import Engine

    async def run() -> dict:
        # Attach to the running engine (or start one here), then run the job as a Ray task.
        engine = await Engine(config_of(args)).start()
        try:
            return await engine.run_job_task(args.job)
        finally:
            await engine.stop()

    console.print_json(json.dumps(asyncio.run(run()), default=str))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """`keys create | list | revoke`, on the database of the engine at --address (or recorded
    in the data dir), else DATABASE_URL, else the data dir's embedded one."""
    from engine import keys

    async def work(pool):
        if args.keys_command == "create":
            return await keys.create(pool, args.name, args.scopes)
        if args.keys_command == "revoke":
            return await keys.revoke(pool, args.name)
        return await keys.listed(pool)

    out = on_engine_database(args, work)
    if args.keys_command == "create":
        console.print(
            f"key {out['name']!r} ({', '.join(out['scopes'])}), shown this once: keep it secret",
            highlight=False,
        )
        print(out["key"])
        return 0
    if args.keys_command == "revoke":
        console.print(f"key {out['name']!r} revoked at {iso_times(out)['revoked_at']}")
        return 0
    from rich.table import Table

    t = Table(title="API keys")
    for column in ("name", "scopes", "created_at", "revoked_at"):
        t.add_column(column)
    for row in iso_times(out):
        t.add_row(row["name"], ",".join(row["scopes"]), row["created_at"], row["revoked_at"] or "")
    console.print(t)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.embedded import embedded_for
    from engine.runtime import cluster
    from persistence.audit import run_audit
    from persistence.audit_totals import ledger_totals
    from persistence.db import get_pool

    config = config_of(args)
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
            "coins held = bought + refunded + returned - spent - expired (system-wide)",
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
    config, embedded = embedded_for(config_of(args))
    try:
        return run_bench(args, config.database_url, config.redis_url)
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_chaos(args: argparse.Namespace) -> int:
    import random

    from engine.cli.chaos import PLAN_CARD, chaos_command

    if not args.seconds > 0:
        raise BillingError(f"--seconds must be positive, got {args.seconds}")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    config = config_of(args)
    if args.plan:
        config = config.replace(rate_card=PLAN_CARD)
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
    console.print("wallet: " + ", ".join(f"{k} {n}" for k, n in out["wallet_ops"].items()))
    console.print("[green]chaos passed[/]" if result.ok else "[red]chaos FAILED[/]")
    return 0 if result.ok else 1


COMMANDS = {
    "demo": cmd_demo,
    "up": cmd_up,
    "stop": cmd_stop,
    "serve-config": cmd_serve_config,
    "inspect": cmd_inspect,
    "explain call": cmd_explain,
    "top": cmd_top,
    "statement": cmd_statement,
    "rate-cards": cmd_rate_cards,
    "offers": cmd_offers,
    "audit": cmd_audit,
    "bench": cmd_bench,
    "chaos": cmd_chaos,
    "jobs run": cmd_jobs,
    "keys create": cmd_keys,
    "keys list": cmd_keys,
    "keys revoke": cmd_keys,
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format=logs.TEXT_FORMAT)
    logs.configure()
    args = build_parser(COMMANDS).parse_args(argv)
    try:
        return args.func(args)
    except (BillingError, OperatorError, ConnectionError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
