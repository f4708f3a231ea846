"""A restart that always works: `up` and everything it started killed with SIGKILL during HTTP
traffic, `up` again at once on the same data dir and port, every answered top-up, start and
end found, the calls left ongoing ended, every call's events at the app's webhook (down
through the restart), a clean stop that leaves no process behind, and the audit clean. Also
the pieces on their own: the port check and the servers a dead run left."""

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import time

import httpx
import psutil
import pytest

from engine import leftovers
from engine.cli.up import port_free
from engine.webhooks import WebhookLimits, verify
from tests.test_cli import CLI, STEP_S_MAX, read_until, run
from tests.test_service import embedded_env, free_port, ok
from tests.test_webhooks import Receiver

# One worker runs the end-to-end tests one after another (pyproject's addopts).
pytestmark = pytest.mark.xdist_group("end_to_end")

PEOPLE = 12
TRAFFIC_S = 4.0


def start_up(data_dir, port: int, env=None) -> tuple[subprocess.Popen, str, list[str]]:
    args = ["up", "--http-port", str(port), "--no-dashboard"]
    proc = subprocess.Popen(
        CLI + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=embedded_env(data_dir) | (env or {}),
    )
    url, lines = read_until(proc, r"http=(\S+)")
    assert url, "".join(lines)
    _, more = read_until(proc, r"(inspect it with)")
    return proc, url, lines + more


def printed_key(lines: list[str]) -> str | None:
    """The API key the first `up` on a data dir prints, once."""
    found = [m.group(1) for line in lines if (m := re.match(r"^\s+(bk_\S+)", line))]
    return found[0] if found else None


def run_dir_of(data_dir) -> str:
    """The run dir (HAProxy's files) a run remembered in its data dir."""
    with open(os.path.join(data_dir, leftovers.RECORD_NAME)) as f:
        return next(s["marker"] for s in json.load(f) if s["name"] == leftovers.RUN_DIR)


def kill_everything(proc: subprocess.Popen) -> int:
    """SIGKILL `up` and every process under it, at once, as a crash of its machine's
    supervisor would. The embedded servers daemonize: they are not under it, and live on."""
    root = psutil.Process(proc.pid)
    victims = [root, *root.children(recursive=True)]
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()
    proc.wait()
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


