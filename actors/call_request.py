"""A call to connect, before its listener is held (engine/host/payer_calls.py): priced once
the listener's host answers their tier and their own price."""

from __future__ import annotations

from dataclasses import dataclass

from actors.call import Call
from actors.money import RateCard


@dataclass(frozen=True)
class CallRequest:
    """A call to connect, before its listener is held: the listener's host answers their tier
    and their own price, and the card in force at the start prices the call with them."""

    call_id: int
    user_id: int
    listener_id: int
    call_type: str
    card: RateCard
    rate_card_id: int
    minute_seconds: float
    max_minutes: int
    offer_id: int | None = None  # the offer it claimed, and the free minutes it got
    offer_minutes: int = 0
    offer_pays: str | None = None

    def call(self, tier: str, now: float, listener_price: int | None = None) -> Call:
        price = self.card.price(self.call_type, tier, listener_price)
        return Call(
            self.call_id,
            self.user_id,
            self.listener_id,
            self.call_type,
            tier,
            price.rate_coins,
            self.card.rates(self.call_type, tier)[1],
            now,
            self.minute_seconds,
            self.max_minutes,
            increment_s=price.increment_s,
            free_s=price.free_s,
            earnings_rule=price.rule,
            share_pct=price.share_pct,
            coin_value_paise=price.coin_value_paise,
            price_source=price.source,
            rate_card_id=self.rate_card_id,
            clamped_from=price.clamped_from,
            offer_id=self.offer_id,
            offer_minutes=self.offer_minutes,
            offer_pays=self.offer_pays,
            grace_s=self.card.grace_s[self.call_type],
        )
