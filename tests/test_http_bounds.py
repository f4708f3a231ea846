"""A replica's own HTTP server (uvicorn, with engine/http/bounds.py installed as Serve's replica
does): too many headers or too large ones are 431, a client that takes too long to send its
request line and headers is cut, and a well-formed request on a kept-alive connection is
served as before."""

import asyncio
import contextlib
import socket
import time

import pytest
import uvicorn

import engine.http.bounds as http_bounds

TIMEOUT_S = 1


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def server(monkeypatch):
    monkeypatch.setitem(uvicorn.config.HTTP_PROTOCOLS, "auto", "x")  # restored after
    http_bounds.install(headers_max=20, header_bytes_max=2048, request_timeout_s=TIMEOUT_S)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    srv = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    yield port
    srv.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(task, 5)


async def exchange(port: int, data: bytes, pause_s: float = 0.0) -> tuple[bytes, float]:
    """Send `data` (a byte every `pause_s` if given); what came back until the server closed
    the connection (or 5 s), and when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        if pause_s:
            for b in data:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(pause_s)
                if reader.at_eof():
                    break
        else:
            writer.write(data)
            await writer.drain()
        got = await asyncio.wait_for(reader.read(-1), 5)
    except (ConnectionResetError, BrokenPipeError):
        got = b""
    finally:
        writer.close()
    return got, time.monotonic() - started


async def test_too_many_headers_or_too_large_ones_are_431(server):
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(25))
    got, _ = await exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert got.startswith(b"HTTP/1.1 431") and b"more than 20 headers" in got
    large = b"x-big: " + b"a" * 4096 + b"\r\n"
    got, _ = await exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n" + large + b"\r\n")
    assert got.startswith(b"HTTP/1.1 431") and b"2048 bytes" in got
    long_url = b"GET /" + b"a" * 4096 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert (await exchange(server, long_url))[0].startswith(b"HTTP/1.1 431")


async def test_a_request_within_the_bounds_is_served_twice_on_one_connection(server):
    one = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        for _ in range(2):
            writer.write(one)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(TIMEOUT_S * 1.5)  # idle between requests: keep-alive's own
    finally:
        writer.close()


async def test_a_client_slow_to_send_its_headers_or_silent_is_cut(server):
    slow = b"GET / HTTP/1.1\r\nHost: a\r\nx-slow: " + b"a" * 100 + b"\r\n\r\n"
    got, took = await exchange(server, slow, pause_s=0.05)
    assert b"200" not in got and TIMEOUT_S <= took < TIMEOUT_S + 2
    got, took = await exchange(server, b"")
    assert got == b"" and TIMEOUT_S <= took < TIMEOUT_S + 2
