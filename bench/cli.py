"""`billing-engine bench`: the paths side by side, one run, one machine, one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import platform
import time

import psutil
from rich.table import Table

from bench.paths import PATHS, run_path

# Each call on actor-per-call costs three Ray actors of ~96 MB: larger sizes are run at this.
ACTOR_PER_CALL_CALLS_MAX = 12


def machine() -> dict:
    return {
        "cpus": psutil.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def bench(paths, sizes, minutes, shards, database_url, redis_url, console) -> dict:
    runs = []
    for calls in sizes:
        for path in paths:
            n = min(calls, ACTOR_PER_CALL_CALLS_MAX) if path == "actor_per_call" else calls
            console.print(f"[dim]{path} at {n} calls...[/]")
            t = time.perf_counter()
            run = await run_path(path, database_url, redis_url, n, minutes, shards)
            run.extra["wall_s"] = round(time.perf_counter() - t, 1)
            runs.append(run.as_dict())
    return {"machine": machine(), "minutes": minutes, "runs": runs}


def table(result: dict) -> Table:
    t = Table(title=f"durable call-minutes per second ({result['minutes']} minutes per run)")
    for col in (
        "path",
        "calls",
        "call-min/s",
        "tick→commit p50 ms",
        "p99 ms",
        "RSS peak MiB",
        "RSS/call B",
        "note",
    ):
        t.add_column(col, justify="left" if col in ("path", "note") else "right")
    for r in result["runs"]:
        t.add_row(
            r["path"],
            f"{r['calls']:,}",
            f"{r['call_minutes_per_s']:,.0f}",
            f"{r['tick_to_commit_ms_p50']:.1f}",
            f"{r['tick_to_commit_ms_p99']:.1f}",
            f"{r['rss_peak_bytes'] / 2**20:,.0f}",
            f"{r['rss_per_call_bytes']:,}",
            r["note"],
        )
    return t


def plot(result: dict, path: str) -> None:
    """Minute paths: throughput against ongoing calls. Request paths, if run: requests per
    second against concurrency, one line per path and request, on a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.requests import REQUEST_PATHS

    workload = [r for r in result["runs"] if r["path"] == "workload"]
    minute_runs = [
        r for r in result["runs"] if r["path"] not in REQUEST_PATHS and r["path"] != "workload"
    ]
    request_runs = [r for r in result["runs"] if r["path"] in REQUEST_PATHS]
    panels = [runs for runs in (minute_runs, request_runs) if runs]
    count = len(panels) + 2 * bool(workload)
    fig, axes = plt.subplots(1, count, figsize=(7 * count, 4.5), squeeze=False)
    if workload:
        _plot_workload(axes[0][-2], axes[0][-1], workload, result["machine"]["cpus"])
    for ax, runs in zip(axes[0], panels, strict=False):
        requests = runs is request_runs
        lines = sorted({(r["path"], r["note"] if requests else "") for r in runs})
        for name, kind in lines:
            pts = sorted(
                (r["calls"], r["call_minutes_per_s"])
                for r in runs
                if r["path"] == name and (not requests or r["note"] == kind)
            )
            label = f"{name} {kind}".strip()
            # Requests: a colour per kind, a line style per path, so lines of one kind compare.
            style = {}
            if requests:
                kinds = sorted({r["note"] for r in runs})
                names = sorted({r["path"] for r in runs})
                style = {
                    "color": f"C{kinds.index(kind) % 10}",
                    "linestyle": ("-", "--", ":", "-.")[names.index(name) % 4],
                }
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", label=label, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrency" if requests else "ongoing calls")
        ax.set_ylabel("requests per second" if requests else "durable call-minutes per second")
        what = "requests" if requests else "billing throughput"
        ax.set_title(f"{what}, {result['machine']['cpus']} cores")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_workload(rates_ax, cpu_ax, runs: list[dict], cpus: int) -> None:
    """Live traffic by arrival rate: ongoing calls (as 10-minute calls of 60-s minutes) and
    start p99; and each step's CPU per call, stacked by process."""
    rates = [r["extra"]["arrival_rate_per_s"] for r in runs]
    calls = [r["extra"]["concurrent_at_60s_minutes"] for r in runs]
    rates_ax.plot(rates, calls, marker="o", color="C0", label="concurrent 10-min calls")
    rates_ax.set_xlabel("call arrivals per second")
    rates_ax.set_ylabel("concurrent calls at 60-s minutes")
    p99 = rates_ax.twinx()
    p99.plot(rates, [r["tick_to_commit_ms_p99"] for r in runs], marker="s", color="C3")
    p99.axhline(100, color="C3", linestyle=":", linewidth=1)
    p99.set_ylabel("start p99 ms (dotted: the 100-ms bound)", color="C3")
    for r, x, y in zip(runs, rates, calls, strict=True):
        if not r["extra"]["sustained"]:
            rates_ax.annotate("not sustained", (x, y), fontsize=7)
    rates_ax.set_title(f"live traffic, {cpus} cores")
    rates_ax.grid(True, alpha=0.3)
    parts = [
        k
        for k in dict.fromkeys(k for r in runs for k in r["extra"].get("cpu_ms_per_call", {}))
        if not k.startswith("machine")
    ]
    bottom = [0.0] * len(runs)
    width = (max(rates) - min(rates)) / max(1, len(rates)) / 1.5 or 10
    for i, part in enumerate(parts):
        ys = [r["extra"].get("cpu_ms_per_call", {}).get(part) or 0.0 for r in runs]
        cpu_ax.bar(rates, ys, width, bottom=bottom, label=part, color=f"C{i % 10}")
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    machine = [r["extra"].get("cpu_ms_per_call", {}).get("machine (busy)") for r in runs]
    if any(m is not None for m in machine):
        cpu_ax.plot(rates, [m or 0 for m in machine], "k_", markersize=20, label="machine busy")
    cpu_ax.set_xlabel("call arrivals per second")
    cpu_ax.set_ylabel("CPU ms per call")
    cpu_ax.set_title("CPU per call (start, end, minutes, top-ups, load) by process")
    cpu_ax.legend(fontsize=7)
    cpu_ax.grid(True, axis="y", alpha=0.3)


