"""`billing-engine stop`: stop the engine `up` runs on a data dir, from another process, as
SIGTERM to `up` would: it drains the writer, stops what it started, and exits. No Ray needed."""

from __future__ import annotations

import signal
import time

import psutil

from actors.errors import OperatorError
from engine import record

STOP_WAIT_S = 120.0  # how long `stop` waits for `up` to drain and exit


def running_up(data_dir: str) -> psutil.Process:
    """The `up` process recorded in `data_dir`, alive; else an OperatorError saying why."""
    found = record.read(data_dir)
    if found is None:
        raise OperatorError(f"no engine is up on data dir {data_dir}: no {record.path(data_dir)}")
    pid, started = found.get("pid"), found.get("started")
    if type(pid) is not int:
        raise OperatorError(f"{record.path(data_dir)} names no process: {found}")
    try:
        proc = psutil.Process(pid)
        # A pid reused since by another process is not the engine's.
        if started is not None and abs(proc.create_time() - started) > 1.0:
            raise psutil.NoSuchProcess(pid)
    except psutil.AccessDenied:
        raise OperatorError(
            f"process {pid} (the engine of {data_dir}) is not this user's"
        ) from None
    except psutil.NoSuchProcess:
        raise OperatorError(
            f"the engine recorded in {record.path(data_dir)} (process {pid}) is gone; `up` "
            f"starts again at once"
        ) from None
    return proc


def stop(data_dir: str, wait_s: float = STOP_WAIT_S) -> float:
    """SIGTERM to the `up` of `data_dir`, then wait until it exited: the seconds it took."""
    proc = running_up(data_dir)
    started = time.monotonic()
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(wait_s)
    except psutil.AccessDenied:
        raise OperatorError(
            f"process {proc.pid} (the engine of {data_dir}) is not this user's"
        ) from None
    except psutil.TimeoutExpired:
        raise OperatorError(
            f"the engine (process {proc.pid}) did not stop within {wait_s:.0f} s of SIGTERM; "
            f"it may still be draining its writer: look at its output"
        ) from None
    return time.monotonic() - started


def not_ours(pid: int, data_dir: str) -> str:
    return f"process {pid}, the engine of {data_dir}, is another user's: stop it as that user"
