"""The wallets a host holds in memory, loaded from PostgreSQL when first asked, and the reads of
PostgreSQL that concurrent requests share (wallets, idempotency keys, listeners' tiers).

A wallet is loaded once: concurrent requests for it wait on the same load, and the loads of
many wallets go to PostgreSQL as one query per batch (`READS_BATCH`). Wallets of people with no
ongoing call are evicted when idle (`WALLETS_IDLE_MAX`, `WALLET_IDLE_S`); a wallet that pays or
serves a call never is. A listener's tier is read once per listener and day (`TIERS_KNOWN_MAX`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from actors.errors import UnknownUser
from actors.wallet import Wallet
from aio.batching import Batcher, BatchLimits
from aio.once import LoadOnce
from engine.host.book import CallBook
from persistence import badges, store
from persistence.client import WriterClient
from persistence.db import get_pool

# Wallets read from PostgreSQL in one query when a host loads many.
LOAD_CHUNK_WALLETS = 10_000
# Wallets of people with no ongoing call a host keeps loaded. Past it, those unused for
# WALLET_IDLE_S are evicted, oldest first (they reload from PostgreSQL when next asked); a
# wallet that pays or serves a call is never evicted, so a host holds at most its calls' people
# plus this many.
WALLETS_IDLE_MAX = 100_000
WALLET_IDLE_S = 600.0
# Listeners whose tier of the day a host remembers; past it, it forgets them all and reads
# again (one query per batch of listeners).
TIERS_KNOWN_MAX = 100_000
# Reads of PostgreSQL that concurrent requests share (wallets to load, idempotency keys from
# before a load, listeners' tiers): one query per batch of ids, two queries at a time, since a
# query costs about the same for one id as for hundreds.
READS_BATCH = BatchLimits(size_max=1_000, in_flight_max=2, queued_max=100_000)


class WalletCache:
    def __init__(
        self,
        database_url: str,
        book: CallBook,
        client: WriterClient,
        call_defaults: tuple[float, int],
        badge_timezone: str,
        take_over: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.database_url = database_url
        self.book = book  # the calls the host holds: the wallets loaded bring theirs
        self.client = client  # nothing is evicted while a write of the host's is unconfirmed
        # Minute length (s) and maximum minutes of a stored call that does not record its own.
        self.call_defaults = call_defaults
        self.badge_timezone = badge_timezone
        # Awaited once before the first read of PostgreSQL: what a predecessor of this host
        # wrote is committed, and nothing more of it will be (`WriterLink.take_over`).
        self._take_over = LoadOnce(take_over) if take_over is not None else None
        self.wallets: dict[int, Wallet] = {}
        self._loading: dict[int, asyncio.Future] = {}
        self._used_at: dict[int, float] = {}  # wallet -> when a request last asked for it
        self._tiers: dict[int, tuple[object, str]] = {}  # listener -> (day, tier that day)
        self._tiers_generation = 0  # badge runs seen (`forget_tiers`)
        self.evicted = 0
        self._loads = Batcher(self._load_batch, READS_BATCH, "wallet loads")
        self._externals = Batcher(self._externals_batch, READS_BATCH, "idempotency key reads")
        self._tier_reads = Batcher(self._tiers_batch, READS_BATCH, "tier reads")

    def batches(self) -> dict:
        """How the shared reads batched (for `inspect`)."""
        return {
            "wallet_loads": self._loads.state(),
            "idempotency_key_reads": self._externals.state(),
            "tier_reads": self._tier_reads.state(),
        }

    async def before_first_read(self) -> None:
        if self._take_over is not None:
            await self._take_over()

    async def pool(self):
        return await get_pool(self.database_url)

    # -- wallets -------------------------------------------------------------------------------

    async def wallet(self, user_id: int) -> Wallet:
        """The wallet, loaded from PostgreSQL the first time it is needed."""
        w = self.wallets.get(user_id)
        if w is not None:
            self._touch(user_id)
            return w
        pending = self._loading.get(user_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[user_id] = pending
            try:
                await self._loads.submit(user_id)
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

    async def preload(self, user_ids: list[int]) -> None:
        """Load wallets in bulk (recovery); wallets already here are kept as they are."""
        await self.before_first_read()
        missing = [u for u in set(user_ids) if u not in self.wallets]
        for start in range(0, len(missing), LOAD_CHUNK_WALLETS):
            await self._load_wallets(missing[start : start + LOAD_CHUNK_WALLETS])

    async def _load_batch(self, user_ids: list[int]) -> list[None]:
        await self.before_first_read()
        await self._load_wallets(user_ids)
        return [None] * len(user_ids)

    async def _load_wallets(self, user_ids: list[int]) -> None:
        pool = await self.pool()
        loaded = await store.load_wallets(pool, user_ids, self.call_defaults[0])
        self._evict_idle()
        for uid, w in loaded.items():
            self.wallets.setdefault(uid, w)
            self._touch(uid)
        # The calls they pay that the host does not hold yet (a wallet actor's first load).
        calls = self.book.calls
        unknown = [c for w in loaded.values() for c in w.calls if c not in calls]
        if unknown:
            for call in await store.load_ongoing_calls(pool, *self.call_defaults, call_ids=unknown):
                self.book.add(call, self.wallets.get(call.user_id))

    def _evict_idle(self) -> None:
        """Keep at most WALLETS_IDLE_MAX wallets of people in no call: drop those unused for
        WALLET_IDLE_S, oldest first. Only while nothing the host wrote is unconfirmed, so no
        request is between changing a wallet and its commit."""
        excess = len(self.wallets) - len(self.book.calls) - WALLETS_IDLE_MAX
        if excess <= 0 or self.client.pending:
            return
        idle_before = time.monotonic() - WALLET_IDLE_S
        for uid, used_at in list(self._used_at.items()):  # oldest use first
            if excess <= 0 or used_at > idle_before:
                break
            w = self.wallets.get(uid)
            if w is not None and not w.calls and w.listener_call_id is None:
                del self.wallets[uid]
                self.evicted += 1
                excess -= 1
            del self._used_at[uid]

    def _touch(self, user_id: int) -> None:
        self._used_at.pop(user_id, None)  # to the end: the map stays in order of last use
        self._used_at[user_id] = time.monotonic()

    # -- idempotency keys from before a load ---------------------------------------------------

    async def recall(self, w: Wallet, transfer_id: str) -> None:
        """`w` knows whether `transfer_id` was applied: an id from before this wallet was loaded
        is in the ledger, if anywhere (what a predecessor handed the writer was committed before
        the first read)."""
        if transfer_id not in w.external:
            committed = await self._externals.submit(transfer_id)
            if committed is not None:
                w.recall_external(transfer_id, *committed)

    async def _externals_batch(self, transfer_ids: list[str]) -> list:
        committed = await store.external_transfers(await self.pool(), transfer_ids)
        return [committed.get(t) for t in transfer_ids]

    # -- listeners' tiers ----------------------------------------------------------------------

    async def tier(self, listener_id: int, now: float) -> str:
        """The listener's tier for the day of `now`, read once per listener and day: the day's
        badge row, once written, is final, and before it is written the tier is `basic`. The
        badge run makes every host forget what it read (`forget_tiers`), so its tiers apply to
        the next start."""
        day = badges.local_day(now, self.badge_timezone)
        known = self._tiers.get(listener_id)
        if known is not None and known[0] == day:
            return known[1]
        await self.before_first_read()
        asked_in = self._tiers_generation
        tier = await self._tier_reads.submit((listener_id, day)) or "basic"
        if asked_in == self._tiers_generation:  # a read from before a run is not kept
            if len(self._tiers) >= TIERS_KNOWN_MAX:
                self._tiers.clear()
            self._tiers[listener_id] = (day, tier)
        return tier

    def forget_tiers(self) -> None:
        self._tiers.clear()
        self._tiers_generation += 1

    async def _tiers_batch(self, asked: list[tuple[int, object]]) -> list[str | None]:
        found: dict[tuple[int, object], str] = {}
        for day in {d for _, d in asked}:
            ids = [listener for listener, d in asked if d == day]
            tiers = await store.listener_tiers(await self.pool(), ids, day)
            found |= {(listener, day): tier for listener, tier in tiers.items()}
        return [found.get(a) for a in asked]
