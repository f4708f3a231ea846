"""Fault injection for tests: a TCP proxy in front of PostgreSQL that can be cut and restored."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse


def target_of(url: str) -> tuple[str | None, int | None, str | None]:
    """(host, port, unix socket path) of a PostgreSQL URL."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if "host" in query and query["host"][0].startswith("/"):
        return None, None, f"{query['host'][0]}/.s.PGSQL.{parts.port or 5432}"
    return parts.hostname or "127.0.0.1", parts.port or 5432, None


class PgProxy:
    """127.0.0.1:port -> the database. `cut()` drops every connection and refuses new ones."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.host, self.port, self.unix = target_of(database_url)
        self.listen_port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def url(self) -> str:
        parts = urllib.parse.urlsplit(self.database_url)
        return (
            f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{self.listen_port}{parts.path}"
        )

    async def start(self) -> PgProxy:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.listen_port or 0, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        if self.unix:
            up_r, up_w = await asyncio.open_unix_connection(self.unix)
        else:
            up_r, up_w = await asyncio.open_connection(self.host, self.port)
        self._conns |= {writer, up_w}

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns -= {writer, up_w}

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    async def restore(self) -> None:
        await self.start()
