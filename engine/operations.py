"""The operations on wallets, as values: what the Engine asks the host of a person's wallet to
do (and what a host asks the host beside it), each written once, here.

An operation is a frozen dataclass: built once by whoever asks, routed by the person it names
(`routed_by`: the placement sends it to that person's host, as one Ray message with others of
its kind), and handled by its type (`engine.host.WalletHost.handle`, one handler each). Every
field says its unit (`amount_coins`, `amount_paise`, `expires_ms`); `now` is the time it
happens at: the host applies everything due by then first (rule 9). Adding a field to an
operation is one edit here and one to its handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.call_request import CallRequest

OP = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**OP)
class Operation:
    now: float  # epoch seconds

    @property
    def routed_by(self) -> int:
        """The person whose host handles it."""
        raise NotImplementedError


# -- money from and to the outside, written through ----------------------------------------


@dataclass(**OP)
class TopUp(Operation):
    """Coins in: a purchase, or a bonus (a bucket when it has `expires_ms`)."""

    user_id: int
    amount_coins: int
    tx_type: str  # purchase, bonus, referral_bonus
    key: str  # the idempotency key: applied once per key
    expires_ms: int | None = None

    @property
    def routed_by(self) -> int:
        return self.user_id


@dataclass(**OP)
class Spend(Operation):
    """Coins out, outside any call (never below zero)."""

    user_id: int
    amount_coins: int
    key: str

    @property
    def routed_by(self) -> int:
        return self.user_id


@dataclass(**OP)
class Withdraw(Operation):
    """A listener's earnings held for the pending payout `payout_id`."""

    listener_id: int
    amount_paise: int
    key: str
    payout_id: int

    @property
    def routed_by(self) -> int:
        return self.listener_id


@dataclass(**OP)
class SettlePayout(Operation):
    """A pending payout paid (its hold kept) or rejected (its hold released), once."""

    listener_id: int
    payout_id: int
    outcome: str  # paid, rejected
    reason: str | None

    @property
    def routed_by(self) -> int:
        return self.listener_id


@dataclass(**OP)
class ClawBack(Operation):
    """A refund's first step, on the listener's host: its minutes decided, their earnings
    taken back (unless `listener_pays` is false)."""

    listener_id: int
    call_id: int
    minutes: int | None  # the last billed minutes to refund; None: all not refunded yet
    reason: str
    key: str
    listener_pays: bool

    @property
    def routed_by(self) -> int:
        return self.listener_id


@dataclass(**OP)
class RefundCoins(Operation):
    """A refund's second step, on the payer's host: its coins back, once."""

    user_id: int
    refund_id: str
    call_id: int
    listener_id: int
    minutes: int
    coins: int
    paise: int
    reason: str

    @property
    def routed_by(self) -> int:
        return self.user_id


# -- reads -----------------------------------------------------------------------------------


@dataclass(**OP)
class ReadWallet(Operation):
    """The balance, earnings and buckets now."""

    user_id: int

    @property
    def routed_by(self) -> int:
        return self.user_id


@dataclass(**OP)
class InspectWallet(Operation):
    """The wallet's whole live state now (for `inspect`)."""

    user_id: int

    @property
    def routed_by(self) -> int:
        return self.user_id


# -- calls, on the payer's host ------------------------------------------------------------


@dataclass(**OP)
class StartCall(Operation):
    """Connect a call: its listener held (on their host), minute 1 charged, written through."""

    request: CallRequest
    start_key: str | None  # the start's idempotency key, kept on the call's row

    @property
    def routed_by(self) -> int:
        return self.request.user_id


@dataclass(**OP)
class EndCall(Operation):
    """End a call once; answered once it is settled and its listener free."""

    user_id: int  # the payer
    call_id: int
    reason: str

    @property
    def routed_by(self) -> int:
        return self.user_id


@dataclass(**OP)
class ReadCall(Operation):
    """A call brought up to now: its state, or its settlement once committed."""

    user_id: int  # the payer
    call_id: int

    @property
    def routed_by(self) -> int:
        return self.user_id


# -- a call's listener, on the listener's host -----------------------------------------------


@dataclass(**OP)
class ReserveListener(Operation):
    """Reserve a listener for a call that opens on its payer's host; answers their tier today
    and, when the call's card lets listeners price `call_type` (`priced`), their own price for
    it (or None): `(tier, price)`."""

    listener_id: int
    call_id: int
    payer_id: int
    call_type: str = "audio"
    priced: bool = False

    @property
    def routed_by(self) -> int:
        return self.listener_id


@dataclass(**OP)
class CancelReservation(Operation):
    """Let a listener go: the call was refused before anything was written."""

    listener_id: int
    call_id: int

    @property
    def routed_by(self) -> int:
        return self.listener_id


@dataclass(**OP)
class ReleaseListener(Operation):
    """Free a listener whose call settled, mirroring the credit already committed."""

    listener_id: int
    call_id: int
    earnings_paise: int

    @property
    def routed_by(self) -> int:
        return self.listener_id


# -- a listener's own prices, on the listener's host -----------------------------------------


@dataclass(**OP)
class SetPrices(Operation):
    """Set a listener's prices (coins a minute by call type, the whole set), each within the
    bounds for their tier today of the card in force (`rate_card_id`, its `bounds`:
    `{call_type: {tier: (min, max)}}`). Once per key."""

    listener_id: int
    prices: dict[str, int]
    key: str
    rate_card_id: int
    bounds: dict

    @property
    def routed_by(self) -> int:
        return self.listener_id


@dataclass(**OP)
class ReadPrices(Operation):
    """A listener's prices now and their tier today."""

    listener_id: int

    @property
    def routed_by(self) -> int:
        return self.listener_id
