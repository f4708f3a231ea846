"""The jobs: presence sweep, expired-call cleanup, daily badges, on-demand deduction. What a
run does, against any Engine; `engine.runtime.scheduler` runs them as Ray tasks on a timer."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

from actors.money import one_of

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
        result = {"expired_calls": await engine.cleanup_expired_calls()}
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
