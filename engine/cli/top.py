"""`billing-engine top`: a running engine in the terminal, refreshed every second.

It reads what the engine already measures: each shard's counters (`inspect shards`: ongoing
calls, minutes billed, starts, ends by reason, late minutes, its writer client), the writer's
(`inspect writer`: lag, last flush), the last job runs (`inspect jobs`), and the HTTP tier's
`billing_http_*` metrics from Ray's Prometheus endpoints. Rates are over the last
RATE_WINDOW_S seconds of samples (Ray exports metrics every few seconds, so HTTP rates are
smoothed over that). `q` or Ctrl-C leaves; `--once` prints one frame (two samples a second
apart) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import sys
import termios
import time
import tty
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table

from engine.explain import clock

REFRESH_S = 1.0
RATE_WINDOW_S = 10.0
SAMPLES_MAX = 64  # kept for the rate window; at REFRESH_S, more than it needs
SCRAPE_TIMEOUT_S = 1.0  # one metrics endpoint's bound
ROUTES_SHOWN_MAX = 12


@dataclass
class Sample:
    at: float
    shards: list[dict]
    writer: dict
    jobs: dict
    http: dict = field(default_factory=dict)  # route -> {"count", "buckets": {le: count}}


async def sample(engine, metrics_urls: list[str]) -> Sample:
    shards = await engine.inspect("shards")
    writer = await engine.inspect("writer")
    jobs = await engine.inspect("jobs")
    http = await asyncio.to_thread(scrape, metrics_urls)
    return Sample(time.time(), shards, writer, jobs, http)


def scrape(urls: list[str]) -> dict:
    """The HTTP tier's counters, summed over the metrics endpoints that answer in time."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as r:
                text = r.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("ray_billing_http_request"):
                continue
            for s in family.samples:
                route = s.labels.get("route")
                if route is None:
                    continue
                entry = out.setdefault(route, {"count": 0.0, "buckets": {}})
                if s.name == "ray_billing_http_requests_total":
                    entry["count"] += s.value
                elif s.name == "ray_billing_http_request_seconds_bucket":
                    le = float(s.labels["le"])
                    entry["buckets"][le] = entry["buckets"].get(le, 0.0) + s.value
    return out


def totals(s: Sample) -> dict:
    """The counters of every shard, summed."""
    keys = ("ongoing_calls", "minutes_billed", "calls_started", "calls_settled")
    out = {k: sum(sh.get(k, 0) for sh in s.shards) for k in keys}
    ends: dict[str, int] = {}
    late = 0
    for sh in s.shards:
        for reason, n in sh.get("ends", {}).items():
            ends[reason] = ends.get(reason, 0) + n
        late += sum(n for ms, n in sh.get("late_minutes", {}).items() if int(ms) >= 1_000)
    return out | {"ends": ends, "late_minutes_over_1s": late}


def rate(now: float, then: float, seconds: float) -> float:
    return max(0.0, now - then) / seconds if seconds > 0 else 0.0


def p99_ms(buckets_now: dict, buckets_then: dict) -> float | None:
    """The 99th percentile's bucket bound (ms) of the requests between two samples."""
    delta = sorted((le, buckets_now[le] - buckets_then.get(le, 0.0)) for le in buckets_now)
    if not delta or delta[-1][1] <= 0:
        return None
    for le, n in delta:  # cumulative counts
        if n >= 0.99 * delta[-1][1]:
            return None if le == float("inf") else le * 1000
    return None


def frame(history: deque[Sample]) -> Group:
    cur = history[-1]
    old = next((s for s in history if cur.at - s.at <= RATE_WINDOW_S), cur)
    if old is cur and len(history) > 1:
        old = history[-2]
    seconds = cur.at - old.at
    now_t, old_t = totals(cur), totals(old)
    head = Table(title=f"billing engine at {clock(cur.at)}", show_header=True)
    for name in ("ongoing calls", "minutes/s", "starts/s", "ends/s", "drops/s", "late > 1 s"):
        head.add_column(name, justify="right")
    dropped = sum(n for r, n in now_t["ends"].items() if r != "hangup")
    dropped_then = sum(n for r, n in old_t["ends"].items() if r != "hangup")
    head.add_row(
        f"{now_t['ongoing_calls']:,}",
        f"{rate(now_t['minutes_billed'], old_t['minutes_billed'], seconds):,.1f}",
        f"{rate(now_t['calls_started'], old_t['calls_started'], seconds):,.1f}",
        f"{rate(now_t['calls_settled'], old_t['calls_settled'], seconds):,.1f}",
        f"{rate(dropped, dropped_then, seconds):,.1f}",
        f"{now_t['late_minutes_over_1s']:,}",
    )
    return Group(head, _shards(cur), _writer(cur), _http(cur, old, seconds), _jobs(cur))


