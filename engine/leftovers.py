"""The servers a run started, remembered in its data dir, so that the next run stops what a
crashed one left behind.

The embedded PostgreSQL and Redis daemonize (they are no child of the process that started
them), and Serve's HAProxy outlives the Ray worker that started it when Ray is shut down or
killed: none of them dies with a crashed `up`. Each is written to `servers.json` when it
starts, with its creation time (a pid alone may have been reused), or for HAProxy, which
replaces its own process on every reload, with its configuration's folder; `reap` stops those
still running. Only the holder of the data dir's lock reaps, so none of them serves a live run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time

import psutil

log = logging.getLogger("billing.leftovers")

RECORD_NAME = "servers.json"
RUN_DIR = "run-dir"  # a folder a run made for its servers (HAProxy's), removed with them
STOP_WAIT_S = 5.0  # a server asked to stop gets this long before it is killed
EXIT_POLL_S = 0.02  # how often a stopping server is looked at


def _path(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), RECORD_NAME)


def _read(data_dir: str) -> list[dict]:
    try:
        with open(_path(data_dir)) as f:
            out = json.load(f)
        return [s for s in out if isinstance(s, dict) and "name" in s]
    except (OSError, ValueError, TypeError):
        return []


def remember(data_dir: str, name: str, pid: int | None = None, marker: str | None = None):
    """Note that this run started the server `name`: as process `pid`, or as every process
    of that name whose command line holds `marker`."""
    if pid is not None:
        try:
            entry = {"name": name, "pid": pid, "started": psutil.Process(pid).create_time()}
        except psutil.Error:
            return  # gone already: nothing to stop later
    else:
        entry = {"name": name, "marker": marker}
    servers = [s for s in _read(data_dir) if s != entry and s.get("pid", -1) != pid]
    _write(data_dir, servers + [entry])


def _write(data_dir: str, servers: list[dict]) -> None:
    from engine import private

    private.write_json(_path(data_dir), servers)


def running(data_dir: str, name: str | None = None) -> list[psutil.Process]:
    """The remembered servers (called `name`, if given) that still run: the same processes,
    not a reused pid."""
    servers = [s for s in _read(data_dir) if name is None or s["name"] == name]
    out = []
    for s in (s for s in servers if "pid" in s):
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(s["pid"])
            if abs(p.create_time() - s["started"]) < 0.01:
                out.append(p)
    markers = {(s["name"], s["marker"]) for s in servers if s.get("marker")}
    if markers:
        for p in psutil.process_iter(["name", "cmdline"]):
            line = " ".join(p.info["cmdline"] or ())
            if any(p.info["name"] == n and m in line for n, m in markers):
                out.append(p)
    return out


def wait_exited(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait (at most `timeout_s`) until each has exited; returns those still running. A zombie
    has exited: the servers daemonize, so reaping them is init's business (which took 1.5 s
    here), and psutil's wait_procs would wait for that too."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        if not alive or time.monotonic() >= deadline:
            return alive
        procs = alive
        time.sleep(EXIT_POLL_S)


def stop(procs: list[psutil.Process], wait_s: float = STOP_WAIT_S) -> list[str]:
    """Ask each to stop, kill what has not after `wait_s`; returns what was stopped."""
    names = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{p.name()} (process {p.pid})")
            # SIGINT is PostgreSQL's fast shutdown; Redis (which saves first, as on SIGTERM)
            # and HAProxy stop on it too.
            p.send_signal(signal.SIGINT)
    killed = wait_exited(procs, wait_s)
    for p in killed:
        log.warning("process %s did not stop in %.0f s: killed", p.pid, wait_s)
        with contextlib.suppress(psutil.Error):
            p.kill()
    wait_exited(killed, wait_s)
    return names


def reap(data_dir: str) -> list[str]:
    """Stop every remembered server that still runs, remove the run dirs they used, and forget
    them; the caller holds the data dir's lock, so none of them serves a live run. Returns what
    was stopped."""
    stopped = stop(running(data_dir))
    for s in _read(data_dir):
        if s["name"] == RUN_DIR and s.get("marker"):
            shutil.rmtree(s["marker"], ignore_errors=True)
    forget(data_dir)
    return stopped


def forget(data_dir: str, name: str | None = None) -> None:
    """Forget the remembered servers (called `name`, if given): they stopped."""
    if name is not None:
        _write(data_dir, [s for s in _read(data_dir) if s["name"] != name])
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(_path(data_dir))


def haproxy_under_me() -> list[psutil.Process]:
    """The HAProxy processes under this process (Serve's, under a Ray of our own)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name() == "haproxy":
                out.append(p)
    return out


def haproxy_folders() -> set[str]:
    """The configuration folders of the HAProxy processes under this process: `-f
    DIR/haproxy.cfg` on their command line."""
    out = set()
    for p in haproxy_under_me():
        with contextlib.suppress(psutil.Error):
            args = p.cmdline()
            if "-f" in args[:-1]:
                out.add(os.path.dirname(args[args.index("-f") + 1]))
    return out
