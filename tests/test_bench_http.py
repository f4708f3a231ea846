"""The HTTP rows of the benchmark, small: wrk drives the engine's API, the older system's
FastAPI app and Serve's floor app in one run, each kind of request its fixed count, answered
without a refusal, and the rows land in the JSON."""

import json
import os
import shutil

import pytest

from tests.test_cli import run
from tests.test_service import embedded_env

# One worker runs the end-to-end tests one after another (pyproject's addopts).
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("end_to_end")]

REQUESTS = 40
SERVE_SHARED = "/tmp/haproxy-serve"  # where Serve puts HAProxy's files unless told otherwise


def serve_shared_dirs() -> set[str]:
    return set(os.listdir(SERVE_SHARED)) if os.path.isdir(SERVE_SHARED) else set()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_http_rows_stand_beside_the_older_app_and_serves_floor(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--paths", "http_requests", "seed_http", "serve_floor"]
    args += ["--calls", "4", "--requests", str(REQUESTS), "--json", str(out)]
    before = serve_shared_dirs()
    done = run(args, env=embedded_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    # Its HAProxy kept its admin socket in a private folder of its own, as `up`'s does, not in
    # Serve's shared one (where the socket is mode 666).
    assert serve_shared_dirs() - before == set()
    rows = json.loads(out.read_text())["runs"]
    kinds = {(r["path"], r["note"]) for r in rows}
    for path in ("http_requests", "seed_http"):
        for kind in ("top_up", "wallet", "heartbeat", "start_call", "end_call"):
            assert (path, kind) in kinds, (path, kind, kinds)
    assert ("serve_floor", "floor") in kinds
    for r in rows:
        x = r["extra"]
        assert x["load"] == "wrk" and x["finished"], r
        assert x["non_2xx"] == 0 and x["socket_errors"] == 0, r
        # wrk may build a request it never sends (a connection opened again): at most one per
        # connection goes missing from a row's count, and ends follow the starts made.
        assert REQUESTS - 2 * r["calls"] <= x["requests"] <= REQUESTS, r
        assert r["call_minutes_per_s"] > 0 and r["tick_to_commit_ms_p99"] > 0, r
    assert "x seed_http" in done.stdout and "x serve_floor" in done.stdout
    assert "http_requests" in done.stdout and "…" not in done.stdout  # whole, when piped


def test_wrk_is_stopped_even_when_its_first_sigint_only_set_a_flag(monkeypatch):
    """wrk's SIGINT handler only sets a flag: one that lands before its main thread sleeps out
    `-d` is not seen (CI saw wrk sleep on). A stand-in that ignores the first SIGINT as wrk
    then does is stopped by the next; one that never stops is killed in bounded time."""
    import subprocess
    import sys

    from bench import http

    def started(script: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"  # its handler is set
        return proc

    # Exits on its second SIGINT, printing how many it got.
    stubborn = (
        "import signal, sys, time\n"
        "got = []\n"
        "def on_int(*_):\n"
        "    got.append(1)\n"
        "    if len(got) == 2:\n"
        "        print('summary', len(got), flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    proc = started(stubborn)
    out, _ = http.interrupt(proc)
    assert out == "summary 2\n" and proc.returncode == 0

    never = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = started(never)
    monkeypatch.setattr(http, "WRK_STOP_S_MAX", 2)
    with pytest.raises(RuntimeError, match="did not stop within 2 s of SIGINT"):
        http.interrupt(proc)
    assert proc.poll() is not None  # killed, not left sleeping
