"""The jobs: presence sweep, expired-call cleanup, daily badges, on-demand deduction. What a
run does and the policy it follows (which calls expire, whether a badge run was missed),
against any Engine; `engine.runtime.scheduler` runs them as Ray tasks on a timer."""

from __future__ import annotations

import datetime as dt
import logging
import time
from zoneinfo import ZoneInfo

from actors.money import one_of
from persistence import badges, offers, payouts, store
from persistence import buckets as bucket_store

log = logging.getLogger("billing.jobs")

JOBS = ("presence", "cleanup", "badges", "deduct")
PRESENCE_INACTIVE_MINUTES = 5


async def run_job_here(engine, name: str) -> dict:
    """Run one job in this process against `engine`."""
    one_of(name, JOBS, "job")
    started = time.monotonic()
    if name == "presence":
        result = {
            "marked_offline": await engine.mark_inactive_users_offline(PRESENCE_INACTIVE_MINUTES),
            "busy_cleared": await engine.cleanup_expired_busy_status(),
        }
    elif name == "cleanup":
        result = {
            "expired_calls": await engine.cleanup_expired_calls(),
            "refunds_finished": await finish_refunds(engine),
            "buckets_expired": await expire_buckets(engine),
        }
    elif name == "badges":
        result = await engine.assign_daily_badges()
    else:
        result = {"minutes_billed": await engine.bill_due()}
    return {
        "job": name,
        "result": result,
        "duration_s": round(time.monotonic() - started, 3),
        "finished_at": time.time(),
    }


def next_daily(now: float, hhmm: str, timezone: str) -> float:
    """The next instant after `now` at local time `hhmm` in `timezone`."""
    tz = ZoneInfo(timezone)
    hour, minute = map(int, hhmm.split(":"))
    local = dt.datetime.fromtimestamp(now, tz)
    for days in range(3):
        at = dt.datetime.combine(local.date() + dt.timedelta(days=days), dt.time(hour, minute), tz)
        if at.timestamp() > now:
            return at.timestamp()
    raise AssertionError("unreachable: a day has that time within three")


async def expire_calls(engine) -> int:
    """End as dropped/expired every call past its maximum duration, or whose parties sent
    no heartbeat within the timeout. Returns how many it ended. Claims on offers whose start
    never got its call (`offers.CLAIM_UNCONFIRMED_S`) give their minutes back first."""
    now = engine.clock.now()
    released = await offers.release_unconfirmed(await engine.pool(), now)
    if released:
        log.info("%d offer claims without their call released", released)
    rows = await store.ongoing_calls(await engine.pool())
    if not rows:
        return 0
    parties = sorted({r["user_id"] for r in rows} | {r["listener_id"] for r in rows})
    try:
        seen = await engine.sweeps().last_seen(parties)
    except ConnectionError as e:
        log.warning("heartbeats unknown (%s): expiring by duration only", e)
        seen = None
    max_s = engine.config.max_call_minutes * engine.config.minute_seconds
    stale_before = now - engine.config.heartbeat_timeout_s
    ended = 0
    for r in rows:
        too_long = now >= r["connected_at"] + max_s
        # Connecting counts as a heartbeat of both parties: a call whose start is committed
        # and whose heartbeat is not yet in Redis (or was lost with it) is not silent.
        silent = seen is not None and any(
            max(seen.get(p) or 0, r["connected_at"]) < stale_before
            for p in (r["user_id"], r["listener_id"])
        )
        if too_long or silent:
            s = await engine.end_call(r["call_id"], "expired")
            ended += s["end_reason"] == "expired"
    return ended


async def finish_refunds(engine) -> int:
    """Give the coins of every refund whose claw-back committed and whose coins did not (a
    host that died between its two steps). Returns how many it finished."""
    unfinished = await payouts.unfinished_refunds(await engine.pool())
    for refund in unfinished:
        await engine.finish_refund(refund)
    return len(unfinished)


async def expire_buckets(engine) -> int:
    """Ask the wallet of each person whose bucket of coins is past its expiry (and was not
    asked since): its host takes the rest out, dated at the expiry. Returns how many."""
    users = await bucket_store.expired_unapplied(await engine.pool(), engine.clock.now())
    for user_id in users:
        await engine.balance(user_id)
    return len(users)


async def badges_missed(engine) -> bool:
    """Today's badge run was due (at `badges_at`) and has not happened: no engine ran then.
    The scheduler makes it up when it starts, so listeners are not paid at `basic` all day."""
    cfg = engine.config
    now = engine.clock.now()
    last_due = next_daily(now - 86_400, cfg.badges_at, cfg.badge_timezone)
    today = badges.local_day(now, cfg.badge_timezone)
    if last_due > now or badges.local_day(last_due, cfg.badge_timezone) != today:
        return False
    return not await badges.assigned(await engine.pool(), today)
