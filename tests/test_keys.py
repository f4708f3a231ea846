"""API keys on a real PostgreSQL: made with 256 random bits and shown once, kept as a digest
alone, named once, bounded, revoked for good; and the failed-key count per source."""

import asyncio

import pytest

from actors.errors import IdempotencyConflict, InvalidInput, UnknownKey
from engine import keys
from engine.keys import SCOPES, FailedKeys, Key, KeyRing


async def test_a_key_is_256_random_bits_shown_once_and_only_its_digest_is_kept(pool):
    made = await keys.create(pool, "app", "read,calls")
    assert made["key"].startswith(keys.KEY_PREFIX) and len(made["key"]) == 3 + 43
    assert made["scopes"] == ["read", "calls"] and made["revoked_at"] is None
    rows = await pool.fetch("SELECT * FROM api_keys")
    assert len(rows) == 1 and rows[0]["sha256"] == keys.digest(made["key"])
    assert made["key"] not in repr([dict(r) for r in rows])  # the key itself is nowhere
    listed = await keys.listed(pool)
    assert [k["name"] for k in listed] == ["app"] and "key" not in listed[0]
    assert "sha256" not in listed[0]
    other = await keys.create(pool, "app-2", ["admin"])
    assert other["key"] != made["key"]
    live = {k.name: k for k in await keys.live(pool)}
    assert live["app"].scopes == ("read", "calls") and live["app-2"].scopes == ("admin",)


@pytest.mark.parametrize(
    "name, scopes, words",
    [
        ("", "read", "name"),
        ("Bad Name", "read", "name"),
        ("x" * 65, "read", "name"),
        ("ok", "", "scopes"),
        ("ok", "read,write", "'write'"),
        ("ok", ["read", 3], "scopes"),
    ],
)
async def test_a_bad_name_or_scope_is_refused_naming_it_and_nothing_is_kept(
    pool, name, scopes, words
):
    with pytest.raises(InvalidInput, match=words):
        await keys.create(pool, name, scopes)
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_a_name_is_never_reused_even_after_revocation(pool):
    await keys.create(pool, "app", "read")
    with pytest.raises(IdempotencyConflict, match="app"):
        await keys.create(pool, "app", "read")
    first = await keys.revoke(pool, "app")
    assert first["revoked_at"] is not None
    again = await keys.revoke(pool, "app")
    assert again["revoked_at"] == first["revoked_at"]  # a second revoke changes nothing
    with pytest.raises(IdempotencyConflict):
        await keys.create(pool, "app", "read")
    assert await keys.live(pool) == []
    with pytest.raises(UnknownKey, match="nobody"):
        await keys.revoke(pool, "nobody")


async def test_live_keys_are_bounded_even_when_made_at_once(pool, monkeypatch):
    monkeypatch.setattr(keys, "KEYS_MAX", 3)
    monkeypatch.setattr(keys, "KEYS_PROPAGATION_S", 0)
    results = await asyncio.gather(
        *(keys.create(pool, f"k{i}", "read") for i in range(6)), return_exceptions=True
    )
    assert sum(isinstance(r, dict) for r in results) == 3
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, InvalidInput) and "revoke one" in str(r) for r in refused)
    await keys.revoke(pool, next(r["name"] for r in results if isinstance(r, dict)))
    await keys.create(pool, "after-a-revoke", "read")


async def test_the_table_refuses_an_unknown_scope_or_a_digest_that_is_not_one(pool):
    import asyncpg

    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO api_keys (name, sha256, scopes) VALUES ('x', $1, '{root}')", "a" * 64
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO api_keys (name, sha256, scopes) VALUES ('x', 'plain', '{read}')"
        )


def test_a_ring_finds_a_key_by_its_digest_and_keeps_its_fixed_keys_across_reads():
    stored = Key("app", keys.digest("bk_one"), ("read",))
    fixed = Key("env-token", keys.digest("tok"), SCOPES)
    ring = KeyRing([stored], [fixed])
    assert ring.find("bk_one") == stored and ring.find("tok") == fixed
    assert ring.find("") is None and ring.find("bk_two") is None
    ring.replace([])  # the stored key revoked
    assert ring.find("bk_one") is None and ring.find("tok") == fixed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_past_its_failures_a_source_waits_out_its_window_and_others_do_not():
    clock = Clock()
    failed = FailedKeys(failures_max=3, window_s=10, sources_max=100, clock=clock)
    assert [await failed.failed("a") for _ in range(3)] == [None, None, None]
    assert failed.blocked("a") == 10 and failed.blocked("b") is None
    assert await failed.failed("a") == 10  # the failure past the last allowed one
    clock.now += 9.5
    assert failed.blocked("a") == 1
    clock.now += 0.5
    assert failed.blocked("a") is None  # a new window
    assert await failed.failed("a") is None


async def test_the_sources_remembered_are_bounded_oldest_first():
    failed = FailedKeys(failures_max=1, window_s=60, sources_max=2, clock=Clock())
    for source in ("a", "b", "c"):
        await failed.failed(source)
    assert failed.blocked("a") is None  # forgotten to make room
    assert failed.blocked("b") and failed.blocked("c")


async def test_a_shared_count_blocks_a_source_that_failed_on_other_replicas(services, pool):
    from persistence.door_counts import FailureCounts

    counts = FailureCounts(services.redis_url)
    try:
        one = FailedKeys(failures_max=4, window_s=30, shared=counts.count)
        two = FailedKeys(failures_max=4, window_s=30, shared=counts.count)
        for _ in range(2):
            assert await one.failed("10.0.0.9") is None
            assert await two.failed("10.0.0.9") is None
        assert two.blocked("10.0.0.9") == 30  # it counted the fourth, of all four
        assert one.blocked("10.0.0.9") is None  # it has seen three so far ...
        assert await one.failed("10.0.0.9") is not None  # ... the fifth is past the limit
        assert one.blocked("10.0.0.8") is None
    finally:
        await counts.close()
