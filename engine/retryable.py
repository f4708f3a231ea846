"""Failures to reach PostgreSQL or Redis from this process, raised as the one retryable error."""

from __future__ import annotations

import functools

from actors.errors import EngineUnavailable
from persistence.writer import TRANSIENT_ERRORS


def retryable(method):
    """An Engine method whose failures to reach PostgreSQL or Redis from this process are
    raised as the one retryable `EngineUnavailable` (Ray's own are turned so in `remote`)."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except TRANSIENT_ERRORS as e:
            if isinstance(e, EngineUnavailable):
                raise
            raise EngineUnavailable(f"PostgreSQL or Redis unreachable: {e}") from e

    return wrapper
