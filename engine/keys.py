"""API keys: what a key is, the scopes it may hold, how the door knows one when it sees it, and
how wrong keys are slowed.

A key is 256 random bits from `secrets` (`bk_` and 43 URL-safe characters). The engine keeps
only its SHA-256 (PostgreSQL's `api_keys`, persistence/api_keys.py; a Serve replica holds the
digests of the live keys): the key is shown once, when it is made, and never again, in no log,
error, event, `inspect` or Serve config. A plain SHA-256 is enough for 256 random bits (no
dictionary to guess from); the door finds a key by its digest, so the time a look-up takes
says nothing about a key's characters.

Scopes, least privilege: `read` (every GET and the events), `calls` (people, top-ups, spends,
calls, heartbeats), `payouts` (withdrawals, settling payouts, refunds), `admin` (the keys).
A request outside its key's scopes is refused naming the scope it needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from actors.errors import InvalidInput, UnknownKey
from persistence import api_keys

SCOPES = ("read", "calls", "payouts", "admin")
KEY_PREFIX = "bk_"
KEY_BYTES = 32  # 256 bits
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
FIRST_KEY_NAME = "default"  # the key the first `up` on a data dir makes, with every scope
KEYS_MAX = 1_000  # live keys at once; a key past it is refused (rotation needs two, not 1,000)
# How often a replica reads the live keys from PostgreSQL (engine/http/door.py): a revoked key
# is refused on every replica within this (and one read) of its revocation.
KEYS_REFRESH_S = 0.25
# A new key is handed out only once every replica has had time to read it, so that a client
# that switches to it at once (a rotation) is never refused.
KEYS_PROPAGATION_S = 2 * KEYS_REFRESH_S


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def digest(key: str) -> str:
    """What the engine keeps of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise InvalidInput(
            f"a key's name is 1 to 64 of a-z, 0-9, '.', '_', '-' (starting with a letter or "
            f"digit), got {name!r}"
        )
    return name


def check_scopes(scopes) -> tuple[str, ...]:
    """The scopes asked for, in SCOPES' order; refused naming any that is not one."""
    if isinstance(scopes, str):
        scopes = [s for s in scopes.replace(",", " ").split() if s]
    if not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidInput(f"scopes must name at least one of {', '.join(SCOPES)}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope {unknown[0]!r}: scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in scopes)


@dataclass(frozen=True)
class Key:
    """A key as the door knows it: its name, its digest and its scopes (never the key)."""

    name: str
    sha256: str
    scopes: tuple[str, ...]

    def as_arg(self) -> dict:
        """As it travels to a replica (Serve's application arguments)."""
        return {"name": self.name, "sha256": self.sha256, "scopes": list(self.scopes)}

    @classmethod
    def from_arg(cls, arg: dict) -> Key:
        sha = arg.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise InvalidInput(f"key {arg.get('name')!r}: sha256 must be 64 hex digits")
        return cls(check_name(arg.get("name")), sha, check_scopes(arg.get("scopes")))


class KeyRing:
    """The live keys, by digest. `fixed` keys (one from the environment's BILLING_API_TOKEN)
    stay whatever the stored ones become."""

    def __init__(self, keys=(), fixed=()) -> None:
        self.fixed = {k.sha256: k for k in fixed}
        self.by_digest = dict(self.fixed)
        self.replace(keys)

    def replace(self, keys) -> None:
        self.by_digest = {k.sha256: k for k in keys} | self.fixed

    def find(self, given: str) -> Key | None:
        return self.by_digest.get(digest(given)) if given else None

    def __len__(self) -> int:
        return len(self.by_digest)


async def create(pool, name, scopes) -> dict:
    """Make a key: its row (name, scopes, created_at) with `key`, the one time it is shown."""
    name, scopes = check_name(name), check_scopes(scopes)
    key = new_key()
    row = await api_keys.create(pool, name, digest(key), scopes, KEYS_MAX)
    await asyncio.sleep(KEYS_PROPAGATION_S)
    return row | {"key": key}


async def revoke(pool, name) -> dict:
    """Revoke a key: refused from then on, on every replica within KEYS_REFRESH_S."""
    row = await api_keys.revoke(pool, check_name(name))
    if row is None:
        raise UnknownKey(f"no key named {name!r}")
    return row


async def listed(pool) -> list[dict]:
    return await api_keys.listed(pool)


async def live(pool) -> list[Key]:
    return [Key(n, sha, tuple(scopes)) for n, sha, scopes in await api_keys.live(pool)]


# Wrong keys are slowed per source address: past KEY_FAILURES_MAX in KEY_FAILURE_WINDOW_S, a
# source is answered 429 with Retry-After until its window ends, the right key included (else
# guessing would only cost the 429s). The sources remembered are bounded; the oldest go first.
KEY_FAILURES_MAX = 20
KEY_FAILURE_WINDOW_S = 60.0
KEY_FAILURE_SOURCES_MAX = 10_000


class FailedKeys:
    """Failures per source in fixed windows: `blocked(source)` is the seconds left to wait, or
    None; `await failed(source)` counts one. With `shared` (`await shared(source, window_s)`
    -> (failures, seconds left) or None), the count is every replica's (Redis,
    persistence/door_counts.py); without, or while it does not answer, this replica's own."""

    def __init__(
        self,
        failures_max: int = KEY_FAILURES_MAX,
        window_s: float = KEY_FAILURE_WINDOW_S,
        sources_max: int = KEY_FAILURE_SOURCES_MAX,
        clock=time.monotonic,
        shared=None,
    ) -> None:
        self.failures_max = failures_max
        self.window_s = window_s
        self.sources_max = sources_max
        self.clock = clock
        self.shared = shared
        self._seen: OrderedDict[str, list] = OrderedDict()  # source -> [window start, count]

    def _window(self, source: str) -> list | None:
        seen = self._seen.get(source)
        if seen is not None and self.clock() - seen[0] >= self.window_s:
            del self._seen[source]
            return None
        return seen

    def blocked(self, source: str) -> int | None:
        seen = self._window(source)
        if seen is None or seen[1] < self.failures_max:
            return None
        return max(1, int(seen[0] + self.window_s - self.clock() + 0.999))

    async def failed(self, source: str) -> int | None:
        """Count a wrong key from `source`; the seconds it must now wait if that took it past
        failures_max (so on any replica the failure after the last allowed one is a 429)."""
        seen = self._window(source)
        if seen is None:
            while len(self._seen) >= self.sources_max:
                self._seen.popitem(last=False)
            self._seen[source] = seen = [self.clock(), 0]
        seen[1] += 1
        counted = None if self.shared is None else await self.shared(source, self.window_s)
        if counted is not None:  # every replica's count, and the window Redis keeps
            n, left_s = counted
            seen[:] = [self.clock() - (self.window_s - left_s), max(n, seen[1])]
        return self.blocked(source) if seen[1] > self.failures_max else None
