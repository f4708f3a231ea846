"""How the HTTP API is served: its address, its replicas, and Ray Serve's high-throughput mode.

Ray-free on purpose. Serve reads its mode from the environment when `ray.serve` is first
imported, in every process of the cluster (the driver, the controller, HAProxy's manager, each
replica), so `apply()` must run before this process imports Serve or starts Ray; the processes
Ray starts then inherit it, and the Serve config `serve-config` prints carries it to a cluster
the engine did not start.

Measured here (2 cores, wrk at concurrency 50): a Serve app that answers a constant JSON takes
448 requests/s through Serve's Python proxy and 3,200-3,600/s through its HAProxy ingress with
direct ingress to the replicas (RAY_SERVE_ENABLE_HA_PROXY, RAY_SERVE_THROUGHPUT_OPTIMIZED).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from actors.errors import InvalidInput
from engine import envvars
from engine.keys import KEY_FAILURE_WINDOW_S, KEY_FAILURES_MAX

# Serve's own variables for its high-throughput mode: HAProxy in front of the replicas, which
# each listen for HTTP themselves, and the replica's request path without the extra loop,
# thread and per-request log line.
THROUGHPUT_ENV = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
# In that mode HAProxy logs every request to a socket that a Python actor parses for Serve's
# HTTP metrics: 10 % of the CPU of a GET here. The engine counts its requests itself
# (billing_http_requests, by route and status), so those are off with the mode.
QUIET_ENV = {"RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"}
# HAProxy also listens for its stats page and its Prometheus page, on fixed ports (8404, 9101)
# unless told: a second engine on the machine (a second `up`, a benchmark) could not start its
# own. A Ray of the engine's own gets free ones, between Ray's worker ports (10002-19999) and
# Serve's replica ports (30000 up), below the kernel's ephemeral range (32768 up): a port taken
# from that range was seen given to another socket before HAProxy bound it.
HAPROXY_PORTS_ENV = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
HAPROXY_PORTS = range(20_000, 30_000)

# Serve's fallback proxy (the Python proxy HAProxy falls back to when no replica answers)
# listens on 8500 unless told, with SO_REUSEPORT: a second engine on the machine bound the same
# port and answered a share of the first one's requests. Each engine gets a free port of its
# own, and the port is never shared (a clash is an error, not a split of the traffic).
FALLBACK_PORT_ENV = "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"
NO_SHARED_PORTS_ENV = {"SERVE_SOCKET_REUSE_PORT_ENABLED": "0"}
IDLE_ENV = "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"  # HAProxy's `timeout client`

REPLICAS_DEFAULT = 1  # measured best on 2 cores: see docs/bench.md
REPLICA_REQUESTS_MAX = 1_000  # Serve queues a replica's requests beyond this
# The door's bounds (engine/http/door.py, engine/http/bounds.py, engine/http/haproxy.py).
BODY_BYTES_MAX = 64 * 1024  # a request body larger than this is refused (413)
HEADERS_MAX = 100  # headers a request may carry (431 past it; HAProxy's own limit is 101)
HEADER_BYTES_MAX = 16 * 1024  # request line and headers (431; HAProxy's buffer is 16 KiB)
REQUEST_TIMEOUT_S = 10  # a client has this long to send its request line and headers
IDLE_TIMEOUT_S = 60  # a connection with nothing to send or read is closed after this


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = REPLICAS_DEFAULT
    replica_requests_max: int = REPLICA_REQUESTS_MAX
    throughput_mode: bool = True
    body_bytes_max: int = BODY_BYTES_MAX
    headers_max: int = HEADERS_MAX
    header_bytes_max: int = HEADER_BYTES_MAX
    request_timeout_s: int = REQUEST_TIMEOUT_S
    idle_timeout_s: int = IDLE_TIMEOUT_S
    key_failures_max: int = KEY_FAILURES_MAX
    key_failure_window_s: int = int(KEY_FAILURE_WINDOW_S)

    def __post_init__(self) -> None:
        for name in POSITIVE:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if self.port > 65535:
            raise InvalidInput(f"port must be at most 65535, got {self.port}")

    def env(self) -> dict[str, str]:
        """Serve's mode and the door's bounds HAProxy and the proxies read, as environment
        variables, for every process of the cluster."""
        common = NO_SHARED_PORTS_ENV | {IDLE_ENV: str(self.idle_timeout_s)}
        if not self.throughput_mode:
            return dict.fromkeys(THROUGHPUT_ENV, "0") | common
        return dict.fromkeys(THROUGHPUT_ENV, "1") | QUIET_ENV | common

    def apply(self) -> None:
        """Set Serve's mode in this process, before it imports Serve or starts the Ray of its
        own that the engine's Serve will run in: its ports free ones of this engine's own."""
        env = self.env()
        wanted = [FALLBACK_PORT_ENV] if FALLBACK_PORT_ENV not in os.environ else []
        if self.throughput_mode:
            wanted += [var for var in HAPROXY_PORTS_ENV if var not in os.environ]
        env |= dict(zip(wanted, map(str, free_ports(len(wanted), self.port)), strict=True))
        os.environ.update(env)


POSITIVE = (
    "port",
    "replicas",
    "replica_requests_max",
    "body_bytes_max",
    "headers_max",
    "header_bytes_max",
    "request_timeout_s",
    "idle_timeout_s",
    "key_failures_max",
    "key_failure_window_s",
)


def free_ports(n: int, seed: int) -> list[int]:
    """`n` ports of HAPROXY_PORTS that nothing listens on, looked for from a place that
    `seed` (the HTTP port) picks, so that two engines start their search apart."""
    out: list[int] = []
    start = seed * 7919 % len(HAPROXY_PORTS)
    for i in range(len(HAPROXY_PORTS)):
        port = HAPROXY_PORTS[(start + i) % len(HAPROXY_PORTS)]
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("", port))
            except OSError:
                continue
        out.append(port)
        if len(out) == n:
            return out
    raise OSError(f"no {n} free ports in {HAPROXY_PORTS.start}-{HAPROXY_PORTS.stop - 1}")


# environment variable -> (field, parser)
ENV = {
    "BILLING_HTTP_HOST": ("host", str),
    "BILLING_HTTP_PORT": ("port", int),
    "BILLING_HTTP_REPLICAS": ("replicas", int),
    "BILLING_HTTP_REPLICA_REQUESTS_MAX": ("replica_requests_max", int),
    "BILLING_HTTP_THROUGHPUT_MODE": ("throughput_mode", envvars.flag),
    "BILLING_HTTP_BODY_BYTES_MAX": ("body_bytes_max", int),
    "BILLING_HTTP_HEADERS_MAX": ("headers_max", int),
    "BILLING_HTTP_HEADER_BYTES_MAX": ("header_bytes_max", int),
    "BILLING_HTTP_REQUEST_TIMEOUT_S": ("request_timeout_s", int),
    "BILLING_HTTP_IDLE_TIMEOUT_S": ("idle_timeout_s", int),
    "BILLING_HTTP_KEY_FAILURES_MAX": ("key_failures_max", int),
    "BILLING_HTTP_KEY_FAILURE_WINDOW_S": ("key_failure_window_s", int),
}


def from_env(env: dict[str, str] | None = None, **overrides) -> ServeOptions:
    """Environment first, then explicit overrides (CLI flags); None overrides are ignored."""
    values = envvars.read(os.environ if env is None else env, ENV)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServeOptions(**values)
