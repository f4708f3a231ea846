"""Runs the jobs (`engine.jobs`) as Ray tasks: the presence sweep and the cleanup every
`jobs_interval_s`, the badges daily at `badges_at` (local time in `badge_timezone`), never two
runs of one job at once, each run logged with its result and duration."""

from __future__ import annotations

import asyncio
import logging
import time

import ray

from engine.jobs import JOBS, next_daily, run_job_here

log = logging.getLogger("billing.jobs")

SCHEDULER_SLEEP_S_MAX = 1.0


@ray.remote(num_cpus=0, max_retries=0)
def job_task(name: str, namespace: str, attach) -> dict:
    """A job as a Ray task: attach to the engine running in `namespace` (`attach`, a function
    the Engine hands over, so that this module needs no Engine), run, detach."""

    async def main() -> dict:
        engine = await attach(namespace)
        try:
            return await run_job_here(engine, name)
        finally:
            await engine.stop()

    return asyncio.run(main())


async def run_as_task(name: str, namespace: str, attach) -> dict:
    """One run of a job now, as a Ray task attached to the engine in `namespace`."""
    return await job_task.remote(name, namespace, attach)


class Scheduler:
    def __init__(self, engine, attach) -> None:
        self.engine = engine
        self.attach = attach  # how a job's task attaches to this engine
        self.running: dict[str, asyncio.Task] = {}
        self.last: dict[str, dict] = {}
        self.skipped: dict[str, int] = dict.fromkeys(JOBS, 0)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        cfg = self.engine.config
        try:
            if await self.engine.badges_missed():
                log.info("today's badge run did not happen (no engine ran then): running it")
                self.submit("badges")
        except Exception as e:  # noqa: BLE001 - the regular schedule goes on regardless
            log.error("could not tell whether today's badges ran: %s", e)
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
        ref = job_task.remote(name, self.engine.config.namespace, self.attach)
        self.running[name] = asyncio.get_running_loop().create_task(self._collect(name, ref))
        return True

    async def _collect(self, name: str, ref) -> None:
        try:
            out = await ref
            log.info("job %s: %s in %.3f s", name, out["result"], out["duration_s"])
            self.last[name] = out
            # Kept on the writer actor too, so that `billing-engine inspect jobs` can read it.
            self.engine.writer.record_job(out)
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
