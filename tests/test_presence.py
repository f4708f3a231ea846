"""Presence sweeps against real Redis: atomic, and only what expired."""

import asyncio

import redis.asyncio as aioredis

from persistence import keys
from persistence.presence import Presence
from persistence.presence_sweeps import PresenceSweeps

NOW = 1_800_000_000.0


async def test_inactive_users_go_offline_and_fresh_ones_stay(pool, services):
    p, sweeps = Presence(services.redis_url), PresenceSweeps(services.redis_url)
    for uid in range(1, 11):
        await p.heartbeat(uid, now=NOW - 600 if uid <= 4 else NOW - 60)
    assert await sweeps.online_count() == 10
    assert await sweeps.mark_inactive_offline(NOW - 300) == 4
    assert await sweeps.online_count() == 6
    assert await sweeps.mark_inactive_offline(NOW - 300) == 0  # nothing twice
    await p.heartbeat(1, now=NOW)
    assert await sweeps.online_count() == 7


async def test_a_heartbeat_during_a_sweep_is_never_lost(pool, services):
    p, sweeps = Presence(services.redis_url), PresenceSweeps(services.redis_url)
    r = aioredis.Redis.from_url(services.redis_url, decode_responses=True)
    stale = [str(u) for u in range(1, 20_001)]
    await r.sadd(keys.ONLINE, *stale)
    await r.zadd(keys.LAST_SEEN, dict.fromkeys(stale, NOW - 600))
    fresh = list(range(1, 20_001, 97))
    results = await asyncio.gather(
        sweeps.mark_inactive_offline(NOW - 300),
        *(p.heartbeat(u, now=NOW) for u in fresh),
    )
    assert all(results[1:]), "every heartbeat reached Redis"
    online = await r.smembers(keys.ONLINE)
    await r.aclose()
    assert online == {str(u) for u in fresh}


async def test_busy_until_clears_when_it_passes_but_a_call_keeps_busy(pool, services):
    p, sweeps = Presence(services.redis_url), PresenceSweeps(services.redis_url)
    await p.call_started({"call_id": 1, "user_id": 1, "listener_id": 2})
    assert await sweeps.set_busy_until(3, NOW + 30)
    assert not await sweeps.set_busy_until(1, NOW + 30)  # in a call: stays busy until it ends
    assert await sweeps.clear_expired_busy(NOW) == 0
    assert await sweeps.clear_expired_busy(NOW + 31) == 1
    assert await p.busy_until(3) is None
    assert await p.busy_until(1) == float("inf")


async def test_presence_functions_raise_connection_error_when_redis_is_away():
    import pytest

    sweeps = PresenceSweeps("redis://:secret@127.0.0.1:1/0")
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1") as e:
        await sweeps.online_count()
    assert "secret" not in str(e.value)


def test_the_low_balance_channel_is_the_redis_databases_own():
    from persistence.keys import LOW_BALANCE_CHANNEL, low_balance_channel

    assert low_balance_channel("redis://127.0.0.1:6379/15") == LOW_BALANCE_CHANNEL + ":15"
    for url in ("redis://h:6379", "redis://h:6379/0", "unix:///d/redis.socket?db=0", None):
        assert low_balance_channel(url) == LOW_BALANCE_CHANNEL
