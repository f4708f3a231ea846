"""Hosts wallets in a process and turns their transfers into durable records.

A shard hosts the wallets of many people; a wallet actor hosts one. Either way the code is
this class: the logic lives in `actors.Wallet`, the writes go through one `WriterClient`.
External inputs (top-ups, withdrawals, call start, call end) are written through: the method
returns after PostgreSQL committed them. Call minutes are appended and written behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from actors.call import Call, Settlement
from actors.errors import InvariantViolation, UnknownUser
from actors.money import WITHDRAW
from actors.wallet import Wallet, check_external, external_transfer_id
from engine.loading import LoadOnce
from persistence import store
from persistence.client import WriterClient
from persistence.db import get_pool
from persistence.records import (
    call_start_record,
    settlement_records,
    transfer_record,
)

# A reservation whose call never got a row (its start failed without an answer) lapses after
# this long: by then no write of that start can still be on its way to PostgreSQL.
RESERVATION_UNCONFIRMED_S = 30.0


class WalletHost:
    def __init__(
        self,
        database_url: str,
        client: WriterClient,
        user_calls_max: int,
        before_load: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.database_url = database_url
        # Awaited once before the first read of PostgreSQL (Ray actors: the writer's drain).
        self._before_load = LoadOnce(before_load) if before_load is not None else None
        self.client = client
        self.user_calls_max = user_calls_max
        self.wallets: dict[int, Wallet] = {}
        self._reserved_at: dict[int, float] = {}  # listener -> when its reservation was made
        self._loading: dict[int, asyncio.Future] = {}

    async def _before_first_read(self) -> None:
        if self._before_load is not None:
            await self._before_load()

    async def pool(self):
        return await get_pool(self.database_url)

    async def preload(self, user_ids: list[int]) -> None:
        """Load wallets in bulk (recovery); wallets already here are kept as they are."""
        await self._before_first_read()
        missing = [u for u in set(user_ids) if u not in self.wallets]
        for chunk_start in range(0, len(missing), 10_000):
            chunk = missing[chunk_start : chunk_start + 10_000]
            loaded = await store.load_wallets(await self.pool(), chunk)
            for uid, w in loaded.items():
                self.wallets.setdefault(uid, w)

    async def wallet(self, user_id: int) -> Wallet:
        """The wallet, loaded from PostgreSQL the first time it is needed."""
        w = self.wallets.get(user_id)
        if w is not None:
            return w
        pending = self._loading.get(user_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[user_id] = pending
            try:
                await self._before_first_read()
                loaded = await store.load_wallets(await self.pool(), [user_id])
                if user_id in loaded:
                    self.wallets.setdefault(user_id, loaded[user_id])
                pending.set_result(None)
            except BaseException as e:
                pending.set_exception(e)
                pending.exception()  # retrieved: the raise below reports it
                raise
            finally:
                del self._loading[user_id]
        else:
            await pending
        w = self.wallets.get(user_id)
        if w is None:
            raise UnknownUser(f"no user with id {user_id}")
        return w

    # -- external inputs, written through ----------------------------------------------------

    async def apply_external(
        self, user_id: int, tx_type: str, amount: int, key: str, now: float
    ) -> dict:
        check_external(tx_type, amount)  # bad input is refused before any read
        w = await self.wallet(user_id)
        transfer_id = external_transfer_id(user_id, key)
        if transfer_id not in w.external:
            # A key from before this wallet was loaded is in the ledger, if anywhere (what a
            # predecessor handed the writer was committed before the first read).
            committed = await store.external_transfer(await self.pool(), transfer_id)
            if committed is not None:
                w.recall_external(transfer_id, *committed)
        if tx_type == WITHDRAW and amount > w.earnings_paise:
            await self._release_if_settled(w)  # a credit whose release message was lost
        await self.client.room()
        t = w.apply_external(key, tx_type, amount, int(now * 1000))
        if t is not None:
            await self.client.durable([transfer_record(t)])
        else:
            # A repeat: answer once the original is committed, with nothing applied again.
            await self.client.wait_committed()
        return {
            "transfer_id": transfer_id,
            "applied": t is not None,
            "user_id": user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
        }

    async def open_call(self, call: Call, now: float) -> None:
        """Charge minute 1 and record the call's start, both committed before returning."""
        w = await self.wallet(call.user_id)
        await self.client.room()
        first = w.open_call(call.call_id, call.rate_coins, self.user_calls_max, int(now * 1000))
        call.after_billing(1, False, now)
        await self.client.durable([call_start_record(call), transfer_record(first)])

    def bill(
        self, user_id: int, call_id: int, through_minute: int, now: float, out: list | None = None
    ) -> tuple[int, bool, int]:
        """Bill due minutes (written behind). Returns (last billed minute, short, coins left).
        The transfers go to the writer's client, or into `out` for a caller that bills many
        calls and appends them in one go, before anything else it appends."""
        w = self.wallets.get(user_id)
        if w is None:
            raise InvariantViolation(f"call {call_id}: payer {user_id} is not hosted here")
        transfers, last, short = w.bill_call(call_id, through_minute, int(now * 1000))
        if transfers:  # a transfer is its own record
            if out is None:
                self.client.append(transfers)
            else:
                out.extend(transfers)
        return last, short, w.balance_coins

    def close_call(self, s: Settlement) -> int:
        """Record a settlement (end of call and the listener's credit); returns the sequence
        number to wait on for it to be committed."""
        w = self.wallets.get(s.user_id)
        if w is not None:
            last = w.close_call(s.call_id)
            if last is not None and last != s.billed_minutes:
                raise InvariantViolation(
                    f"call {s.call_id}: wallet billed {last} minutes, call says {s.billed_minutes}"
                )
        return self.client.append(settlement_records(s))

    def user_in_call(self, user_id: int) -> bool:
        w = self.wallets.get(user_id)
        return bool(w and w.calls)

    # -- the listener's side -----------------------------------------------------------------

    async def reserve_listener(self, listener_id: int, call_id: int) -> None:
        w = await self.wallet(listener_id)
        if w.listener_call_id not in (None, call_id):
            await self._release_if_settled(w)
        w.reserve_listener(call_id)
        self._reserved_at[listener_id] = time.monotonic()

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        (await self.wallet(listener_id)).cancel_reservation(call_id)

    async def _release_if_settled(self, w: Wallet) -> None:
        """Free a listener whose call settled while the message that frees it was lost (the
        payer's actor died after the commit, or this one restarted before it arrived).

        PostgreSQL decides: the call ended and its credit is committed, so the credit is
        mirrored here once (release_listener only frees the call the listener is in). A call
        with no row is a start that failed without an answer: its reservation lapses after
        RESERVATION_UNCONFIRMED_S, when no write of it can still be in flight."""
        call_id = w.listener_call_id
        if call_id is None:
            return
        row = await (await self.pool()).fetchrow(
            """SELECT c.status, l.amount FROM calls c
               LEFT JOIN ledger l ON l.transfer_id = 'earn:call:' || c.call_id
               WHERE c.call_id = $1""",
            call_id,
        )
        if row is None:
            age = time.monotonic() - self._reserved_at.get(w.user_id, 0.0)
            if age > RESERVATION_UNCONFIRMED_S:
                w.cancel_reservation(call_id)
        elif row["status"] != "ongoing" and row["amount"] is not None:
            w.release_listener(call_id, row["amount"])

    async def release_listeners(self, items: list[tuple[int, int, int]]) -> int:
        """Free listeners of settled calls, mirroring the credit already committed."""
        released = 0
        for listener_id, call_id, earned in items:
            released += (await self.wallet(listener_id)).release_listener(call_id, earned)
        return released

    async def balance(self, user_id: int) -> dict:
        w = await self.wallet(user_id)
        return {
            "user_id": user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
        }

    async def inspect_wallet(self, user_id: int) -> dict:
        return (await self.wallet(user_id)).state()


class WalletMethods:
    """The wallet methods a Ray actor hosting a `WalletHost` serves (a shard, a wallet actor):
    the placements call them by name. `_ready()` is where a host loads what it must first."""

    host: WalletHost

    async def _ready(self) -> None:
        return None

    async def apply_external(self, user_id, tx_type, amount, key, now) -> dict:
        await self._ready()
        return await self.host.apply_external(user_id, tx_type, amount, key, now)

    async def balance(self, user_id: int) -> dict:
        await self._ready()
        return await self.host.balance(user_id)

    async def reserve_listener(self, listener_id: int, call_id: int) -> None:
        await self._ready()
        await self.host.reserve_listener(listener_id, call_id)

    async def cancel_reservation(self, listener_id: int, call_id: int) -> None:
        await self._ready()
        await self.host.cancel_reservation(listener_id, call_id)

    async def release_listeners(self, items: list[tuple[int, int, int]]) -> int:
        await self._ready()
        return await self.host.release_listeners(items)
