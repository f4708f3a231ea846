"""Expired calls and coin balances."""

from actors.errors import InvalidInput
from actors.money import SPEND, TOP_UP_TYPES
from background_tasks.services._engine import engine


async def cleanup_expired_calls() -> None:
    """End (dropped/expired) every call past its maximum duration or whose parties stopped
    sending heartbeats; each settles once, frees presence and leaves the Redis cache."""
    await (await engine()).cleanup_expired_calls()


async def get_user_coin_balance(user_id: int) -> int:
    return (await (await engine()).balance(user_id))["balance_coins"]


async def update_user_coin_balance(
    user_id: int, amount: int, operation: str = "subtract", tx_type: str = "spend"
) -> None:
    """Add or subtract coins, as one transfer. Raises ValueError for insufficient coins or
    invalid parameters. Listener earnings are paise credited by a call's settlement: they are
    never added as coins here (the older system did, truncating rupees)."""
    e = await engine()
    if operation == "subtract":
        if tx_type != SPEND:
            raise InvalidInput(f"subtracting coins is a 'spend', not {tx_type!r}")
        await e.spend(user_id, amount)
    elif operation == "add":
        if tx_type not in TOP_UP_TYPES:
            raise InvalidInput(
                f"coins are added by {', '.join(TOP_UP_TYPES)}, not {tx_type!r}; listener "
                "earnings are paise, credited when a call settles, never coins"
            )
        await e.top_up(user_id, amount, tx_type)
    else:
        raise InvalidInput(f"operation must be 'subtract' or 'add', got {operation!r}")
