"""Start-up paths: embedded defaults, the real clock, the capacity guard, configuration."""

import asyncio
import os
import subprocess
import sys
import time

import pytest

from actors import CapacityExceeded, InvalidInput
from engine.api import Engine
from engine.config import Config, from_env
from persistence.audit import run_audit
from persistence.db import get_pool, mask_url
from tests.conftest import engine_config
from tests.helpers import eventually

# One worker runs the end-to-end tests one after another (pyproject's addopts).
pytestmark = pytest.mark.xdist_group("end_to_end")


async def test_engine_starts_on_embedded_postgres_and_redis_and_bills_in_real_time(
    tmp_path, ray_session
):
    cfg = Config(data_dir=str(tmp_path), minute_seconds=0.2, shards=1)
    engine = await Engine(cfg).start()
    try:
        assert engine.database_url.startswith("postgresql://") and "host=" in engine.database_url
        assert engine.redis_url.startswith("unix://")
        user = await engine.create_user("u")
        listener = await engine.create_listener("l")
        await engine.top_up(user, 30)
        call = await engine.start_call(user, listener)
        # 30 coins pay three 0.2 s minutes; the shard's own timer drops the call after them.
        row = await eventually(
            lambda: _settled(engine, call["call_id"]), timeout_s=30, what="call dropped"
        )
        assert (row["end_reason"], row["billed_minutes"]) == ("insufficient_coins", 3)
        assert await engine.heartbeat(user) is True  # the embedded Redis answers
        assert all(n == 0 for _, n in await run_audit(await get_pool(engine.database_url)))
    finally:
        await engine.stop()
    assert (tmp_path / "pg").is_dir()  # the data stays for the next start


async def _settled(engine, call_id):
    row = await engine.get_call(call_id)
    return row if row["status"] != "ongoing" else None


async def test_actor_per_call_refuses_a_call_it_cannot_hold(services, pool, ray_session):
    engine = await Engine(engine_config(services, "actor-per-call", actors_per_node_max=3)).start()
    try:
        users = [await engine.create_user(f"u{i}") for i in range(2)]
        listeners = [await engine.create_listener(f"l{i}") for i in range(2)]
        for u in users:
            await engine.top_up(u, 100)
        await engine.placement.reap()  # top-ups made wallet actors; idle ones retire
        await engine.start_call(users[0], listeners[0])
        with pytest.raises(CapacityExceeded, match="at most 3 per node.*--placement sharded"):
            await engine.start_call(users[1], listeners[1])
        assert await pool.fetchval("SELECT count(*) FROM calls") == 1
    finally:
        await engine.stop()


def test_configuration_comes_from_the_environment_and_flags():
    cfg = from_env(
        {
            "DATABASE_URL": "postgresql://u:secret@db/x",
            "BILLING_SHARDS": "4",
            "BILLING_MINUTE_SECONDS": "0.5",
            "BILLING_BATCH_SIZE_MAX": "500",
            "BILLING_RATE_CARD": '{"coins_per_minute": {"audio": 12, "video": 70}}',
        },
        placement="actor-per-call",
    )
    assert (cfg.shards, cfg.minute_seconds, cfg.placement) == (4, 0.5, "actor-per-call")
    assert cfg.writer.batch_size_max == 500
    assert cfg.rate_card.rates("audio", "gold") == (12, 180)
    assert "secret" not in str(cfg.public())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BILLING_SHARDS": "two"}, "BILLING_SHARDS"),
        ({"BILLING_SHARDS": "0"}, "shards"),
        ({"BILLING_PLACEMENT": "cloud"}, "placement"),
        ({"BILLING_RATE_CARD": '{"coins_per_minute": {"audio": 0, "video": 1}}'}, "rate"),
        ({"BILLING_MINUTE_SECONDS": "-1"}, "minute_seconds"),
    ],
)
def test_bad_configuration_is_refused_by_name(env, message):
    with pytest.raises(InvalidInput, match=message):
        from_env(env)


def test_passwords_are_masked():
    assert (
        mask_url("postgresql://billing:hunter2@db:5432/x") == "postgresql://billing:***@db:5432/x"
    )
    assert mask_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("postgresql://postgres@db/x") == "postgresql://postgres@db/x"


async def test_unreachable_postgres_is_a_connection_error_that_names_it_masked():
    from persistence.db import get_pool

    with pytest.raises(ConnectionError, match=r"u:\*\*\*@127\.0\.0\.1:1") as e:
        await asyncio.wait_for(get_pool("postgresql://u:pw@127.0.0.1:1/x"), timeout=20)
    assert "pw" not in str(e.value)


