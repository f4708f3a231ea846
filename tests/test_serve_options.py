"""The HTTP API's serving options: read from the environment and flags, checked, and turned
into Serve's own variables for its high-throughput mode."""

import pytest

from engine import InvalidInput
from engine.http.options import (
    FALLBACK_PORT_ENV,
    HAPROXY_PORTS,
    HAPROXY_PORTS_ENV,
    ServeOptions,
    from_env,
)


def test_the_throughput_mode_is_on_by_default_and_is_serves_own_variables():
    env = ServeOptions().env()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    off = ServeOptions(throughput_mode=False).env()
    assert off["RAY_SERVE_ENABLE_HA_PROXY"] == off["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    # In both modes: no port shared with another engine (SO_REUSEPORT off), and the door's
    # idle bound for HAProxy's clients.
    for given in (env, off):
        assert given["SERVE_SOCKET_REUSE_PORT_ENABLED"] == "0"
        assert given["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "60"


def test_options_come_from_the_environment_then_the_flags():
    env = {"BILLING_HTTP_REPLICAS": "3", "BILLING_HTTP_THROUGHPUT_MODE": "off"}
    options = from_env(env, port=8123)
    assert (options.replicas, options.throughput_mode, options.port) == (3, False, 8123)
    assert from_env({"BILLING_HTTP_PORT": "9000"}, port=None).port == 9000


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"BILLING_HTTP_REPLICAS": "two"}, "BILLING_HTTP_REPLICAS"),
        ({"BILLING_HTTP_REPLICAS": "0"}, "replicas"),
        ({"BILLING_HTTP_THROUGHPUT_MODE": "maybe"}, "BILLING_HTTP_THROUGHPUT_MODE"),
        ({"BILLING_HTTP_PORT": "70000"}, "port"),
    ],
)
def test_a_bad_option_is_refused_by_name(env, words):
    with pytest.raises(InvalidInput, match=words):
        from_env(env)


def test_applying_the_mode_gives_haproxy_and_the_fallback_proxy_free_ports_of_their_own(
    monkeypatch,
):
    import os

    # A copy of the environment: this test process must not start Serve in that mode later.
    ours = (*HAPROXY_PORTS_ENV, FALLBACK_PORT_ENV)
    env = {k: v for k, v in os.environ.items() if k not in ours}
    monkeypatch.setattr(os, "environ", env)
    ServeOptions().apply()
    ports = [int(env[v]) for v in ours]
    assert len(set(ports)) == 3 and all(p in HAPROXY_PORTS for p in ports)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


def test_the_doors_bounds_are_named_settings_each_refused_by_name_when_bad():
    env = {
        "BILLING_HTTP_BODY_BYTES_MAX": "1024",
        "BILLING_HTTP_HEADERS_MAX": "30",
        "BILLING_HTTP_HEADER_BYTES_MAX": "4096",
        "BILLING_HTTP_REQUEST_TIMEOUT_S": "5",
        "BILLING_HTTP_IDLE_TIMEOUT_S": "30",
        "BILLING_HTTP_KEY_FAILURES_MAX": "7",
        "BILLING_HTTP_KEY_FAILURE_WINDOW_S": "90",
    }
    o = from_env(env)
    assert (o.body_bytes_max, o.headers_max, o.header_bytes_max) == (1024, 30, 4096)
    assert (o.request_timeout_s, o.idle_timeout_s) == (5, 30)
    assert (o.key_failures_max, o.key_failure_window_s) == (7, 90)
    for var in env:
        with pytest.raises(InvalidInput, match=var):
            from_env({var: "none"})
        with pytest.raises(InvalidInput):
            from_env({var: "0"})


def test_haproxy_ports_skip_one_that_is_listened_on():
    import socket

    from engine.http.options import free_ports

    first = free_ports(1, 8000)[0]
    with socket.socket() as taken:
        taken.bind(("", first))
        taken.listen()
        again = free_ports(2, 8000)
    assert first not in again and len(set(again)) == 2
