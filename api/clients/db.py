"""`get_db_pool()` as the older code calls it: the engine's one pool for this process."""

from background_tasks.services._engine import engine


async def get_db_pool():
    return await (await engine()).pool()
