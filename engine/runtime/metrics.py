"""The engine's metrics, exported through Ray's Prometheus endpoint (`ray.util.metrics`): one
function per thing measured, each a no-op in a process without Ray (a plain-class test).

Names start `billing_`; Ray adds its `ray_` prefix on export.
"""

from __future__ import annotations

import functools

import ray

LATENCY_BOUNDARIES_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
FLUSH_SIZE_BOUNDARIES = [1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000]


@functools.cache
def _metrics() -> dict | None:
    if not ray.is_initialized():
        return None
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "requests": Counter(
            "billing_http_requests",
            description="HTTP requests by method, route and status",
            tag_keys=("method", "route", "status"),
        ),
        "request_s": Histogram(
            "billing_http_request_seconds",
            description="HTTP request latency by route",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("route",),
        ),
        "minutes": Counter("billing_minutes_billed", description="call minutes billed"),
        "starts": Counter("billing_calls_started", description="calls started"),
        "ends": Counter(
            "billing_calls_ended", description="calls settled, by end reason", tag_keys=("reason",)
        ),
        "ongoing": Gauge(
            "billing_ongoing_calls", description="ongoing calls per host", tag_keys=("host",)
        ),
        "writer_lag": Gauge(
            "billing_writer_lag_ms", description="age of the writer's oldest queued write"
        ),
        "flush_records": Histogram(
            "billing_flush_records",
            description="records per writer transaction",
            boundaries=FLUSH_SIZE_BOUNDARIES,
        ),
        "flush_s": Histogram(
            "billing_flush_seconds",
            description="writer transaction latency",
            boundaries=LATENCY_BOUNDARIES_S,
        ),
        "retries": Counter("billing_retries", description="retries, by who", tag_keys=("who",)),
    }


def request(method: str, route: str, status: int, seconds: float) -> None:
    m = _metrics()
    if m is not None:
        m["requests"].inc(1, tags={"method": method, "route": route, "status": str(status)})
        m["request_s"].observe(seconds, tags={"route": route})


def billed(minutes: int, started: int = 0) -> None:
    m = _metrics()
    if m is not None:
        if minutes:
            m["minutes"].inc(minutes)
        if started:
            m["starts"].inc(started)


def settled(reasons: list[str]) -> None:
    m = _metrics()
    if m is not None:
        for reason in reasons:
            m["ends"].inc(1, tags={"reason": reason})


def ongoing(host: str, calls: int) -> None:
    m = _metrics()
    if m is not None:
        m["ongoing"].set(calls, tags={"host": host})


def flushed(records: int, seconds: float, lag_ms: float) -> None:
    m = _metrics()
    if m is not None:
        m["flush_records"].observe(records)
        m["flush_s"].observe(seconds)
        m["writer_lag"].set(lag_ms)


def writer_observer(who: str):
    """A LedgerWriter's `observe`: its flushes, and its retries counted as `who`'s."""

    def observe(records: int | None, seconds: float, lag_ms: float) -> None:
        if records is None:
            retried(who)
        else:
            flushed(records, seconds, lag_ms)

    return observe


def retried(who: str) -> None:
    m = _metrics()
    if m is not None:
        m["retries"].inc(1, tags={"who": who})
