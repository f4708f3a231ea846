"""The Engine's requests about people and money: people made, coins topped up and spent, a
listener's earnings withdrawn (a pending payout), a balance and a statement read. Each checks
what comes in, builds its operation (`engine.operations`) and hands it to the placement, which
sends it to the host of the person's wallet."""

from __future__ import annotations

from actors.buckets import BUCKET_LIFETIME_S_MAX, check_expiring, minutes_affordable
from actors.errors import InvalidInput
from actors.money import (
    CALL_TYPES,
    NAME_CHARS_MAX,
    ROLES,
    TOP_UP_TYPES,
    entity_id,
    key_of,
    one_of,
    page_limit,
    positive_amount,
    text_value,
    to_ms,
)
from engine.lifecycle import Lifecycle
from engine.operations import ReadWallet, Spend, TopUp, Withdraw
from engine.retryable import retryable
from persistence import store
from persistence.statement import STATEMENT_PAGE_MAX, statement_page

PAYOUT_ID_BLOCK = 16  # payout ids a process takes from their sequence at a time


class PeopleAndMoney:
    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self._payout_ids = store.SequenceIds(PAYOUT_ID_BLOCK, "payouts_payout_id_seq")

    @retryable
    async def create_user(self, name: str, role: str = "user") -> int:
        text_value(name, "name", NAME_CHARS_MAX)
        one_of(role, ROLES, "role")
        return await store.create_user(await self.life.pool(), name, role)

    async def create_listener(self, name: str) -> int:
        return await self.create_user(name, "listener")

    @retryable
    async def top_up(
        self,
        user_id: int,
        amount: int,
        tx_type: str = "purchase",
        idempotency_key: str | None = None,
        expires_at: float | None = None,
    ) -> dict:
        """Add coins (purchase, bonus, referral_bonus). Applied once per idempotency key;
        returns after the transfer is committed. A bonus or referral bonus with `expires_at`
        (epoch seconds) is a bucket: spent before coins that never expire, and what is left
        of it leaves the wallet at that time (`actors/buckets.py`)."""
        one_of(tx_type, TOP_UP_TYPES, "tx_type")
        expires_ms = None if expires_at is None else self._expiry(tx_type, expires_at)
        entity_id(user_id, "user_id")
        positive_amount(amount, "amount")
        op = TopUp(now=self.life.clock.now(), user_id=user_id, amount_coins=amount,
                   tx_type=tx_type, key=key_of(idempotency_key), expires_ms=expires_ms)  # fmt: skip
        return await self.life.placement.ask(op)

    def _expiry(self, tx_type: str, expires_at: object) -> int:
        check_expiring(tx_type)
        now = self.life.clock.now()
        if (
            not isinstance(expires_at, int | float)
            or isinstance(expires_at, bool)
            or not now < expires_at <= now + BUCKET_LIFETIME_S_MAX
        ):
            raise InvalidInput(
                f"expires_at must be a time after now and at most {BUCKET_LIFETIME_S_MAX} s "
                f"ahead, got {expires_at!r}"
            )
        return to_ms(expires_at)

    @retryable
    async def spend(self, user_id: int, amount: int, idempotency_key: str | None = None) -> dict:
        """Take coins outside a call (never below zero)."""
        entity_id(user_id, "user_id")
        positive_amount(amount, "amount")
        op = Spend(now=self.life.clock.now(), user_id=user_id, amount_coins=amount,
                   key=key_of(idempotency_key))  # fmt: skip
        return await self.life.placement.ask(op)

    @retryable
    async def withdraw(
        self, listener_id: int, amount_paise: int, idempotency_key: str | None = None
    ) -> dict:
        """Pay out a listener's earnings in two steps: the earnings are held now (a pending
        payout: they cannot be withdrawn twice or spent), then `settle_payout` says it was
        paid or rejected (the hold released). The answer adds `payout_id` and `status` to a
        transfer's; a repeat of the key answers the same payout, as it is now."""
        entity_id(listener_id, "listener_id")
        positive_amount(amount_paise, "amount_paise")
        key = key_of(idempotency_key)
        payout_id = await self._payout_ids.next(await self.life.pool())
        op = Withdraw(now=self.life.clock.now(), listener_id=listener_id,
                      amount_paise=amount_paise, key=key, payout_id=payout_id)  # fmt: skip
        return await self.life.placement.ask(op)

    @retryable
    async def balance(self, user_id: int, call_type: str | None = None) -> dict:
        """`{"user_id", "balance_coins", "earnings_paise", "minutes_affordable"}` now: every
        minute due billed, and a listener's ended call credited, before it is answered.
        `minutes_affordable`: how many minutes of a `call_type` call the coins pay (null
        without `call_type`), as CGRateS's GetMaxUsage answers before a call."""
        entity_id(user_id, "user_id")
        if call_type is not None:
            one_of(call_type, CALL_TYPES, "call_type")
        now = self.life.clock.now()
        out = await self.life.placement.ask(ReadWallet(now=now, user_id=user_id))
        if call_type is None:
            return out | {"minutes_affordable": None}
        config = self.life.config
        rate = config.rate_card.coins_per_minute[call_type]
        held = [
            [b["bucket_id"], b["tx_type"], b["coins"], to_ms(b["expires_at"]), 0]
            for b in out["buckets"]
        ]
        minutes = minutes_affordable(
            out["balance_coins"], held, rate, to_ms(now), to_ms(config.minute_seconds),
            config.max_call_minutes,
        )  # fmt: skip
        return out | {"minutes_affordable": minutes}

    @retryable
    async def statement(self, user_id: int, after: str | None = None, limit: int = 50) -> dict:
        """The person's transfers in time order, each with the balance after it, `limit` (at
        most STATEMENT_PAGE_MAX) a page: `{"transfers", "next_after"}`; pass `next_after` as
        `after` for the next page. A call's minutes are one row (`kind` "minutes", with
        `minutes`), when the call ends (`persistence/statement.py`)."""
        entity_id(user_id, "user_id")
        page_limit(limit, STATEMENT_PAGE_MAX)
        return await statement_page(await self.life.pool(), user_id, after, limit)
