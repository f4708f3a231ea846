"""HTTP rows of `billing-engine bench`: the engine's HTTP API beside the system it replaces and
beside Serve's own floor, the load from wrk in its own process, in the same run.

- `http_requests`: the engine's API on Ray Serve in its high-throughput mode (HAProxy, direct
  ingress to the replicas), as `billing-engine up` serves it.
- `seed_http`: the older system's way, a FastAPI app on uvicorn in one process, one
  transaction per request (bench/seed_http.py), on the same PostgreSQL and Redis.
- `serve_floor`: a Serve app that answers a constant JSON, on the same Serve: what any Serve
  app can do here.

Each (path, concurrency) gets fresh people, each read once untimed; requests are top-ups,
wallet reads, heartbeats, call starts (each payer with a listener by a fixed permutation) and
the ends of those calls (`serve_floor`: one kind, `floor`). wrk (`apt-get install wrk`) sends
a fixed number of requests (bench/http_load.lua) and each row's rate is requests over the time
from the first to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.paths import RssWatch, Run
from bench.requests import People, free_port, fresh_engine
from engine import leftovers

HTTP_PATHS = ("http_requests", "seed_http", "serve_floor")
KINDS = ("top_up", "wallet", "heartbeat", "start_call", "end_call")
FLOOR_ROUTE = "/floor"
WARM_CONCURRENCY = 50  # the untimed first read of each person
WRK_THREADS_MAX = 2  # this machine's cores: more threads only take turns
WRK_RUN_S_MAX = 120  # a row that has not finished by then is cut (and says so)
WRK_TIMEOUT_S = 10  # a request unanswered this long counts as a socket error
WRK_STOP_S_MAX = 30  # after its first SIGINT, wrk has this long to print its summary and exit
SERVER_START_S_MAX = 60
LUA = os.path.join(os.path.dirname(__file__), "http_load.lua")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("the HTTP rows need wrk on PATH (apt-get install wrk)")
    return found


def run_wrk(url: str, kind: str, requests: int, concurrency: int, env: dict) -> dict:
    """`requests` requests of `kind` at `concurrency`, by wrk; its results, with the rate
    measured from the first thread's start to the last one's end."""
    threads = min(WRK_THREADS_MAX, concurrency)
    out_dir = tempfile.mkdtemp(prefix="wrk")
    env = (
        os.environ
        | env
        | {
            "BENCH_KIND": kind,
            "BENCH_REQUESTS": str(requests),
            "BENCH_THREADS": str(threads),
            "BENCH_CONNECTIONS": str(concurrency),
            "BENCH_OUT": os.path.join(out_dir, "t"),
        }
    )
    args = [wrk_binary(), f"-t{threads}", f"-c{concurrency}", f"-d{WRK_RUN_S_MAX}s"]
    args += [f"--timeout={WRK_TIMEOUT_S}s", "-s", LUA, url]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + WRK_RUN_S_MAX
    marks = os.path.join(out_dir, "t.done.*")
    while len(glob.glob(marks)) < threads and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stdout, stderr = interrupt(proc)
    lines = [x for x in stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk gave no result: {stdout[-500:]} {stderr[-500:]}")
    result = json.loads(lines[-1])
    # Each thread's mark: when it began and ended, its answers and how many were not 2xx (the
    # spare requests past its budget excluded; wrk's own counts include them).
    spans = [tuple(map(int, _words(m))) for m in glob.glob(marks)]
    result["finished"] = len(spans) == threads
    if spans:
        result["elapsed_s"] = (max(s[1] for s in spans) - min(s[0] for s in spans)) / 1e9
        result["requests"] = sum(s[2] for s in spans)
        result["non_2xx"] = sum(s[3] for s in spans)
    else:
        result["elapsed_s"] = result["duration_us"] / 1e6
    started = []
    for f in glob.glob(os.path.join(out_dir, "t.[0-9]*")):
        started += [int(x) for x in _words(f)]
    result["call_ids"] = started
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _words(path: str) -> list[str]:
    with open(path) as f:
        return f.read().split()


def _row(path: str, kind: str, concurrency: int, result: dict, watch: RssWatch) -> Run:
    watch.sample()
    rate = result["requests"] / result["elapsed_s"] if result["elapsed_s"] > 0 else 0.0
    run = Run(
        path,
        concurrency,
        rate,
        result["p50_ms"],
        result["p99_ms"],
        watch.peak,
        (watch.peak - watch.baseline) // concurrency,
        kind,
    )
    run.extra = {
        "request": kind,
        "requests": result["requests"],
        "non_2xx": result["non_2xx"],
        "socket_errors": result["socket_errors"],
        "max_ms": result["max_ms"],
        "finished": result["finished"],
        "load": "wrk",
    }
    return run


def interrupt(proc: subprocess.Popen) -> tuple[str, str]:
    """wrk's output once SIGINT ended it (it prints its summary then). A SIGINT that lands
    after wrk set its handler but before its main thread began to sleep out `-d` only sets a
    flag, and wrk would sleep on (CI saw it): SIGINT is sent again each second until wrk exits,
    for at most WRK_STOP_S_MAX, then it is killed and that is an error."""
    deadline = time.monotonic() + WRK_STOP_S_MAX
    while True:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                raise RuntimeError(
                    f"wrk did not stop within {WRK_STOP_S_MAX} s of SIGINT: {proc.args}"
                ) from None


async def one_path(
    url: str, path: str, people: People, n: int, c: int, watch, key: str = ""
) -> list[Run]:
    """The rows of one path at concurrency `c`: each kind of request, `n` of each (with the API
    key `key`, if any)."""
    if path == "serve_floor":
        result = await asyncio.to_thread(run_wrk, url, "floor", n, c, {"BENCH_KEY": key})
        return [_row(path, "floor", c, result, watch)]
    users, _ = await people.block(n)
    base = {"BENCH_FIRST": str(users[0]), "BENCH_PEOPLE": str(n), "BENCH_TAG": f"{path}-{c}"}
    base["BENCH_KEY"] = key
    # Untimed, each payer and listener read once: the rows measure people whose wallets are
    # warm, as an active user's is (the engine's host loaded, PostgreSQL's pages cached), not
    # the first touch of a person, which the engine pays once and the older app never caches.
    warm = base | {"BENCH_PEOPLE": str(2 * n)}
    await asyncio.to_thread(run_wrk, url, "wallet", 2 * n, WARM_CONCURRENCY, warm)
    rows, calls = [], []
    for kind in KINDS:
        if kind == "end_call" and not calls:
            continue  # no call started: nothing to end
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(base)
            if kind == "end_call":
                env["BENCH_CALLS"] = os.path.join(tmp, "calls")
                with open(env["BENCH_CALLS"], "w") as f:
                    f.write("".join(f"{i}\n" for i in calls))
            result = await asyncio.to_thread(run_wrk, url, kind, n, c, env)
        if kind == "start_call":
            calls = result["call_ids"]
        rows.append(_row(path, kind, c, result, watch))
    return rows


def start_seed_http(database_url: str, redis_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.seed_http", "--port", str(port)]
        + ["--database-url", database_url, "--redis-url", redis_url],
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def wait_healthy(url: str, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_S_MAX
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer /healthz within {SERVER_START_S_MAX} s")


def start_serve(namespace: str, replicas: int, key) -> str:
    """The engine's API and the floor app on one Serve, in its high-throughput mode; the API
    behind its door, `key` the one key it knows (as `up` serves it)."""
    from ray import serve

    import engine.http.serving as serving
    from engine.http.options import ServeOptions

    options = ServeOptions(port=free_port(), replicas=replicas)
    auth = {"auth": "keys", "keys": [key.as_arg()]}
    url = serving.start(namespace, options, auth)

    @serve.deployment(
        name="floor", ray_actor_options={"num_cpus": 0}, logging_config=serving.LOGGING
    )
    class Floor:
        async def __call__(self, request):
            return {"status": "ok"}

    serve.run(Floor.bind(), name="floor", route_prefix=FLOOR_ROUTE, blocking=False)
    wait_healthy(url)
    wait_healthy(url + FLOOR_ROUTE)
    return url


async def bench_http(paths, concurrencies, n, shards, database_url, redis_url, console):
    """The HTTP rows: every path at every concurrency, in one run."""
    import engine.http.haproxy as haproxy
    import engine.http.options as serve_options

    wrk_binary()
    # Serve's mode, and where its HAProxy keeps its files (a private folder of this run's own,
    # as `up`'s), come from the environment of the Ray this process starts: set them first.
    options = serve_options.ServeOptions()
    run_dir = haproxy.RunDir(options.request_timeout_s)
    os.environ.update(run_dir.env())
    options.apply()
    try:
        return await _bench_http(paths, concurrencies, n, shards, database_url, redis_url, console)
    finally:
        run_dir.remove()


async def _bench_http(paths, concurrencies, n, shards, database_url, redis_url, console):
    import engine.http.options as serve_options
    from engine import keys

    engine, people = await fresh_engine(database_url, redis_url, shards, 2_000_000)
    seed = None
    runs: list[dict] = []
    secret = ""  # the key of the engine's API
    try:
        urls = {}
        if {"http_requests", "serve_floor"} & set(paths):
            replicas = serve_options.from_env().replicas  # BILLING_HTTP_REPLICAS
            made = await keys.create(await engine.pool(), f"bench-{time.time_ns()}", keys.SCOPES)
            secret = made["key"]
            key = keys.Key(made["name"], keys.digest(secret), keys.SCOPES)
            url = await asyncio.to_thread(start_serve, engine.config.namespace, replicas, key)
            urls["http_requests"], urls["serve_floor"] = url, url + FLOOR_ROUTE
        if "seed_http" in paths:
            seed, urls["seed_http"] = await asyncio.to_thread(
                start_seed_http, database_url, redis_url
            )
        watch = RssWatch()
        watch.pids |= await engine.processes()
        if seed is not None:
            watch.pids[seed.pid] = "seed_http"
        for c in concurrencies:
            for path in paths:
                console.print(f"[dim]{path} at concurrency {c}...[/]")
                key = secret if path != "seed_http" else ""
                rows = await one_path(urls[path], path, people, n, c, watch, key)
                runs += [r.as_dict() for r in rows]
    finally:
        if seed is not None:
            seed.terminate()
            seed.wait(10)
        # Ray does not always take Serve's HAProxy down with it (up stops it the same way).
        leftovers.stop(leftovers.haproxy_under_me())
        await engine.stop()
    return runs


__all__ = ["HTTP_PATHS", "bench_http"]
