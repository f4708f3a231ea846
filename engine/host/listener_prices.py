"""A listener's own prices on their host: set (each within the bounds for their tier today of
the card in force, kept with its time, once per key) and read; and at a call's start, the
listener's price for its call type, which the card then clamps to the bounds of the tier that
day (`RateCard.price`). The host holds the prices of the listeners it has been asked for,
read from PostgreSQL once: every change goes through this host."""

from __future__ import annotations

import json

from actors.errors import IdempotencyConflict, InvalidInput
from actors.money import to_ms
from engine.host.time_order import TimeOrder
from engine.host.wallet_cache import WalletCache
from engine.operations import ReadPrices, SetPrices
from persistence import listener_prices as stored
from persistence.client import WriterClient
from persistence.records import PRICES, row_record

# Listeners whose prices a host remembers; past it, it forgets them all and reads again.
PRICES_KNOWN_MAX = 100_000


class ListenerPrices:
    def __init__(self, time: TimeOrder, cache: WalletCache, client: WriterClient) -> None:
        self.time = time
        self.cache = cache
        self.client = client
        self._known: dict[int, dict[str, int]] = {}

    async def own(self, listener_id: int, call_type: str) -> int | None:
        """The listener's own price for `call_type`, None if they set none."""
        return (await self._prices(listener_id)).get(call_type)

    async def _prices(self, listener_id: int) -> dict[str, int]:
        prices = self._known.get(listener_id)
        if prices is None:
            found = await stored.latest(await self.cache.pool(), [listener_id])
            prices = self._remember(listener_id, found.get(listener_id, {}))
        return prices

    def _remember(self, listener_id: int, prices: dict[str, int]) -> dict[str, int]:
        if len(self._known) >= PRICES_KNOWN_MAX:
            self._known.clear()
        self._known[listener_id] = prices
        return prices

    async def _listener(self, listener_id: int, now: float) -> str:
        """The listener's tier today (refused if they are not a listener)."""
        w, _ = await self.time.wallet_at(listener_id, now)
        if w.role != "listener":
            raise InvalidInput(f"user {listener_id} is a {w.role}, not a listener")
        return await self.cache.tier(listener_id, now)

    async def set(self, op: SetPrices) -> dict:
        tier = await self._listener(op.listener_id, op.now)
        pool = await self.cache.pool()
        before = await stored.by_key(pool, op.listener_id, op.key)
        if before is not None:
            return self._as_asked(before, op)
        bounds = {}
        for call_type, price in op.prices.items():
            by_tier = op.bounds.get(call_type)
            if by_tier is None:
                raise InvalidInput(
                    f"prices.{call_type}: rate card {op.rate_card_id} lets no listener set a "
                    f"price for {call_type} calls"
                )
            low, high = by_tier[tier]
            if not low <= price <= high:
                raise InvalidInput(
                    f"prices.{call_type}: {price} coins a minute is outside [{low}, {high}], the "
                    f"bounds for tier {tier} on rate card {op.rate_card_id}"
                )
            bounds[call_type] = [low, high]
        await self.client.room()
        row = {
            "listener_id": op.listener_id,
            "prices": json.dumps(op.prices, sort_keys=True),
            "tier": tier,
            "rate_card_id": op.rate_card_id,
            "bounds": json.dumps(bounds, sort_keys=True),
            "set_ms": to_ms(op.now),
            "idempotency_key": op.key,
        }
        await self.client.durable([row_record(PRICES, row)])
        # Read again on the next ask: the latest change may be another request's.
        self._known.pop(op.listener_id, None)
        # What PostgreSQL holds for the key now (a racing request with it may have come first).
        return self._as_asked(await stored.by_key(pool, op.listener_id, op.key), op)

    @staticmethod
    def _as_asked(change: dict, op: SetPrices) -> dict:
        """The change a key made, refused if it set other prices than `op` asks."""
        if change["prices"] != op.prices:
            raise IdempotencyConflict(
                f"idempotency key {op.key!r} set listener {op.listener_id}'s prices to "
                f"{change['prices']}, not {op.prices}"
            )
        return change

    async def read(self, op: ReadPrices) -> dict:
        tier = await self._listener(op.listener_id, op.now)
        prices = await self._prices(op.listener_id)
        return {"listener_id": op.listener_id, "tier": tier, "prices": dict(prices)}