class Traffic:
    """Top-ups, call starts and ends, and health checks from several clients, each answer
    remembered; a request that got no answer may or may not have happened."""

    def __init__(self, http: httpx.AsyncClient, users: list[int], listeners: list[int]):
        self.http = http
        self.free = list(zip(users, listeners, strict=True))
        self.users = users
        self.top_ups: dict[str, dict] = {}  # idempotency key -> answer
        self.started: dict[int, dict] = {}  # call id -> answer
        self.ended: dict[int, dict] = {}
        self.health_codes: list[int] = []
        self.keys = itertools.count()

    async def one(self, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.5:
            key = f"t-{next(self.keys)}"
            user = rng.choice(self.users)
            r = await self.http.post(
                f"/v1/wallets/{user}/top-ups", json={"amount": 1, "idempotency_key": key}
            )
            self.top_ups[key] = {"user": user} | ok(r)
        elif roll < 0.7 and self.free:
            user, listener = self.free.pop()
            r = await self.http.post("/v1/calls", json={"user_id": user, "listener_id": listener})
            call = ok(r, 201)
            self.started[call["call_id"]] = call
        elif roll < 0.85 and set(self.started) - set(self.ended):
            cid = rng.choice(sorted(set(self.started) - set(self.ended)))
            self.ended[cid] = ok(await self.http.post(f"/v1/calls/{cid}/end"))
        else:
            self.health_codes.append((await self.http.get("/healthz")).status_code)

    async def client(self, seed: int, until: float) -> None:
        rng = random.Random(seed)
        while time.monotonic() < until:
            try:
                await self.one(rng)
            except (httpx.HTTPError, AssertionError):
                return  # the engine is gone: what this client had answered is all it has


async def people(http: httpx.AsyncClient) -> tuple[list[int], list[int]]:
    users, listeners = [], []
    for i in range(PEOPLE):
        users.append(ok(await http.post("/v1/users", json={"name": f"u{i}"}), 201)["user_id"])
        body = {"name": f"l{i}", "role": "listener"}
        listeners.append(ok(await http.post("/v1/users", json=body), 201)["user_id"])
        top = {"amount": 1_000, "idempotency_key": f"seed-{i}"}
        ok(await http.post(f"/v1/wallets/{users[-1]}/top-ups", json=top))
    return users, listeners


def left_running(data_dir, port: int) -> list[str]:
    """Processes of this data dir's run: its servers, Ray's, anything under it, and an HAProxy
    still on its HTTP port (another test's Serve may run its own HAProxy meanwhile)."""
    path = str(data_dir)
    out = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        line = " ".join(p.info["cmdline"] or ())
        with contextlib.suppress(psutil.Error):
            ours = p.info["name"] == "haproxy" and any(
                c.laddr and c.laddr.port == port for c in p.net_connections("inet")
            )
            if path in line or path in p.cwd() or ours:
                out.append(f"{p.info['pid']} {line[:120]}")
    return out


@pytest.mark.ray
async def test_up_killed_mid_traffic_restarts_at_once_and_loses_nothing_it_answered(tmp_path):
    port = free_port()
    env = {"BILLING_WEBHOOK_PRIVATE_URLS": "1"}  # the receiver is on this machine
    proc, url, lines = start_up(tmp_path, port, env)
    key = printed_key(lines)
    assert key, "".join(lines)
    auth = {"Authorization": f"Bearer {key}"}
    receiver = Receiver(free_port())
    receiver.up()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth) as http:
            hook = {"url": receiver.url, "event_types": ["call_started", "call_settled"]}
            made = await http.post("/v1/webhooks", json=hook)
            assert made.status_code == 201, made.text
            secret = made.json()["secret"]
            users, listeners = await people(http)
            traffic = Traffic(http, users, listeners)
            until = time.monotonic() + TRAFFIC_S + 30
            clients = [asyncio.create_task(traffic.client(s, until)) for s in range(8)]
            await asyncio.sleep(TRAFFIC_S)
            killed = await asyncio.to_thread(kill_everything, proc)
            receiver.down()  # and the app's endpoint goes down with it, for a while
            await asyncio.wait_for(asyncio.gather(*clients), 60)
        assert killed > 5 and traffic.top_ups and traffic.started and traffic.ended
        assert set(traffic.health_codes) == {200}, traffic.health_codes  # /healthz under load
        dead_run_dir = run_dir_of(tmp_path)
        assert os.path.isdir(dead_run_dir)  # what the dead run left: HAProxy's admin socket

        # At once: the port in TIME_WAIT, the dead run's servers still up, its record left.
        restarted = time.monotonic()
        proc, url, lines = start_up(tmp_path, port, env)
        assert time.monotonic() - restarted < STEP_S_MAX
        assert not os.path.exists(dead_run_dir) and printed_key(lines) is None  # the same key
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth) as http:
            for key, answer in traffic.top_ups.items():
                again = {"amount": 1, "idempotency_key": key}
                retry = ok(await http.post(f"/v1/wallets/{answer['user']}/top-ups", json=again))
                assert retry["applied"] is False, (key, retry)  # it was stored
                assert retry["transfer_id"] == answer["transfer_id"]
            for cid, call in traffic.started.items():
                stored = ok(await http.get(f"/v1/calls/{cid}"))
                assert (stored["user_id"], stored["listener_id"]) == (
                    call["user_id"],
                    call["listener_id"],
                )
            for cid, end in traffic.ended.items():
                stored = ok(await http.get(f"/v1/calls/{cid}"))
                assert stored["status"] == end["status"] == "completed"
                assert stored["billed_minutes"] == end["billed_minutes"]
            for cid in set(traffic.started) - set(traffic.ended):
                assert ok(await http.post(f"/v1/calls/{cid}/end"))["status"] == "completed"
        receiver.up()
        await asyncio.to_thread(every_call_reaches_the_webhook, receiver, secret, traffic.started)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=STEP_S_MAX)
        assert proc.returncode == 0 and "stopped cleanly" in out, out
    finally:
        receiver.down()
        if proc.poll() is None:
            kill_everything(proc)
    deadline = time.monotonic() + 10
    while left_running(tmp_path, port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left_running(tmp_path, port) == []
    assert leftovers.running(str(tmp_path)) == []
    audit = run(["audit"], env=embedded_env(tmp_path))
    assert audit.returncode == 0 and "audit passed" in audit.stdout, audit.stdout


def every_call_reaches_the_webhook(receiver: Receiver, secret: str, started: dict) -> None:
    """Each answered call's start and settlement reach the endpoint, though the engine was
    killed and the endpoint down: signed, a call's start before its settlement. One that was
    on its way at the kill may come twice (at least once), never more than were in flight."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = {(json.loads(b)["call_id"], json.loads(b)["type"]) for _, b, _ in receiver.got}
        if all((cid, "call_settled") in seen for cid in started):
            break
        time.sleep(0.2)
    firsts: dict[int, list[str]] = {}
    ids = []
    for headers, body, _ in receiver.got:
        assert verify(secret, body, headers["billing-signature"])
        event = json.loads(body)
        ids.append(event["id"])
        if event["type"] not in firsts.setdefault(event["call_id"], []):
            firsts[event["call_id"]].append(event["type"])
    for cid in started:
        assert firsts.get(cid) == ["call_started", "call_settled"], (cid, firsts.get(cid))
    assert len(ids) - len(set(ids)) <= WebhookLimits().in_flight_max


def test_a_port_whose_connections_wait_in_time_wait_is_free_and_a_listened_one_is_not():
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the side that closes first keeps the port in TIME_WAIT
        client.close()
    assert port_free("127.0.0.1", port)


def test_the_servers_a_dead_run_left_are_stopped_and_a_reused_pid_is_not(tmp_path):
    server = subprocess.Popen(["sleep", "600"])
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        leftovers.remember(str(tmp_path), "sleep", server.pid)
        leftovers.remember(str(tmp_path), "sleeper", marker="no-such-marker")
        # A pid remembered with another start time is some other process now: never touched.
        leftovers._write(
            str(tmp_path),
            leftovers._read(str(tmp_path))
            + [{"name": "sleep", "pid": bystander.pid, "started": 1.0}],
        )
        assert [p.pid for p in leftovers.running(str(tmp_path))] == [server.pid]
        stopped = leftovers.reap(str(tmp_path))
        assert stopped == [f"sleep (process {server.pid})"]
        assert server.wait(10) is not None and bystander.poll() is None
        assert leftovers.running(str(tmp_path)) == [] and leftovers.reap(str(tmp_path)) == []
    finally:
        for p in (server, bystander):
            p.kill()
            p.wait()


def test_a_server_that_has_exited_is_not_waited_for_and_one_that_runs_is():
    """A stopped server that init has yet to reap (a zombie) has exited; one that runs is
    still running when the wait gives up."""
    done, running = subprocess.Popen(["true"]), subprocess.Popen(["sleep", "600"])
    try:
        gone = psutil.Process(done.pid)
        deadline = time.monotonic() + 10
        while gone.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone.status() == psutil.STATUS_ZOMBIE  # exited, not reaped: as for a daemon
        alive = psutil.Process(running.pid)
        assert leftovers.wait_exited([gone, alive], 0.2) == [alive]
        assert leftovers.wait_exited([gone], 30) == []
    finally:
        running.kill()
        for p in (done, running):
            p.wait()


def test_the_embedded_redis_saves_and_is_gone_when_its_engine_stops(tmp_path):
    import redis

    from engine.embedded import start_embedded

    first = start_embedded(str(tmp_path), False, True)
    redis.Redis.from_url(first.redis_url).set("presence:kept", "1")
    server = psutil.Process(first._handles[0].server.pid)
    first.stop()
    assert leftovers.wait_exited([server], 0) == []  # gone by the time stop() returns
    again = start_embedded(str(tmp_path), False, True)
    try:
        assert redis.Redis.from_url(again.redis_url).get("presence:kept") == b"1"
    finally:
        again.stop()