def request_table(runs: list[dict]) -> Table:
    t = Table(title="requests per second and latency, by concurrency")
    for col in ("path", "request", "concurrency", "requests/s", "p50 ms", "p99 ms", "non-2xx"):
        t.add_column(col, justify="left" if col in ("path", "request") else "right")
    for r in runs:
        t.add_row(
            r["path"],
            r["note"],
            f"{r['calls']:,}",
            f"{r['call_minutes_per_s']:,.0f}",
            f"{r['tick_to_commit_ms_p50']:.1f}",
            f"{r['tick_to_commit_ms_p99']:.1f}",
            str(r.get("extra", {}).get("non_2xx", 0) + r.get("extra", {}).get("socket_errors", 0)),
        )
    return t


def workload_table(runs: list[dict]) -> Table:
    t = Table(title="workload: open-loop calls on the real clock, step by step")
    cols = ("arrivals/s", "ongoing calls", "at 60-s minutes", "minutes/s", "start p50 / p99 ms")
    for col in (*cols, "minutes late p99 / max ms", "refused", "sustained"):
        t.add_column(col, justify="right")
    for r in runs:
        x = r["extra"]
        t.add_row(
            f"{x['arrival_rate_per_s']:,}",
            f"{r['calls']:,}",
            f"{x['concurrent_at_60s_minutes']:,}",
            f"{r['call_minutes_per_s']:,.0f}",
            f"{r['tick_to_commit_ms_p50']:.1f} / {r['tick_to_commit_ms_p99']:.1f}",
            f"{x['late_ms_p99']:.0f} / {x['late_ms_max']:.0f}",
            f"{x['refused']}",
            "yes" if x["sustained"] else "no",
        )
    return t


