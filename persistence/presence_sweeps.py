"""Presence sweeps, each one Lua script: atomic in Redis, so a heartbeat that lands during a
sweep is never lost, and each costs in proportion to the entries that expired."""

from __future__ import annotations

from redis.exceptions import RedisError

from actors.errors import EngineUnavailable
from persistence import keys
from persistence.db import mask_url
from persistence.presence import redis_client

SWEEP_TIMEOUT_S = 5.0

# KEYS[1] last_seen zset, KEYS[2] online set; ARGV[1] cutoff. Users last seen at or before the
# cutoff leave both; a heartbeat after the script re-adds the user to both.
MARK_OFFLINE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 1, #ids, 1000 do
    redis.call('SREM', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
end
if #ids > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
return #ids
"""

# KEYS[1] busy_until zset; ARGV[1] now. In a call the score is +inf, so only busy-until times
# that users set themselves ever pass.
CLEAR_BUSY = """
local n = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
if n > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
return n
"""

# KEYS[1] busy_until; ARGV[1] user, ARGV[2] until. Never shortens a call's +inf.
SET_BUSY = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) == math.huge then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""


class PresenceSweeps:
    """Unlike the billing path, these are the API's presence functions: Redis being away is
    their failure, raised as ConnectionError."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._r = redis_client(url, socket_timeout_s=SWEEP_TIMEOUT_S)
        self._mark = self._r.register_script(MARK_OFFLINE)
        self._clear = self._r.register_script(CLEAR_BUSY)
        self._busy = self._r.register_script(SET_BUSY)

    async def _run(self, what: str, coro):
        try:
            return await coro
        except (RedisError, OSError) as e:
            raise EngineUnavailable(
                f"Redis at {mask_url(self.url)} failed in {what}: {e}"
            ) from None

    async def mark_inactive_offline(self, cutoff: float) -> int:
        return await self._run(
            "mark_inactive_users_offline",
            self._mark(keys=[keys.LAST_SEEN, keys.ONLINE], args=[cutoff]),
        )

    async def clear_expired_busy(self, now: float) -> int:
        return await self._run(
            "cleanup_expired_busy_status", self._clear(keys=[keys.BUSY_UNTIL], args=[now])
        )

    async def set_busy_until(self, user_id: int, until: float) -> bool:
        done = await self._run(
            "set_busy_until", self._busy(keys=[keys.BUSY_UNTIL], args=[user_id, until])
        )
        return bool(done)

    async def online_count(self) -> int:
        return await self._run("get_online_users_count", self._r.scard(keys.ONLINE))

    async def last_seen(self, user_ids: list[int]) -> dict[int, float | None]:
        if not user_ids:
            return {}
        scores = await self._run(
            "last_seen", self._r.zmscore(keys.LAST_SEEN, [str(u) for u in user_ids])
        )
        return dict(zip(user_ids, scores, strict=True))

    async def ping(self) -> bool:
        """Redis answers (raises ConnectionError naming it if not)."""
        return await self._run("ping", self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()
