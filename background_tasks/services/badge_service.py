"""Daily badges for listeners."""

from background_tasks.services._engine import engine


async def assign_daily_badges() -> dict:
    """Assign today's badges from yesterday's minutes. Returns total_listeners,
    basic_assigned, bronze_assigned, silver_assigned, gold_assigned and errors."""
    return await (await engine()).assign_daily_badges()