def workload_cpu_table(runs: list[dict]) -> Table:
    """CPU milliseconds per call of each step, by process (bench/workload.py `CpuWatch`)."""
    t = Table(title="workload: CPU ms per call (start, end, minutes, top-ups, load), by process")
    parts = list(dict.fromkeys(k for r in runs for k in r["extra"].get("cpu_ms_per_call", {})))
    t.add_column("arrivals/s", justify="right")
    for part in parts:
        t.add_column(part, justify="right")
    for r in runs:
        per = r["extra"].get("cpu_ms_per_call", {})
        cells = ["-" if per.get(p) is None else f"{per[p]:.2f}" for p in parts]
        t.add_row(f"{r['extra']['arrival_rate_per_s']:,}", *cells)
    return t


def request_runs(args, paths, shards: int, database_url: str, redis_url: str, console) -> list:
    """The request paths' rows: the Python API's (bench/requests.py), then HTTP's
    (bench/http.py), each at every concurrency in `--calls`."""
    from bench.http import HTTP_PATHS, bench_http
    from bench.requests import bench_requests

    concurrency = args.calls or [1, 20, 200]
    runs = []
    for paths_here, how in (
        ([p for p in paths if p not in HTTP_PATHS], bench_requests),
        ([p for p in paths if p in HTTP_PATHS], bench_http),
    ):
        if paths_here:
            runs += asyncio.run(
                how(
                    paths_here, concurrency, args.requests, shards, database_url, redis_url, console
                )
            )
    return runs


def run_bench(args, database_url: str, redis_url: str) -> int:
    from bench.requests import REQUEST_PATHS
    from engine.cli.common import make_console

    console = make_console()
    paths = args.paths or ([] if args.workload else list(PATHS))
    minute_paths = [p for p in paths if p not in REQUEST_PATHS]
    request_paths = [p for p in paths if p in REQUEST_PATHS]
    shards = args.shards or 2
    result = {"machine": machine(), "minutes": args.minutes, "runs": []}
    if minute_paths:
        sizes = args.calls or [1_000, 10_000]
        result = asyncio.run(
            bench(minute_paths, sizes, args.minutes, shards, database_url, redis_url, console)
        )
        console.print(table(result))
    if request_paths:
        runs = request_runs(args, request_paths, shards, database_url, redis_url, console)
        result["runs"] += runs
        console.print(request_table(runs))
        _request_ratios(runs, console)
    if args.workload:
        from bench.workload import WORKLOAD_MINUTE_S, WORKLOAD_RATES, bench_workload

        runs = asyncio.run(
            bench_workload(
                args.rates or WORKLOAD_RATES,
                args.step_seconds,
                args.minute_seconds or WORKLOAD_MINUTE_S,
                shards,
                database_url,
                redis_url,
                console,
            )
        )
        result["runs"] += runs
        console.print(workload_table(runs))
        console.print(workload_cpu_table(runs))
    sizes = args.calls or []
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    by = {(r["path"], r["calls"]): r["call_minutes_per_s"] for r in result["runs"]}
    for calls in sizes if minute_paths else []:
        s = by.get(("sharded", calls))
        if s:
            for other in ("seed_loop", "set_sql", "copy_limit"):
                if by.get((other, calls)):
                    console.print(
                        f"{calls:,} calls: sharded / {other} = {s / by[(other, calls)]:.2f}"
                    )
    return 0


def _request_ratios(runs: list[dict], console) -> None:
    """Each path beside the older system's way, kind by kind, at the same concurrency: the
    Python API beside `seed_requests` (top-ups), HTTP beside `seed_http` and `serve_floor`."""
    rate = {(r["path"], r["note"], r["calls"]): r["call_minutes_per_s"] for r in runs}
    for (path, kind, c), value in sorted(rate.items()):
        if path == "requests" and rate.get(("seed_requests", "top_up", c)):
            seed = rate[("seed_requests", "top_up", c)]
            console.print(f"{path} {kind} at {c}: {value / seed:.2f} x seed_requests top-ups")
        if path == "http_requests" and rate.get(("seed_http", kind, c)):
            line = f"{path} {kind} at {c}: {value / rate[('seed_http', kind, c)]:.2f} x seed_http"
            if rate.get(("serve_floor", "floor", c)):
                line += f", {value / rate[('serve_floor', 'floor', c)]:.2f} x serve_floor"
            console.print(line)


__all__ = ["run_bench"]
