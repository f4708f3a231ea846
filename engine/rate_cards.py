"""Rate cards with a date: the card in force at a time (what a call's start takes), a card
scheduled for later, and the list. Card 0 is the engine's configured card (BILLING_RATE_CARD);
a scheduled card takes effect at its `effective_at`, which is never before it was scheduled.

Each Engine process keeps the stored cards and reads them again at most every
`CARDS_REFRESH_S` (one query): a card another process scheduled is seen within that time, so a
card meant to price calls from an exact moment is scheduled at least that far ahead."""

from __future__ import annotations

import asyncio
import bisect
import time

from actors.errors import IdempotencyConflict, InvalidInput
from actors.money import RateCard, key_of, to_ms
from persistence import rate_cards as stored

CARDS_REFRESH_S = 1.0
CONFIGURED = 0  # the id of the configured card


class RateCards:
    def __init__(self, configured: RateCard, pool, clock) -> None:
        self.configured = configured
        self._pool = pool  # async () -> the pool
        self._clock = clock
        self._rows: list[dict] = []  # the stored cards as read, by date
        self._cards: list[tuple[int, int, RateCard]] = []  # (effective ms, id, card), by date
        self._read_at: float | None = None
        self._lock: asyncio.Lock | None = None  # made in the loop that first reads

    async def _refresh(self, force: bool = False) -> None:
        """Read the stored cards again if they are older than CARDS_REFRESH_S (or `force`):
        one read at a time, which the starts waiting on it share."""
        asked_at = time.monotonic()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            read_at = self._read_at
            if read_at is not None and (read_at >= asked_at if force else
                                        asked_at - read_at < CARDS_REFRESH_S):  # fmt: skip
                return
            self._rows = await stored.cards(await self._pool())
            self._cards = [
                (to_ms(r["effective_at"]), r["rate_card_id"], RateCard.from_dict(r["card"]))
                for r in self._rows
            ]
            self._read_at = time.monotonic()

    async def in_force(self, now: float) -> tuple[int, RateCard]:
        """(id, card) of the card in force at `now`: the latest whose date has come."""
        await self._refresh()
        return self._at(to_ms(now))

    def _at(self, now_ms: int) -> tuple[int, RateCard]:
        i = bisect.bisect_right(self._cards, now_ms, key=lambda c: c[0])  # cards dated by now
        if i == 0:
            return CONFIGURED, self.configured
        return self._cards[i - 1][1], self._cards[i - 1][2]

    async def schedule(
        self, effective_at: float, card: dict, idempotency_key: str | None = None
    ) -> dict:
        """Schedule `card` (the shape of BILLING_RATE_CARD) to take effect at `effective_at`
        (epoch seconds, at or after now). With a key, a repeat answers the card it
        scheduled."""
        now = self._clock.now()
        if not isinstance(effective_at, int | float) or isinstance(effective_at, bool):
            raise InvalidInput(f"effective_at must be a time, got {effective_at!r}")
        key = None if idempotency_key is None else key_of(idempotency_key)
        parsed = RateCard.from_dict(card).as_dict()
        pool = await self._pool()
        before = None if key is None else await stored.by_key(pool, key)
        if before is None:
            if to_ms(effective_at) < to_ms(now):
                raise InvalidInput(
                    f"effective_at {effective_at} is before now ({now}): a card is never back-dated"
                )
            before = await stored.schedule(pool, to_ms(effective_at), parsed, to_ms(now), key)
        if (before["card"], to_ms(before["effective_at"])) != (parsed, to_ms(effective_at)):
            raise IdempotencyConflict(
                f"idempotency key {key!r} scheduled card {before['rate_card_id']} for "
                f"{before['effective_at']} with its own terms, not these"
            )
        await self._refresh(force=True)
        return before

    async def listing(self) -> dict:
        """The card in force now, those scheduled, and past ones (newest first)."""
        await self._refresh(force=True)
        now_ms, rows = to_ms(self._clock.now()), self._rows
        in_force_id, _ = self._at(now_ms)
        configured = {
            "rate_card_id": CONFIGURED,
            "effective_at": None,
            "card": self.configured.as_dict(),
            "created_at": None,
        }
        every = [configured, *rows]
        by_id = {r["rate_card_id"]: r for r in every}
        return {
            "in_force": by_id[in_force_id],
            "scheduled": [r for r in rows if to_ms(r["effective_at"]) > now_ms],
            "past": [
                r
                for r in reversed(every)
                if r["rate_card_id"] != in_force_id
                and (r["effective_at"] is None or to_ms(r["effective_at"]) <= now_ms)
            ],
        }
