"""The jobs: presence sweep, expired-call cleanup, daily badges, on-demand deduction.

Each run is a Ray task (`job_task`) that attaches to the running engine by name. The
scheduler runs the presence sweep and the cleanup every `jobs_interval_s` and the badges daily
at `badges_at` (local time in `badge_timezone`), never two runs of one job at once, and logs
every run with its result and duration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from zoneinfo import ZoneInfo

import ray

from actors.money import one_of

log = logging.getLogger("billing.jobs")

JOBS = ("presence", "cleanup", "badges", "deduct")
PRESENCE_INACTIVE_MINUTES = 5
SCHEDULER_SLEEP_S_MAX = 1.0


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


@ray.remote(num_cpus=0, max_retries=0)
def job_task(name: str, namespace: str) -> dict:
    """A job as a Ray task: attach to the engine running in `namespace`, run, detach."""
    from engine.api import Engine
    from engine.config import Config

    async def main() -> dict:
        engine = await Engine(Config(namespace=namespace)).start()
        if not engine.attached:
            await engine.stop()
            raise RuntimeError(f"no billing engine runs in Ray namespace {namespace!r}")
        try:
            return await run_job_here(engine, name)
        finally:
            await engine.stop()

    return asyncio.run(main())


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


class Scheduler:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.running: dict[str, asyncio.Task] = {}
        self.last: dict[str, dict] = {}
        self.skipped: dict[str, int] = dict.fromkeys(JOBS, 0)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        cfg = self.engine.config
        next_minutely = time.time()
        next_badges = next_daily(time.time(), cfg.badges_at, cfg.badge_timezone)
        while True:
            now = time.time()
            if now >= next_minutely:
                self.submit("presence")
                self.submit("cleanup")
                next_minutely = now + cfg.jobs_interval_s
            if now >= next_badges:
                self.submit("badges")
                next_badges = next_daily(now, cfg.badges_at, cfg.badge_timezone)
            wait = min(next_minutely, next_badges) - time.time()
            await asyncio.sleep(max(0.0, min(wait, SCHEDULER_SLEEP_S_MAX)))

    def submit(self, name: str) -> bool:
        """Start a run unless one of the same job is still going."""
        if name in self.running:
            self.skipped[name] += 1
            log.warning("job %s: previous run still going, this one skipped", name)
            return False
        ref = job_task.remote(name, self.engine.config.namespace)
        self.running[name] = asyncio.get_running_loop().create_task(self._collect(name, ref))
        return True

    async def _collect(self, name: str, ref) -> None:
        try:
            out = await ref
            log.info("job %s: %s in %.3f s", name, out["result"], out["duration_s"])
            self.last[name] = out
            # Kept on the writer actor too, so that `billing-engine inspect jobs` can read it.
            self.engine.writer.record_job.remote(out)
        except Exception as e:  # noqa: BLE001 - a failed run is logged; the next one runs
            log.error("job %s failed: %s", name, e)
            self.last[name] = {"job": name, "error": str(e), "finished_at": time.time()}
        finally:
            self.running.pop(name, None)

    async def wait_idle(self) -> None:
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.wait_idle()

    def state(self) -> dict:
        return {"running": sorted(self.running), "last": self.last, "skipped": self.skipped}
