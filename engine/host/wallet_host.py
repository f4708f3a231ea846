"""A host: the wallets of some people and the calls they pay, in one process (a shard hosts
many, a wallet actor one), as one face over the classes that each own a part of it.

An operation (`engine.operations`) reaches a host as a value and is handled by its type
(`handle`), each by one handler. The logic of money lives in `actors` (Wallet, Call,
due_order); here each part owns its state and is handed what it needs: the wallets
(`WalletCache`), the ongoing calls (`CallBook`), time order (`TimeOrder`, rule 9), listeners
(`ListenerDesk`), settlements, payouts, refunds, outside transfers, bucket expiries, the calls
a payer starts, ends and reads (`PayerCalls`), low-balance notices. Writes go through one
`WriterClient`: outside inputs (top-ups, withdrawals, call start and end) are written through,
call minutes written behind. The hosts beside this one are reached through `Peers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors import buckets as bk
from actors.call import Call
from actors.errors import InvalidInput
from actors.wallet import Wallet
from engine.host.book import CallBook
from engine.host.expiries import BucketExpiries
from engine.host.externals import Externals
from engine.host.listener_desk import ListenerDesk
from engine.host.listener_prices import ListenerPrices
from engine.host.meter import Meter, NoMeter
from engine.host.notices import Notices
from engine.host.payer_calls import PayerCalls
from engine.host.payouts import Payouts
from engine.host.peers import Alone, Peers
from engine.host.refunds import Refunds
from engine.host.router import Router
from engine.host.settlements import Settlements
from engine.host.time_order import TimeOrder
from engine.host.wallet_cache import WalletCache
from engine.operations import (
    CancelReservation,
    ClawBack,
    EndCall,
    InspectWallet,
    Operation,
    ReadCall,
    ReadPrices,
    ReadWallet,
    RefundCoins,
    ReleaseListener,
    ReserveListener,
    SetPrices,
    SettlePayout,
    Spend,
    StartCall,
    TopUp,
    Withdraw,
)
from persistence.client import WriterClient
from persistence.presence import Presence


@dataclass(frozen=True)
class HostSettings:
    """The parts of the engine's configuration a host bills by."""

    user_calls_max: int
    low_balance_minutes: int = 2
    call_defaults: tuple[float, int] = (60.0, 240)  # minute length (s), maximum minutes
    badge_timezone: str = "UTC"

    @classmethod
    def of(cls, config) -> HostSettings:
        return cls(
            config.user_calls_max,
            config.low_balance_minutes,
            (config.minute_seconds, config.max_call_minutes),
            config.badge_timezone,
        )


class WalletHost:
    def __init__(
        self,
        database_url: str,
        client: WriterClient,
        settings: HostSettings,
        *,
        presence: Presence | None = None,
        peers: Peers | None = None,
        take_over: Callable[[], Awaitable[None]] | None = None,
        on_call_added: Callable[[Call], None] | None = None,
        on_call_removed: Callable[[Call], None] | None = None,
        meter: Meter | None = None,
    ) -> None:
        meter = meter or NoMeter()
        self.client = client
        self.presence = presence
        self.book = CallBook(on_call_added, on_call_removed)
        self.cache = WalletCache(
            database_url, self.book, client, settings.call_defaults, settings.badge_timezone,
            take_over,
        )  # fmt: skip
        self.router = Router(self, peers or Alone())
        self.notices = Notices(presence, settings.low_balance_minutes)
        self.expiries = BucketExpiries(client)
        self.settlements = Settlements(
            client, self.cache, self.book, self.router, presence, self.notices, meter
        )
        self.desk = ListenerDesk(self.cache, self.router)
        self.time = TimeOrder(
            self.cache, self.book, client, self.settlements, self.expiries, self.notices,
            self.desk, meter,
        )  # fmt: skip
        self.payouts = Payouts(self.time, self.cache, client)
        self.refunds = Refunds(self.time, self.cache, client)
        externals = Externals(self.time, self.cache, client, self.desk, self.expiries, self.payouts)
        self.payer_calls = PayerCalls(
            self.time, self.book, client, self.settlements, self.router, presence, meter,
            settings.user_calls_max,
        )  # fmt: skip
        self.prices = ListenerPrices(self.time, self.cache, client)
        # Each operation's one handler.
        self._handlers: dict[type, Callable[[Operation], Awaitable]] = {
            TopUp: externals.top_up,
            Spend: externals.spend,
            Withdraw: externals.withdraw,
            SettlePayout: self.payouts.settle,
            ClawBack: self.refunds.claw_back,
            RefundCoins: self.refunds.give_coins,
            ReadWallet: self._read_wallet,
            InspectWallet: self._inspect_wallet,
            StartCall: self.payer_calls.start,
            EndCall: self.payer_calls.end,
            ReadCall: self.payer_calls.read,
            ReserveListener: self._reserve_listener,
            SetPrices: self.prices.set,
            ReadPrices: self.prices.read,
            CancelReservation: self._cancel_reservation,
            ReleaseListener: self._release_listener,
        }

    async def handle(self, op: Operation):
        """`op` done here, by the handler of its type; its answer."""
        handler = self._handlers.get(type(op))
        if handler is None:
            raise InvalidInput(f"{op!r} is not an operation a host handles")
        return await handler(op)

    # -- what the host's own process asks of it ----------------------------------------------

    @property
    def wallets(self) -> dict[int, Wallet]:
        return self.cache.wallets

    @property
    def stats(self) -> dict:
        return self.book.stats() | {"wallets_evicted": self.cache.evicted}

    async def pool(self):
        return await self.cache.pool()

    async def wallet(self, user_id: int) -> Wallet:
        return await self.cache.wallet(user_id)

    def add_call(self, call: Call) -> None:
        """Host a call its payer's wallet pays (recovery: read with the wallets)."""
        self.book.add(call, self.cache.wallets.get(call.user_id))

    def bill_due(self, call_ids: list[int], now: float) -> int:
        """A timer's pass: the calls `call_ids` billed through `now`; the minutes billed."""
        return self.time.bill_due(call_ids, now)

    def settling(self) -> bool:
        return self.settlements.under_way()

    async def wait_settled(self) -> None:
        await self.settlements.wait_all()

    def publish_notices(self) -> None:
        self.notices.publish()

    def forget_tiers(self) -> None:
        self.cache.forget_tiers()

    # -- the small handlers ------------------------------------------------------------------

    async def _read_wallet(self, op: ReadWallet) -> dict:
        w, _ = await self.time.wallet_at(op.user_id, op.now)
        return {
            "user_id": op.user_id,
            "balance_coins": w.balance_coins,
            "earnings_paise": w.earnings_paise,
            "buckets": bk.view(w.buckets),
        }

    async def _inspect_wallet(self, op: InspectWallet) -> dict:
        w, _ = await self.time.wallet_at(op.user_id, op.now)
        return w.state()

    async def _reserve_listener(self, op: ReserveListener) -> tuple[str, int | None]:
        w, _ = await self.time.wallet_at(op.listener_id, op.now)
        own = await self.prices.own(op.listener_id, op.call_type) if op.priced else None
        return await self.desk.reserve(w, op.call_id, op.payer_id, op.now), own

    async def _cancel_reservation(self, op: CancelReservation) -> None:
        self.desk.cancel(await self.cache.wallet(op.listener_id), op.call_id)

    async def _release_listener(self, op: ReleaseListener) -> bool:
        w = await self.cache.wallet(op.listener_id)
        return self.desk.release(w, op.call_id, op.earnings_paise)
