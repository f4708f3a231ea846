"""The Engine's requests about offers: create one, read one with what it cost, list them, and a
listener's opt-in to free minutes nobody pays them for. A start's claim on an offer is made
here too (`claim`), in PostgreSQL, before the call starts on its payer's host."""

from __future__ import annotations

import time

from actors import offers
from actors.errors import InvalidInput
from actors.money import entity_id, key_of, page_limit, text_value
from engine.lifecycle import Lifecycle
from engine.retryable import retryable
from persistence import offers as stored

# How long a process trusts what it read of whether any offer is in its window (an offer
# created by another process is taken by this one's starts within this long).
OFFERS_REFRESH_S = 1.0


class OfferRequests:
    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self._live_until = 0.0  # monotonic time until which `_live` holds
        self._live = False

    @retryable
    async def create_offer(
        self,
        free_minutes: int,
        eligible: str,
        valid_from: float,
        valid_until: float,
        budget_minutes: int,
        call_types: list[str] | None = None,
        per_user_max: int = 1,
        pays_listener: str = offers.PLATFORM,
        code: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        """Create an offer: the first `free_minutes` minutes of an eligible call free to its
        payer (`eligible`: `first_call`, `first_call_with_listener`, or `code` with `code`), for
        calls of `call_types` (all by default) started in [`valid_from`, `valid_until`), within
        `budget_minutes` over all users and `per_user_max` calls a user. `pays_listener`:
        `platform` (the listener earns as usual) or `nobody` (only listeners who opted in).
        With a key, a repeat answers the offer that key created."""
        terms = offers.Terms.from_dict(
            {
                "free_minutes": free_minutes,
                "eligible": eligible,
                "code": code,
                "call_types": call_types,
                "valid_from": valid_from,
                "valid_until": valid_until,
                "budget_minutes": budget_minutes,
                "per_user_max": per_user_max,
                "pays_listener": pays_listener,
            }
        )
        key = None if idempotency_key is None else key_of(idempotency_key)
        out = await stored.create(await self.life.pool(), terms, self.life.clock.now(), key)
        self._live_until = 0.0  # this process's starts see it at once
        return out

    @retryable
    async def offer(self, offer_id: int) -> dict:
        """An offer's terms and what it cost: `minutes_reserved` (held by calls under way),
        `minutes_used`, `minutes_left`, `coins_granted`, `coins_returned`,
        `earnings_paid_paise` and `calls`."""
        entity_id(offer_id, "offer_id")
        return await stored.read(await self.life.pool(), offer_id)

    @retryable
    async def offers(self, limit: int = 20, before: int | None = None) -> list[dict]:
        """Offers, newest first, `limit` (at most OFFERS_PAGE_MAX) at a time."""
        page_limit(limit, stored.OFFERS_PAGE_MAX, before)
        return await stored.listing(await self.life.pool(), limit, before)

    @retryable
    async def set_listener_offers(self, listener_id: int, free_minutes: bool) -> dict:
        """A listener's opt-in (`free_minutes: true`) to calls whose free minutes nobody pays
        them for (offers with `pays_listener: nobody`); false opts out."""
        entity_id(listener_id, "listener_id")
        if type(free_minutes) is not bool:
            raise InvalidInput(f"free_minutes must be true or false, got {free_minutes!r}")
        pool = await self.life.pool()
        return await stored.set_optin(pool, listener_id, free_minutes, self.life.clock.now())

    @retryable
    async def listener_offers(self, listener_id: int) -> dict:
        entity_id(listener_id, "listener_id")
        return await stored.optin(await self.life.pool(), listener_id)

    async def claim(
        self, call_id: int, user_id: int, listener_id: int, call_type: str, code: str | None,
        start_key: str | None, now: float,
    ) -> dict | None:  # fmt: skip
        """The offer a start takes (its minutes reserved), or None. Without a code and with no
        offer in its window, nothing is read (a start costs what it did before offers)."""
        pool = await self.life.pool()
        if code is None and not await self._any_live(pool, now):
            return None
        max_minutes = self.life.config.max_call_minutes
        return await stored.claim(
            pool, call_id, user_id, listener_id, call_type, code, start_key, now, max_minutes
        )

    async def release(self, call_id: int) -> None:
        await stored.release(await self.life.pool(), call_id)

    async def _any_live(self, pool, now: float) -> bool:
        if time.monotonic() >= self._live_until:
            # A start retried after the window still finds its claim.
            self._live = await stored.any_until(pool, now - stored.CLAIM_UNCONFIRMED_S)
            self._live_until = time.monotonic() + OFFERS_REFRESH_S
        return self._live


def offer_code(value: object) -> str | None:
    """A start's offer code, as given: None, or text."""
    return None if value is None else text_value(value, "offer_code", offers.CODE_CHARS_MAX)
