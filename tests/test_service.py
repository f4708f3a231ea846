"""`billing-engine up` as a service, end to end, as an app's backend and an operator use it: on
the embedded defaults, a whole call over HTTP on Ray Serve with a bearer token, the drop seen
on /v1/events by a client that restarts mid-stream and resumes without a gap, a second process
that attaches to the same data dir and leaves `up` and its Redis unharmed, a second `up` refused,
a clean stop, and the audit."""

import asyncio
import concurrent.futures
import json
import os
import re
import select
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.test_cli import CLI, STEP_S_MAX, read_until, run

# One worker runs the end-to-end tests one after another (pyproject's addopts).
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("end_to_end")]

TOKEN = "t0ken-for-the-test"
MINUTE_S = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_env(data_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("RAY_ADDRESS", None)
    return env | {"BILLING_DATA_DIR": str(data_dir)}


@pytest.fixture
def service(tmp_path):
    port = free_port()
    env = embedded_env(tmp_path) | {"BILLING_API_TOKEN": TOKEN}
    args = ["up", "--minute-seconds", str(MINUTE_S), "--http-port", str(port), "--no-dashboard"]
    proc = subprocess.Popen(
        CLI + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    url, lines = read_until(proc, r"http=(\S+)")
    assert url, "".join(lines)
    try:
        yield url, proc, lines, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def sse(http: httpx.AsyncClient, last_id: int | None, until, got: list) -> None:
    """Read the event stream after `last_id` into `got` until `until(got)`: from its own path,
    or, when resuming, from the page's path asked for a stream (as older clients do)."""
    headers = {"Accept": "text/event-stream"}
    path = "/v1/events/stream"
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
        path = "/v1/events"
    async with http.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event: dict = {}
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
            elif line == "" and event:
                got.append(event)
                event = {}
                if until(got):
                    return


def ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()


async def test_up_serves_a_whole_call_over_http_and_events_resume_without_a_gap(service):
    url, proc, lines, data_dir = service
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        assert ok(await http.get("/readyz"))["ready"]
        assert (
            await http.get("/v1/wallets/1", headers={"Authorization": "Bearer x"})
        ).status_code == 401
        user = ok(await http.post("/v1/users", json={"name": "asha"}), 201)["user_id"]
        body = {"name": "ravi", "role": "listener"}
        listener = ok(await http.post("/v1/users", json=body), 201)["user_id"]
        top = {"amount": 30, "idempotency_key": "order-1"}  # 3 minutes of audio at basic
        assert ok(await http.post(f"/v1/wallets/{user}/top-ups", json=top))["balance_coins"] == 30
        for who in (user, listener):
            assert ok(await http.post(f"/v1/presence/{who}/heartbeat"))["online"]
        start = {"user_id": user, "listener_id": listener, "idempotency_key": "call-1"}
        call = ok(await http.post("/v1/calls", json=start), 201)
        cid = call["call_id"]

        # A client reads the first event, goes away mid-stream, and resumes from its last id.
        first: list = []
        await asyncio.wait_for(sse(http, None, lambda g: len(g) >= 1, first), 30)
        assert first[0]["type"] == "call_started" and first[0]["call_id"] == cid
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        rest: list = []
        done = lambda g: any(e["type"] == "call_settled" for e in g)  # noqa: E731
        await asyncio.wait_for(sse(http, first[-1]["id"], done, rest), 60)
        events = first + rest
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
        kinds = [e["type"] for e in events]
        assert kinds == ["call_started", "low_balance", "call_dropped", "call_settled"], kinds
        dropped = events[2]["data"]
        assert dropped["end_reason"] == "insufficient_coins" and dropped["billed_minutes"] == 3
        final = ok(await http.get(f"/v1/calls/{cid}"))
        assert (final["status"], final["billed_minutes"], final["coins_spent"]) == (
            "dropped",
            3,
            30,
        )
        earned = ok(await http.get(f"/v1/wallets/{listener}"))["earnings_paise"]
        assert earned == events[3]["data"]["earnings_paise"] > 0
        out = {"amount_paise": earned, "idempotency_key": "payout-1"}
        assert (
            ok(await http.post(f"/v1/wallets/{listener}/withdrawals", json=out))["earnings_paise"]
            == 0
        )
        page = ok(await http.get(f"/v1/users/{user}/calls"))
        assert [c["call_id"] for c in page["calls"]] == [cid]

        # A second process on the same data dir attaches to `up`, works, and stops...
        script = (
            "import asyncio\n"
            "from engine import Engine, from_env\n"
            "async def main():\n"
            "    async with Engine(from_env()) as e:\n"
            f"        print('attached', e.attached, (await e.top_up({user}, 5))['balance_coins'])\n"
            "asyncio.run(main())\n"
        )
        second = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=STEP_S_MAX,
            env=embedded_env(data_dir),
        )
        assert "attached True 5" in second.stdout, second.stdout + second.stderr
        assert "engine.json" in second.stderr  # it said what it joined
        # RAY_ADDRESS alone is enough (no record in that process's data dir; Ray's token).
        address = re.search(r"ray=(\S+)", "".join(lines)).group(1)
        third = subprocess.run(
            [sys.executable, "-c", script.replace("top_up(", "spend(")],
            capture_output=True,
            text=True,
            timeout=STEP_S_MAX,
            env=embedded_env(data_dir / "elsewhere") | {"RAY_ADDRESS": address},
        )
        assert "attached True 0" in third.stdout, third.stdout + third.stderr
        # ...and `up`, its Redis and its jobs are unharmed.
        assert ok(await http.get("/readyz"))["checks"]["redis"] == "ok"
        assert ok(await http.get(f"/v1/wallets/{user}"))["balance_coins"] == 0
    job = run(["jobs", "run", "presence"], env=embedded_env(data_dir))
    assert job.returncode == 0 and '"job": "presence"' in job.stdout, job.stdout + job.stderr
    assert '"marked_offline": 0' in job.stdout  # both parties beat within the timeout
    # Given the address, a process with no record to go by finds it all the same.
    given, elsewhere = ["--address", address], embedded_env(data_dir / "elsewhere")
    shards = run(["inspect", "shards", *given], env=elsewhere)
    assert shards.returncode == 0, shards.stdout + shards.stderr
    assert '"shard": 1' in shards.stdout and '"ongoing_calls": 0' in shards.stdout
    missing = run(["inspect", "call", "77", *given], env=elsewhere)
    assert missing.returncode == 2 and "no call with id 77" in missing.stdout
    record = data_dir / "engine.json"
    assert address in record.read_text()
    again = run(["up", "--no-http"], env=embedded_env(data_dir))
    assert again.returncode == 2 and "already up on data dir" in again.stdout, again.stdout
    shown = run(["inspect", "call", str(cid)], env=embedded_env(data_dir))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert '"status": "dropped"' in shown.stdout and re.search(
        r'"ended_at": "20\d\d-', shown.stdout
    )
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        await debugging_views(http, data_dir, dropped_call=cid)

    # A second process stops it, as SIGTERM would (`test_restart` sends SIGINT itself), while
    # this one reads what `up` says (a full pipe would stop it mid-sentence).
    with concurrent.futures.ThreadPoolExecutor(1) as reading:
        said = reading.submit(proc.communicate, timeout=STEP_S_MAX)
        stopped = run(["stop"], env=embedded_env(data_dir))
        rest_out, _ = said.result()
    assert stopped.returncode == 0 and "stopped in" in stopped.stdout, stopped.stdout
    assert proc.returncode == 0 and "stopped cleanly" in rest_out, rest_out
    assert not record.exists()  # a stopped engine leaves no record behind
    again = run(["stop"], env=embedded_env(data_dir))
    assert again.returncode == 2 and "no engine is up on data dir" in again.stdout, again.stdout
    output = "".join(lines) + rest_out
    assert TOKEN not in output
    assert "XDG_RUNTIME_DIR" not in output and "Token authentication" not in output
    audit = run(["audit"], env=embedded_env(data_dir))
    assert audit.returncode == 0 and "audit passed" in audit.stdout, audit.stdout


async def debugging_views(http: httpx.AsyncClient, data_dir, dropped_call: int) -> None:
    """What an engineer debugging a charge runs against a live `up`, after calls that crossed
    shards (a payer and their listener are on different shards when their ids differ by one),
    one hung up, one dropped, one still ongoing: every `inspect` kind, `explain call` on each,
    the timeline route, and `top`, once and live in a terminal."""
    env = embedded_env(data_dir)
    people = []
    for name, role in (("payer", "user"), ("host", "listener")):
        people.append(ok(await http.post("/v1/users", json={"name": name, "role": role}), 201))
    payer, listener = (p["user_id"] for p in people)
    assert payer % 2 != listener % 2  # two shards: the call crosses them
    await http.post(f"/v1/wallets/{payer}/top-ups", json={"amount": 500, "idempotency_key": "v"})
    start = {"user_id": payer, "listener_id": listener}
    hung_up = ok(await http.post("/v1/calls", json=start), 201)["call_id"]
    await asyncio.sleep(MINUTE_S * 1.1)  # into minute 2, well before minute 3
    ok(await http.post(f"/v1/calls/{hung_up}/end"))
    ongoing = ok(await http.post("/v1/calls", json=start), 201)["call_id"]

    for kind in ("shards", "writer", "jobs", "config"):
        out = run(["inspect", kind], env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        json.loads(out.stdout)
    for kind, ident in (("call", ongoing), ("call", hung_up), ("wallet", payer)):
        out = run(["inspect", kind, str(ident)], env=env)
        assert out.returncode == 0 and str(ident) in out.stdout, out.stdout + out.stderr
    missing = run(["inspect", "call", "987654"], env=env)
    assert missing.returncode == 2 and "no call with id 987654" in missing.stdout

    dropped = run(["explain", "call", str(dropped_call)], env=env)
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "dropped at " in dropped.stdout and "coins < rate 10 coins a minute" in dropped.stdout
    print(dropped.stdout)  # the closing note shows one
    completed = run(["explain", "call", str(hung_up), "--json"], env=env)
    explained = json.loads(completed.stdout)
    assert explained["end"]["rule"].startswith("hung up at ")
    assert [m["minute"] for m in explained["minutes"]] == [1, 2]
    live = run(["explain", "call", str(ongoing)], env=env)
    assert live.returncode == 0 and "ongoing" in live.stdout, live.stdout + live.stderr
    timeline = ok(await http.get(f"/v1/calls/{dropped_call}/timeline"))
    assert timeline["end"]["reason"] == "insufficient_coins"
    assert [m["minute"] for m in timeline["minutes"]] == [1, 2, 3]

    statement = run(["statement", str(payer), "--csv"], env=env)
    assert statement.returncode == 0, statement.stdout + statement.stderr
    lines = statement.stdout.strip().splitlines()
    assert lines[0].startswith("at,kind,amount,unit,balance_after")
    assert [line.split(",")[1] for line in lines[1:]] == ["purchase", "minutes"], lines

    once = run(["top", "--once"], env=env)
    assert once.returncode == 0, once.stdout + once.stderr
    for figure in ("ongoing calls", "minutes/s", "writer", "lag ms", "HTTP requests", "shard:1"):
        assert figure in once.stdout, once.stdout
    assert top_in_a_terminal(env), "top did not leave on q"
    ok(await http.post(f"/v1/calls/{ongoing}/end"))


def top_in_a_terminal(env: dict) -> bool:
    """`top` on a pseudo-terminal: its screen shows the figures, and `q` leaves it (exit 0)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        CLI + ["top"], stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    screen = b""
    try:
        deadline = time.monotonic() + STEP_S_MAX
        while b"minutes/s" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    screen += os.read(leader, 65536)
                except OSError:  # it exited: its terminal is gone
                    break
        assert b"minutes/s" in screen, screen.decode(errors="replace")[-2000:]
        os.write(leader, b"q")
        return proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
