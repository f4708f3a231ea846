"""The only package that talks to PostgreSQL or Redis."""

from persistence.client import ClientLimits, WriterClient
from persistence.db import close_pools, get_pool, mask_url
from persistence.presence import Presence
from persistence.writer import LedgerWriter, WriterLimits

__all__ = [
    "ClientLimits",
    "LedgerWriter",
    "Presence",
    "WriterClient",
    "WriterLimits",
    "close_pools",
    "get_pool",
    "mask_url",
]
