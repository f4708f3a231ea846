"""Per-minute deduction on demand. The engine's own timers bill every minute already; these
bill whatever is due now, and the transfer ids make a minute billed twice a no-op."""

from background_tasks.services._engine import call_id_of, engine


async def deduct_per_minute_coins() -> None:
    """Bill every minute due now, for every ongoing call; calls that cannot pay end."""
    await (await engine()).bill_due()


async def process_call_coin_deduction(conn, call) -> None:
    """Bill the minutes of one call due now. `conn` is accepted as the older code passes it;
    the engine writes through its own pool."""
    await (await engine()).get_call(call_id_of(call))


async def end_call_due_to_insufficient_coins(conn, call, current_balance) -> None:
    """End the call as dropped for insufficient coins, settling it once (after billing any
    minute that was due and payable)."""
    await (await engine()).end_call(call_id_of(call), "insufficient_coins")
