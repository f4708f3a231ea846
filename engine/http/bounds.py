"""Bounds on what a replica's own HTTP server reads before the app sees a request.

In Serve's high-throughput mode each replica listens for HTTP itself (on loopback, behind
HAProxy), with uvicorn's httptools protocol, which bounds neither the headers nor the time a
client takes to send them: measured, it took 200,000 headers and a 16 MB header. HAProxy
refuses those at the front door; these bounds make the replica's own port refuse them too:

- at most `headers_max` headers and `header_bytes_max` bytes of request line and headers,
  else 431 and the connection closed;
- the request line and headers within `request_timeout_s` of the connection (or of the
  request before, on a kept-alive one), else the connection is closed;
- a kept-alive connection idle for `idle_timeout_s` is closed (uvicorn's keep-alive timer).

`install` points uvicorn's "auto" protocol at `Bounded` in the replica's process, before Serve
starts the replica's server (Serve passes uvicorn no protocol of its own).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_limits = {"headers_max": 100, "header_bytes_max": 16 * 1024, "request_timeout_s": 10}


def install(headers_max: int, header_bytes_max: int, request_timeout_s: int) -> None:
    import uvicorn.config

    _limits.update(
        headers_max=headers_max,
        header_bytes_max=header_bytes_max,
        request_timeout_s=request_timeout_s,
    )
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:Bounded"


class Bounded(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_bytes = 0
        self._too_big = ""
        self._head_timer = None
        self._await_head()

    def _await_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(_limits["request_timeout_s"], self._too_slow)

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_timer is None:
            self._await_head()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > _limits["header_bytes_max"]:
            self._stop(f"request line and headers over {_limits['header_bytes_max']} bytes")

    def _stop(self, why: str) -> None:
        # httptools turns an exception in a callback into a parser error, which uvicorn
        # answers 400 (send_400_response): the reason kept here makes that answer a 431.
        self._too_big = why
        raise TooBig(why)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if len(self.headers) >= _limits["headers_max"]:
            self._stop(f"more than {_limits['headers_max']} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._too_big:
            return super().send_400_response(msg)
        body = json.dumps({"error": {"type": "HeadersTooLarge", "message": self._too_big}})
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n{body}".encode()
        )
        self.transport.close()


class TooBig(Exception):
    pass
