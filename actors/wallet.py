"""A person's money: coins if they pay, earnings if they listen. Pure logic, no I/O.

The wallet is the single writer of its own balances, so every check and the change it guards
happen in one step (the older system read the balance, then updated it: the gap lost top-ups and
let balances go negative).
"""

from __future__ import annotations

from actors import buckets as bk
from actors import offers
from actors.errors import (
    CapacityExceeded,
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    InvalidInput,
    InvariantViolation,
    PartyBusy,
    UnknownCall,
)
from actors.money import (
    CLAWBACK,
    COINS,
    PAISE,
    PAYOUT_REJECTED,
    PAYOUT_VOID,
    REFUND,
    SPEND,
    TX_UNIT_SIGN,
    Transfer,
    check_external,
    positive_amount,
)
from actors.shared import UNUSED, Unused, one_copy
from actors.transfer_ids import (
    clawback_id,
    external_transfer_id,
    minute_transfer_id,
    payout_void_id,
)
from actors.wallet_buckets import ExpiringCoins

# Payouts a listener may have pending at once (each holds its earnings until paid or rejected).
PAYOUTS_PENDING_MAX = 1_000


class Wallet(ExpiringCoins):
    __slots__ = (
        "user_id",
        "role",
        "balance_coins",
        "earnings_paise",
        "calls",
        "external",
        "listener_call_id",
        "listener_payer_id",
        "clock_ms",
        "payouts",
        "buckets",
        "expiring",
        "debit_ms",
    )

    def __init__(
        self,
        user_id: int,
        role: str,
        balance_coins: int = 0,
        earnings_paise: int = 0,
        calls: dict[int, list[int]] | None = None,
        external: dict[str, tuple[str, int]] | None = None,
        listener_call_id: int | None = None,
        listener_payer_id: int | None = None,
    ) -> None:
        self.user_id = user_id
        self.role = one_copy(role)  # one string for every wallet of a role, not one each
        self.balance_coins = balance_coins
        self.earnings_paise = earnings_paise
        # call_id -> [coins per minute, last billed minute, minute 1's time in ms, minute
        # length in ms, free minutes], for the calls this wallet pays: each minute's transfer
        # carries the time the minute started, so a minute billed late or billed again is the
        # same row. An offer's free minutes draw on its grant to that call, held apart from
        # `balance_coins` (what the payer may spend), never on the payer's own coins.
        self.calls: dict[int, list[int]] = calls if calls else UNUSED
        # transfer_id -> (tx_type, amount) of the external transfers applied while this wallet
        # is loaded, and of those its host recalled from the ledger: the memory of idempotency
        # keys. A key not here is looked up in the ledger before it is applied
        # (`engine/host/externals.py`), so a wallet holds the keys it uses, not its history.
        self.external: dict[str, tuple[str, int]] = external if external else UNUSED
        # The call a listener is in (one at a time, rule 8), and who pays it: that payer's host
        # says when the call ends.
        self.listener_call_id = listener_call_id
        self.listener_payer_id = listener_payer_id
        # How far in time this wallet's events have been applied (rule 9): an operation is
        # stamped no earlier, so the ledger read in time order is the order things happened.
        self.clock_ms = 0
        # payout id -> paise held, for this listener's pending payouts (their withdraw
        # transfers already took the paise out of `earnings_paise`).
        self.payouts: dict[int, int] = UNUSED
        # Bonus coins that expire, by expiry (actors/buckets.py); what expired, for the host to
        # write: (as_of position, ids expired, their transfers, the buckets after); the last
        # outside debit's time (a grant comes after it). Empty tuples until used, as `UNUSED`.
        self.buckets: list[list] | tuple = ()
        self.expiring: list[tuple] | tuple = ()
        self.debit_ms = 0
        self._check()

    def _check(self) -> None:
        if self.balance_coins < 0:
            raise InvariantViolation(f"wallet {self.user_id}: coins {self.balance_coins} < 0")
        if self.earnings_paise < 0:
            raise InvariantViolation(f"wallet {self.user_id}: earnings {self.earnings_paise} < 0")

    # -- transfers from the outside: top-ups, bonuses, withdrawals ---------------------------

    def apply_external(
        self,
        key: str,
        tx_type: str,
        amount: int,
        at_ms: int,
        payout_id: int | None = None,
        expires_ms: int | None = None,
    ) -> Transfer | None:
        """Apply a top-up or a withdrawal once per key. Returns None for a repeat of the same
        request; refuses a key reused for a different one. A withdrawal is the hold of the
        pending payout `payout_id`; a bonus with `expires_ms` is a bucket (`at_ms` after the
        last debit, `grant_ms`)."""
        check_external(tx_type, amount)
        transfer_id = external_transfer_id(self.user_id, key)
        seen = self.external.get(transfer_id)
        if seen is not None:
            if seen != (tx_type, amount):
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was used for {seen[0]} of {seen[1]}, "
                    f"not {tx_type} of {amount}"
                )
            return None
        unit, sign = TX_UNIT_SIGN[tx_type]
        if unit == COINS and sign < 0:
            # A spend outside any call (the older API's update_user_coin_balance).
            if self.balance_coins < amount:
                raise InsufficientCoins(
                    f"user {self.user_id} has {self.balance_coins} coins, cannot spend {amount}"
                )
            self.balance_coins -= amount
            self.debit_ms = at_ms
            if self.buckets:
                bk.draw(self.buckets, amount)
        elif unit == COINS:
            if expires_ms is not None:
                if at_ms <= self.debit_ms:
                    raise InvariantViolation(f"bucket at {at_ms} ms, debit at {self.debit_ms}")
                self.buckets = bk.grant(
                    self.buckets, transfer_id, tx_type, amount, at_ms, expires_ms, self.user_id
                )
            self.balance_coins += amount
        else:
            self._withdraw(amount, payout_id)
        self._own("external")[transfer_id] = (tx_type, amount)
        self._check()
        return Transfer(
            transfer_id, self.user_id, unit, sign * amount, tx_type, None, None, at_ms, at_ms
        )

    def _withdraw(self, paise: int, payout_id: int | None) -> None:
        if self.role != "listener":
            raise InvalidInput(f"user {self.user_id} is not a listener and has no earnings")
        if self.earnings_paise < paise:
            raise InsufficientEarnings(
                f"listener {self.user_id} has {self.earnings_paise} paise, cannot withdraw {paise}"
            )
        if payout_id is None or payout_id in self.payouts:
            raise InvariantViolation(f"wallet {self.user_id}: withdrawal to payout {payout_id!r}")
        if len(self.payouts) >= PAYOUTS_PENDING_MAX:
            raise CapacityExceeded(
                f"listener {self.user_id} has {len(self.payouts)} payouts pending, "
                f"the most allowed (PAYOUTS_PENDING_MAX)"
            )
        self.earnings_paise -= paise
        self.hold_payout(payout_id, paise)

    def pay_for(self, call_id: int, entry: list[int]) -> None:
        """Pay for the call `call_id` from now on: `entry` is [coins per minute, last billed
        minute, minute 1's time in ms, minute length in ms] (`calls`)."""
        self._own("calls")[call_id] = entry

    def hold_payout(self, payout_id: int, paise: int) -> None:
        """Hold `paise` for the pending payout `payout_id` (its withdrawal took them)."""
        self._own("payouts")[payout_id] = paise

    def _own(self, name: str) -> dict:
        """This wallet's own map `name` (`calls`, `external`, `payouts`), taken at its first
        use."""
        held = getattr(self, name)
        if type(held) is Unused:
            held = {}
            setattr(self, name, held)
        return held

    def recall_external(self, transfer_id: str, tx_type: str, amount: int) -> None:
        """A transfer the ledger holds for this wallet: a later request with its key is a
        repeat (or a conflict), never applied again."""
        if transfer_id not in self.external:
            self._own("external")[transfer_id] = (tx_type, abs(amount))

    # -- payouts and refunds -----------------------------------------------------------------

    def settle_payout(self, payout_id: int, outcome: str, at_ms: int) -> Transfer | None:
        """Settle a pending payout: paid keeps its hold as the payout; rejected releases the
        hold back to the earnings, as its own transfer (returned). Raises KeyError when the
        payout is not pending here."""
        amount = self.payouts[payout_id]
        del self.payouts[payout_id]
        if outcome != PAYOUT_REJECTED:
            return None
        self.earnings_paise += amount
        self._check()
        return Transfer(
            payout_void_id(payout_id), self.user_id, PAISE, amount, PAYOUT_VOID, None, None,
            at_ms, at_ms,
        )  # fmt: skip

    def claw_back(self, refund: str, paise: int, call_id: int, at_ms: int) -> Transfer:
        """Take a refunded call's earnings back from its listener, never below zero."""
        positive_amount(paise, "paise")
        if self.earnings_paise < paise:
            raise InsufficientEarnings(
                f"listener {self.user_id} has {self.earnings_paise} paise, the refund takes "
                f"back {paise}; refund with listener_pays=false to refund the coins alone"
            )
        self.earnings_paise -= paise
        self._check()
        return Transfer(
            clawback_id(refund), self.user_id, PAISE, -paise, CLAWBACK, call_id, None,
            at_ms, at_ms,
        )  # fmt: skip

    def refund_coins(self, refund: str, coins: int, call_id: int, at_ms: int) -> Transfer | None:
        """Give a refunded call's coins back to its payer, once per refund (None: a repeat)."""
        positive_amount(coins, "coins")
        if refund in self.external:
            return None
        self.balance_coins += coins
        self._own("external")[refund] = (REFUND, coins)
        return Transfer(refund, self.user_id, COINS, coins, REFUND, call_id, None, at_ms, at_ms)

    # -- the payer's side of a call ----------------------------------------------------------

    def stamp(self, now_ms: int) -> int:
        """The time of an operation at `now_ms`: never before what this wallet already did."""
        if now_ms > self.clock_ms:
            self.clock_ms = now_ms
        return self.clock_ms

    def open_call(
        self, call_id: int, rate_coins: int, calls_max: int, at_ms: int, minute_ms: int,
        free_minutes: int = 0,
    ) -> Transfer:  # fmt: skip
        """Start paying for a call at `at_ms`: minute 1 is charged now (from the offer's grant
        if the call has `free_minutes`), or the call does not start."""
        if self.role != "user":
            raise InvalidInput(f"user {self.user_id} is a {self.role}, not a user")
        if call_id in self.calls:
            raise InvariantViolation(f"wallet {self.user_id}: call {call_id} opened twice")
        if self.buckets:  # a bucket expired by now cannot pay minute 1
            self.expire_through(at_ms, bk.position(at_ms, bk.MINUTE) + 1)
        if len(self.calls) >= calls_max:
            raise PartyBusy(
                f"user {self.user_id} already has {len(self.calls)} ongoing call(s), "
                f"the most allowed is {calls_max}"
            )
        if not free_minutes and self.balance_coins < rate_coins:
            raise InsufficientCoins(
                f"user {self.user_id} has {self.balance_coins} coins, minute 1 costs {rate_coins}"
            )
        if minute_ms <= 0:
            raise InvariantViolation(f"call {call_id}: minute of {minute_ms} ms")
        self.pay_for(call_id, [rate_coins, 0, at_ms, minute_ms, free_minutes])
        if not free_minutes:
            self.debit_ms = at_ms  # minute 1 is taken as an outside input is
        transfers, _, _ = self.bill_minutes(call_id, 1)
        return transfers[0]

    def bill_minutes(
        self, call_id: int, through_minute: int, paid_ms: int | None = None
    ) -> tuple[list[Transfer], int, bool]:
        """Bill every minute of the call up to `through_minute` not billed yet, each stamped
        with the time it started (or, with `paid_ms`, the first one with the time of the credit
        that paid it: a minute that waited in its grace).

        Returns (transfers, last billed minute, short) where short means the next minute could
        not be paid. Asking again for minutes already billed changes nothing (rule 4)."""
        entry = self.calls.get(call_id)
        if entry is None:
            raise UnknownCall(f"call {call_id} is not open on wallet {self.user_id}")
        rate, last, first_ms, minute_ms, free = entry
        billed_ms = self.clock_ms  # the host stamped the wallet with the time of this billing
        transfers: list[Transfer] = []
        short = False
        while last < through_minute:
            starts_ms = first_ms + last * minute_ms
            if self.buckets and self.buckets[0][bk.EXPIRES_MS] <= starts_ms:
                # a bucket that expires by this minute's start cannot pay it
                self.expire_through(starts_ms, bk.position(starts_ms, bk.BEFORE))
            if last >= free:  # past the free minutes: the payer's own coins
                if self.balance_coins < rate:
                    short = True
                    break
                self.balance_coins -= rate
                if self.buckets:
                    bk.draw(self.buckets, rate)
            last += 1
            at_ms = starts_ms
            if paid_ms is not None:
                at_ms, paid_ms = max(paid_ms, starts_ms), None
            transfers.append(
                Transfer(
                    minute_transfer_id(call_id, last),
                    self.user_id,
                    COINS,
                    -rate,
                    SPEND,
                    call_id,
                    last,
                    at_ms,
                    billed_ms if billed_ms > at_ms else at_ms,
                )
            )
        entry[1] = last
        self._check()
        return transfers, last, short

    def close_call(self, call_id: int, returned: int = 0, offer_returned: int = 0) -> int | None:
        """Stop paying for a call: its `returned` coins (prepaid, not charged) back, and its
        offer's grant not drawn, less `offer_returned` (the grant's part that goes back out).
        Returns its last billed minute; None if it was closed (nothing comes back twice)."""
        entry = self.calls.get(call_id)
        if entry is None:
            return None
        rate, last, _, _, free = entry
        back = returned + offers.credit_left(free, last, rate) - offer_returned
        if back < 0:
            raise InvariantViolation(f"call {call_id}: the offer takes back more than it left")
        del self.calls[call_id]
        self.balance_coins += back
        return last

    # -- the listener's side -----------------------------------------------------------------

    def reserve_listener(self, call_id: int, payer_id: int | None = None) -> None:
        if self.role != "listener":
            raise InvalidInput(f"user {self.user_id} is a {self.role}, not a listener")
        if self.listener_call_id == call_id:
            return
        if self.listener_call_id is not None:
            raise PartyBusy(f"listener {self.user_id} is already in call {self.listener_call_id}")
        self.listener_call_id = call_id
        self.listener_payer_id = payer_id

    def release_listener(self, call_id: int, earned_paise: int) -> bool:
        """Free the listener after a call settled and mirror the committed credit.

        Only the call the listener is in can release it, so a repeated settlement message
        credits nothing (rule 7)."""
        if self.listener_call_id != call_id:
            return False
        if type(earned_paise) is not int or earned_paise < 0:
            raise InvariantViolation(f"call {call_id}: earnings {earned_paise!r}")
        self.listener_call_id = self.listener_payer_id = None
        self.earnings_paise += earned_paise
        self._check()
        return True

    def cancel_reservation(self, call_id: int) -> None:
        if self.listener_call_id == call_id:  # a call that never started
            self.listener_call_id = self.listener_payer_id = None

    def state(self) -> dict:
        return {
            "user_id": self.user_id,
            "role": self.role,
            "balance_coins": self.balance_coins,
            "earnings_paise": self.earnings_paise,
            "calls": {
                cid: {"rate_coins": rate, "billed_minutes": last}
                for cid, (rate, last, *_) in self.calls.items()
            },
            "listener_call_id": self.listener_call_id,
            "clock_ms": self.clock_ms,
            "external_transfers": len(self.external),
            "payouts_pending": dict(self.payouts),
            "buckets": bk.view(self.buckets),
        }