def _shards(s: Sample) -> Table:
    t = Table(title="hosts")
    for name in ("host", "ongoing calls", "wallets", "minutes billed", "pending records"):
        t.add_column(name, justify="right")
    for sh in s.shards:
        if "shard" in sh:
            pending = sh.get("writer_client", {}).get("pending_records", 0)
            t.add_row(
                f"shard:{sh['shard']}",
                f"{sh.get('ongoing_calls', 0):,}",
                f"{sh.get('wallets_loaded', 0):,}",
                f"{sh.get('minutes_billed', 0):,}",
                f"{pending:,}",
            )
        else:  # actor-per-call: counts of actors
            calls, wallets = sh.get("call_actors", 0), sh.get("wallet_actors", 0)
            t.add_row(f"{sh.get('placement')}", f"{calls:,}", f"{wallets:,}", "-", "-")
    return t


def _writer(s: Sample) -> Table:
    w = s.writer
    t = Table(title="writer")
    for name in ("lag ms", "queued records", "last flush records", "last flush ms", "retries"):
        t.add_column(name, justify="right")
    t.add_row(
        f"{w.get('oldest_queued_ms', 0):,.1f}",
        f"{w.get('queued_records', 0):,}",
        f"{w.get('last_flush_records', 0):,}",
        f"{w.get('last_flush_ms', 0):,.1f}",
        f"{w.get('retries', 0):,}",
    )
    return t


def _http(cur: Sample, old: Sample, seconds: float) -> Table:
    t = Table(title="HTTP requests (from Ray's metrics)")
    for name in ("route", "requests/s", "p99 ms"):
        t.add_column(name, justify="left" if name == "route" else "right")
    if not cur.http:
        t.add_row("none measured", "-", "-")
    for route in sorted(cur.http)[:ROUTES_SHOWN_MAX]:
        now_r, then_r = cur.http[route], old.http.get(route, {"count": 0.0, "buckets": {}})
        p99 = p99_ms(now_r["buckets"], then_r["buckets"])
        t.add_row(
            route,
            f"{rate(now_r['count'], then_r['count'], seconds):,.1f}",
            "-" if p99 is None else f"≤ {p99:,.0f}",
        )
    return t


def _jobs(s: Sample) -> Table:
    t = Table(title="last job runs")
    for name in ("job", "finished", "took s", "result"):
        t.add_column(name)
    for name, run in sorted(s.jobs.get("last", {}).items()):
        result = run.get("result", run.get("error"))
        t.add_row(name, clock(run.get("finished_at")), str(run.get("duration_s", "-")), str(result))
    return t


async def run(engine, once: bool, console) -> int:
    """`top` on an attached engine: one frame (`once`), or live until `q`."""
    from engine.runtime import cluster

    urls = cluster.dashboard_urls()["metrics"]
    history: deque[Sample] = deque(maxlen=SAMPLES_MAX)
    history.append(await sample(engine, urls))
    if once:
        await asyncio.sleep(REFRESH_S)
        history.append(await sample(engine, urls))
        console.print(frame(history))
    else:
        await live(engine, urls, history, console)
    return 0


async def live(engine, urls: list[str], history: deque, console) -> None:
    """Refresh every REFRESH_S until `q` (or Ctrl-C)."""
    from rich.live import Live

    with keys() as pressed, Live(frame(history), console=console, screen=False) as view:
        while True:
            deadline = time.monotonic() + REFRESH_S
            while time.monotonic() < deadline:
                if pressed(max(0.0, deadline - time.monotonic())) in ("q", "Q"):
                    return
                await asyncio.sleep(0)
            history.append(await sample(engine, urls))
            view.update(frame(history))


@contextlib.contextmanager
def keys():
    """`pressed(timeout_s)`: the key pressed within the time, or None (stdin not a terminal:
    never, and Ctrl-C leaves)."""
    if not sys.stdin.isatty():
        yield lambda timeout_s: time.sleep(timeout_s)
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(timeout_s: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return sys.stdin.read(1) if ready else None

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
