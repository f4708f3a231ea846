"""Serve's HAProxy made private (engine/http/haproxy.py), on the config Ray's own template renders:
the admin socket 0600, the stats and Prometheus pages on loopback, `timeout http-request`, the
client's address in a header a client cannot send through it, HAProxy itself accepting the
result; the wrapper hardening each config before it becomes HAProxy, and refusing to start
HAProxy on a config it does not recognise; the run dir private and removed."""

import os
import socket
import stat
import subprocess
import time

import httpx
import pytest

import engine.http.haproxy as haproxy


def ray_config(tmp_path, ports=(18000, 18404, 18101), apps=True) -> str:
    """The config Ray Serve writes for an app with one replica and the fallback proxy (none
    without `apps`: before the API is deployed)."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    cfg = HAProxyConfig(
        http_options=HTTPOptions(host="127.0.0.1", port=ports[0]),
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "server-state"),
        stats_port=ports[1],
        metrics_port=ports[2],
    )
    backend = BackendConfig(
        name="http-billing",
        path_prefix="/",
        servers=[ServerConfig(name="replica", host="127.0.0.1", port=30000)],
        fallback_server=ServerConfig(name="fallback", host="127.0.0.1", port=18500),
        app_name="billing",
    )
    backends = {"http-billing": backend} if apps else {}
    api = HAProxyApi(cfg, backends, str(tmp_path / "haproxy.cfg"))
    api._generate_config_file_internal()
    return (tmp_path / "haproxy.cfg").read_text()


def test_rays_config_is_open_and_the_hardened_one_is_private_and_valid(tmp_path):
    config = ray_config(tmp_path)
    assert " mode 666 " in config and "bind :18101" in config and "bind *:18404" in config
    assert "timeout http-request" not in config
    with pytest.raises(haproxy.Refused):
        haproxy.check(config)
    hardened = haproxy.harden(config, 7)
    haproxy.check(hardened)
    assert " mode 600 " in hardened and "timeout http-request 7s" in hardened
    assert "bind 127.0.0.1:18101" in hardened and "bind 127.0.0.1:18404" in hardened
    assert "bind 127.0.0.1:18000\n    http-request set-header x-billing-client %[src]" in hardened
    assert haproxy.harden(hardened, 7) == hardened  # once or twice, the same
    (tmp_path / "hardened.cfg").write_text(hardened)
    checked = subprocess.run(
        [haproxy.real_binary(), "-c", "-f", str(tmp_path / "hardened.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_before_the_api_is_deployed_haproxy_answers_503_with_retry_after_not_404(tmp_path):
    ports = [free_port() for _ in range(3)]
    config = ray_config(tmp_path, ports, apps=False)
    assert "return status 404" in config
    (tmp_path / "hardened.cfg").write_text(haproxy.harden(config, 7))
    proc = subprocess.Popen(
        [haproxy.real_binary(), "-db", "-f", str(tmp_path / "hardened.cfg")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{ports[0]}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.text.endswith("}\n") and r.json()["error"]["type"] == "EngineUnavailable"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "change, words",
    [
        (("mode 666 ", ""), "stats socket"),
        (("\ndefaults\n", "\n"), "defaults"),
        (("listen stats\n  bind *:18404", "listen stats\n  bind 10.0.0.1:18404"), "listen stats"),
        (("frontend prometheus", "frontend metrics\n    bind :9999\nfrontend prometheus"), ":9999"),
    ],
)
def test_a_config_that_does_not_read_as_expected_is_refused(tmp_path, change, words):
    config = ray_config(tmp_path).replace(*change)
    with pytest.raises(haproxy.Refused, match=words):
        haproxy.harden(config, 7)


def fake_haproxy(tmp_path) -> str:
    """A stand-in for HAProxy that writes down its arguments and the config it was given."""
    path = tmp_path / "fake-haproxy"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        'while [ "$1" != "-f" ]; do shift; done\n'
        f'cp "$2" {tmp_path}/seen.cfg\n'
    )
    path.chmod(0o755)
    return str(path)


def test_the_wrapper_hardens_each_config_then_becomes_haproxy(tmp_path, monkeypatch):
    monkeypatch.setenv(haproxy.BINARY_ENV, fake_haproxy(tmp_path))
    run = haproxy.RunDir(request_timeout_s=9)
    try:
        assert stat.S_IMODE(os.stat(run.path).st_mode) == 0o700
        env = run.env()
        assert all(v.startswith(run.path) for v in env.values())
        config = tmp_path / "node" / "haproxy.cfg"
        config.parent.mkdir()
        config.write_text(ray_config(tmp_path))
        args = ["-db", "-f", str(config), "-dR", "-sf", "123"]
        done = subprocess.run([env[haproxy.BINARY_ENV], *args], timeout=30)
        assert done.returncode == 0
        assert (tmp_path / "args").read_text().split() == args  # HAProxy's own arguments
        seen = (tmp_path / "seen.cfg").read_text()
        assert "timeout http-request 9s" in seen and " mode 600 " in seen
        haproxy.check(seen)

        (tmp_path / "args").unlink()
        config.write_text(ray_config(tmp_path).replace("\ndefaults\n", "\n"))
        refused = subprocess.run(
            [env[haproxy.BINARY_ENV], *args], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode == 1 and "HAProxy not started" in refused.stderr
        assert not (tmp_path / "args").exists()  # HAProxy never ran on it
    finally:
        run.remove()
    assert not os.path.exists(run.path)


def test_the_wrapper_runs_the_operators_haproxy_not_itself(tmp_path, monkeypatch):
    first = haproxy.RunDir(request_timeout_s=5)
    try:
        monkeypatch.setenv(haproxy.BINARY_ENV, first.env()[haproxy.BINARY_ENV])
        assert haproxy.real_binary() != os.environ[haproxy.BINARY_ENV]  # an inherited wrapper
        monkeypatch.setenv(haproxy.BINARY_ENV, "/opt/haproxy")
        assert haproxy.real_binary() == "/opt/haproxy"
    finally:
        first.remove()