def _in_a_fresh_process(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_ray_address_that_does_not_answer_fails_in_bounded_time_naming_it():
    started = time.monotonic()
    out = _in_a_fresh_process(
        "from engine.runtime import cluster\n"
        "try:\n"
        "    cluster.join('127.0.0.1:1', 'billing')\n"
        "except ConnectionError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    assert "EngineUnavailable cannot reach the Ray cluster at 127.0.0.1:1" in out.stdout, out
    assert time.monotonic() - started < 60


def test_a_record_left_by_a_dead_engine_or_ray_head_is_not_a_cluster(tmp_path):
    import json

    from engine.runtime import cluster

    (tmp_path / "engine.json").write_text(json.dumps({"ray_address": "127.0.0.1:1"}))
    (tmp_path / "ray_current_cluster").write_text("127.0.0.1:1")
    assert cluster.recorded(str(tmp_path)) is None
    # Neither the dead engine's record nor a `ray start` head's is joined: a Ray of its own.
    # It runs no log monitor unless the actors' logs are asked for (BILLING_LOG_ACTORS), and
    # no API server (dashboard.py) or autoscaler monitor unless its dashboard is.
    out = _in_a_fresh_process(
        "import os, psutil, ray\n"
        "from engine.runtime import cluster\n"
        "def extras():\n"
        "    session = ray._private.worker.global_worker.node.get_session_dir_path()\n"
        "    cmds = [' '.join(p.info['cmdline'] or []) for p in psutil.process_iter(['cmdline'])]\n"
        "    kinds = ('log_monitor.py', '_private/monitor.py', 'dashboard/dashboard.py')\n"
        "    return [sum(k in c and session in c for c in cmds) for k in kinds]\n"
        f"print(cluster.join(None, 'billing', {str(tmp_path)!r}).via, *extras())\n"
        "cluster.leave()\n"
        "os.environ['BILLING_LOG_ACTORS'] = '1'\n"
        "print('whole', cluster.join(None, 'billing', dashboard=True).via, *extras())\n"
    )
    assert out.stdout.split("\n")[:2] == ["own 0 0 0", "whole own 1 1 1"], out


async def test_attaching_where_no_engine_runs_is_refused_naming_where(services, ray_session):
    from engine import NotRunning

    config = engine_config(services, "sharded", namespace="billing-nobody-here")
    with pytest.raises(NotRunning, match="no billing engine is running in Ray namespace "):
        await Engine(config).start(attach_only=True)
    from engine.runtime import cluster

    assert cluster.Writer.running(config.namespace) is None  # nothing was started there


def test_a_data_dir_in_use_is_refused_naming_the_process_and_how_to_attach(tmp_path):
    from engine import BillingError, DataDirInUse, OperatorError
    from engine.embedded import DataDirLock

    # An operator's mistake, not a refusal of a request (the HTTP door answers those as 4xx).
    assert issubclass(DataDirInUse, OperatorError) and not issubclass(DataDirInUse, BillingError)

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from engine.embedded import DataDirLock\n"
            f"DataDirLock({str(tmp_path)!r}).acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirInUse, match=f"in use by process {holder.pid}.*engine.json"):
            DataDirLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    DataDirLock(str(tmp_path)).acquire().release()  # the kernel let go when the holder died


def test_json_logs_carry_the_call_and_user_they_are_about():
    out = _in_a_fresh_process(
        "import logging\n"
        "from engine import logs\n"
        "logs.configure(fmt='json')\n"
        "logging.getLogger('billing.host').warning('call %d: tick failed', 7,"
        " extra=logs.about(call_id=7, user_id=3))\n"
    )
    import json

    line = json.loads(out.stderr.strip().splitlines()[-1])
    assert line["message"] == "call 7: tick failed" and line["level"] == "warning"
    assert (line["call_id"], line["user_id"], line["logger"]) == (7, 3, "billing.host")


def _add_user(name: str, lock: str, barrier, turn: int) -> None:
    """In a process of its own: pgserver's look-up-then-`useradd`, with the time between the
    two widened as a loaded machine widens it."""
    import subprocess as real

    import pgserver.utils

    from engine.embedded import system_user_exists

    def slow_run(*args, **kw):
        time.sleep(0.1 + 0.15 * turn)  # one after another: each finds the user its look-up missed
        return real.run(*args, **kw)

    pgserver.utils.subprocess = type("Slow", (), {"run": staticmethod(slow_run)})
    barrier.wait()
    system_user_exists(name, lock)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root adds a system user (as pgserver does)")
def test_processes_starting_embedded_postgres_at_once_add_its_user_once(tmp_path):
    """pgserver, as root, adds its system user on the first start: CI's two test workers on a
    fresh machine both ran `useradd` and the second failed (exit 9). Here six processes at once,
    on a user of the test's own, each slow between its look-up and its `useradd`."""
    import multiprocessing
    import pwd

    name = f"billingt{os.getpid()}"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(6)
    procs = [
        ctx.Process(target=_add_user, args=(name, str(tmp_path / "lock"), barrier, turn))
        for turn in range(6)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        assert pwd.getpwnam(name).pw_name == name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_a_machine_lock_held_elsewhere_is_waited_for_a_bounded_time(tmp_path):
    from engine.embedded import machine_lock

    path = str(tmp_path / "lock")
    with machine_lock(path, 1.0):
        started = time.monotonic()
        refused = pytest.raises(TimeoutError, match=f"lock {path} still held .* after 0.3 s")
        with refused, machine_lock(path, 0.3):
            pass
        assert time.monotonic() - started >= 0.3
    with machine_lock(path, 0.3):  # let go: taken at once
        pass
