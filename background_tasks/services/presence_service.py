"""Presence in Redis: online users, last seen, busy until."""

from background_tasks.services._engine import engine


async def mark_inactive_users_offline(inactive_minutes: int = 5) -> int:
    """Mark users offline whose last heartbeat is `inactive_minutes` old; returns how many."""
    return await (await engine()).mark_inactive_users_offline(inactive_minutes)


async def cleanup_expired_busy_status() -> int:
    """Clear busy-until times that have passed; returns how many."""
    return await (await engine()).cleanup_expired_busy_status()


async def get_online_users_count() -> int:
    return await (await engine()).online_users_count()
