"""The Engine's requests about prices: rate cards with a date (`RateCards`), and listeners' own
prices, set and read on the listener's host (`SetPrices`, `ReadPrices`) within the bounds of
the card in force for their tier that day."""

from __future__ import annotations

from actors.money import entity_id, key_of, positive_amount
from actors.price_plan import by_call_type
from engine.lifecycle import Lifecycle
from engine.operations import ReadPrices, SetPrices
from engine.retryable import retryable
from persistence import listener_prices as stored


class PricePlans:
    def __init__(self, life: Lifecycle) -> None:
        self.life = life

    @retryable
    async def schedule_rate_card(
        self, effective_at: float, card: dict, idempotency_key: str | None = None
    ) -> dict:
        """Schedule a rate card (the shape of BILLING_RATE_CARD) to take effect at
        `effective_at` (epoch seconds, at or after now: never back-dated). Calls started from
        then on take it; calls already running keep the price they started with."""
        return await self.life.cards.schedule(effective_at, card, idempotency_key)

    @retryable
    async def rate_cards(self) -> dict:
        """The card in force now, the cards scheduled, and the past ones (newest first)."""
        return await self.life.cards.listing()

    @retryable
    async def set_prices(
        self, listener_id: int, prices: dict, idempotency_key: str | None = None
    ) -> dict:
        """Set a listener's own prices, coins a minute by call type (`{"audio": 12}`; the whole
        set: a call type left out has no price of theirs, and its calls take the card's rate).
        Each must be within the bounds of the card in force for their tier today; kept with its
        time. With a key, a repeat answers the change that key made."""
        entity_id(listener_id, "listener_id")
        by_call_type(prices, "prices")
        for call_type, price in prices.items():
            positive_amount(price, f"prices.{call_type}")
        now = self.life.clock.now()
        card_id, card = await self.life.cards.in_force(now)
        op = SetPrices(
            now=now,
            listener_id=listener_id,
            prices=dict(prices),
            key=key_of(idempotency_key),
            rate_card_id=card_id,
            bounds=card.price_bounds,
        )
        return await self.life.placement.ask(op)

    @retryable
    async def listener_prices(self, listener_id: int) -> dict:
        """A listener's prices now, their tier today, the bounds the card in force sets for that
        tier (a call type without bounds cannot be priced by listeners), and their last
        changes, newest first."""
        entity_id(listener_id, "listener_id")
        now = self.life.clock.now()
        card_id, card = await self.life.cards.in_force(now)
        found = await self.life.placement.ask(ReadPrices(now=now, listener_id=listener_id))
        tier = found["tier"]
        bounds = {t: list(by_tier[tier]) for t, by_tier in card.price_bounds.items()}
        history = await stored.history(await self.life.pool(), listener_id)
        return found | {"bounds": bounds, "rate_card_id": card_id, "changes": history}
