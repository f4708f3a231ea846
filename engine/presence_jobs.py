"""The Engine's requests about presence (heartbeats, busy marks, who is online) and the jobs
(expired calls, daily badges; any job run here, or as a Ray task)."""

from __future__ import annotations

from actors.errors import InvalidInput
from actors.money import entity_id, one_of
from engine.jobs import JOBS, badges_missed, expire_calls, run_job_here
from engine.lifecycle import Lifecycle
from engine.retryable import retryable
from persistence import badges

BUSY_FOR_S_MAX = 7 * 24 * 3600


class PresenceAndJobs:
    """`engine`: the Engine whose requests the jobs make (an expired call's end, a bucket's
    expiry through a balance)."""

    def __init__(self, life: Lifecycle, engine) -> None:
        self.life = life
        self.engine = engine

    @retryable
    async def heartbeat(self, user_id: int) -> bool:
        entity_id(user_id, "user_id")
        return await self.life.presence.heartbeat(user_id, now=self.life.clock.now())

    @retryable
    async def set_busy_for(self, user_id: int, seconds: float) -> bool:
        """Mark a user busy for a while (not in a call); cleared when the time passes."""
        entity_id(user_id, "user_id")
        if not isinstance(seconds, int | float) or not 0 < seconds <= BUSY_FOR_S_MAX:
            raise InvalidInput(f"seconds must be in (0, {BUSY_FOR_S_MAX}], got {seconds!r}")
        return await self.life.sweeps().set_busy_until(user_id, self.life.clock.now() + seconds)

    @retryable
    async def mark_inactive_users_offline(self, inactive_minutes: int = 5) -> int:
        if type(inactive_minutes) is not int or inactive_minutes < 0:
            raise InvalidInput(
                f"inactive_minutes must be a non-negative integer, got {inactive_minutes!r}"
            )
        cutoff = self.life.clock.now() - inactive_minutes * 60
        return await self.life.sweeps().mark_inactive_offline(cutoff)

    @retryable
    async def cleanup_expired_busy_status(self) -> int:
        return await self.life.sweeps().clear_expired_busy(self.life.clock.now())

    @retryable
    async def online_users_count(self) -> int:
        return await self.life.sweeps().online_count()

    @retryable
    async def cleanup_expired_calls(self) -> int:
        """End as dropped/expired every call past its maximum duration, or whose parties sent
        no heartbeat within the timeout. Returns how many it ended."""
        return await expire_calls(self.engine)

    @retryable
    async def assign_daily_badges(self, today=None) -> dict:
        config = self.life.config
        day = today or badges.local_day(self.life.clock.now(), config.badge_timezone)
        out = await badges.assign_daily_badges(
            await self.life.pool(), day, config.badge_timezone, config.badge_thresholds
        )
        await self.life.placement.forget_tiers()  # the hosts read tiers once per day: again now
        return out

    @retryable
    async def badges_missed(self) -> bool:
        """Today's badge run was due and has not happened (see `jobs.badges_missed`)."""
        return await badges_missed(self.engine)

    async def run_job(self, name: str) -> dict:
        """Run one job here and now: `presence`, `cleanup`, `badges` or `deduct`."""
        return await run_job_here(self.engine, name)

    async def run_job_task(self, name: str) -> dict:
        """Run one job now as a Ray task attached to this engine, as the scheduler does."""
        one_of(name, JOBS, "job")
        from engine.runtime.scheduler import run_as_task

        return await run_as_task(name, self.life.config.namespace, type(self.engine).attach)
