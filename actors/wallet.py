"""A person's money: coins if they pay, earnings if they listen. Pure logic, no I/O.

The wallet is the single writer of its own balances, so every check and the change it guards
happen in one step (the older system read the balance, then updated it: the gap lost top-ups and
let balances go negative).
"""

from __future__ import annotations

from actors.errors import (
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    InvalidInput,
    InvariantViolation,
    PartyBusy,
    UnknownCall,
)
from actors.money import (
    COINS,
    PAISE,
    SPEND,
    TOP_UP_TYPES,
    TX_UNIT_SIGN,
    WITHDRAW,
    Transfer,
    positive_amount,
)

# What may move money from outside a call: coins in, coins spent, earnings paid out. Earnings
# are only ever credited by a call's settlement, and never as coins.
EXTERNAL_TYPES = (*TOP_UP_TYPES, SPEND, WITHDRAW)


def external_transfer_id(user_id: int, key: str) -> str:
    """Idempotency keys are scoped to the account they move money in."""
    return f"ext:{user_id}:{key}"


def minute_transfer_id(call_id: int, minute_no: int) -> str:
    return f"call:{call_id}:{minute_no}"


def check_external(tx_type: str, amount: int) -> None:
    """What an external transfer must be, before anything looks at its key."""
    if tx_type not in EXTERNAL_TYPES:
        raise InvalidInput(
            f"transaction type {tx_type!r} cannot be applied from outside; "
            f"use one of {', '.join(EXTERNAL_TYPES)}"
        )
    positive_amount(amount, "amount")


class Wallet:
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
        self.role = role
        self.balance_coins = balance_coins
        self.earnings_paise = earnings_paise
        # call_id -> [coins per minute, last billed minute, minute 1's time in ms, minute
        # length in ms], for the calls this wallet pays: each minute's transfer carries the
        # time the minute started, so a minute billed late or billed again is the same row.
        self.calls: dict[int, list[int]] = calls if calls is not None else {}
        # transfer_id -> (tx_type, amount) of the external transfers applied while this wallet
        # is loaded, and of those its host recalled from the ledger: the memory of idempotency
        # keys. A key not here is looked up in the ledger before it is applied
        # (WalletHost.apply_external), so a wallet holds the keys it uses, not its history.
        self.external: dict[str, tuple[str, int]] = external if external is not None else {}
        # The call a listener is in (one at a time, rule 8), and who pays it: that payer's host
        # says when the call ends.
        self.listener_call_id = listener_call_id
        self.listener_payer_id = listener_payer_id
        # How far in time this wallet's events have been applied (rule 9): an operation is
        # stamped no earlier, so the ledger read in time order is the order things happened.
        self.clock_ms = 0
        self._check()

    def _check(self) -> None:
        if self.balance_coins < 0:
            raise InvariantViolation(f"wallet {self.user_id}: coins {self.balance_coins} < 0")
        if self.earnings_paise < 0:
            raise InvariantViolation(f"wallet {self.user_id}: earnings {self.earnings_paise} < 0")

    # -- transfers from the outside: top-ups, bonuses, withdrawals ---------------------------

    def apply_external(self, key: str, tx_type: str, amount: int, at_ms: int) -> Transfer | None:
        """Apply a top-up or a withdrawal once per key. Returns None for a repeat of the same
        request; refuses a key reused for a different one."""
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
        elif unit == COINS:
            self.balance_coins += amount
        else:
            if self.role != "listener":
                raise InvalidInput(f"user {self.user_id} is not a listener and has no earnings")
            if self.earnings_paise < amount:
                raise InsufficientEarnings(
                    f"listener {self.user_id} has {self.earnings_paise} paise, "
                    f"cannot withdraw {amount}"
                )
            self.earnings_paise -= amount
        self.external[transfer_id] = (tx_type, amount)
        self._check()
        return Transfer(
            transfer_id, self.user_id, unit, sign * amount, tx_type, None, None, at_ms, at_ms
        )

    def recall_external(self, transfer_id: str, tx_type: str, amount: int) -> None:
        """A transfer the ledger holds for this wallet: a later request with its key is a
        repeat (or a conflict), never applied again."""
        self.external.setdefault(transfer_id, (tx_type, abs(amount)))

    # -- the payer's side of a call ----------------------------------------------------------

    def stamp(self, now_ms: int) -> int:
        """The time of an operation at `now_ms`: never before what this wallet already did."""
        if now_ms > self.clock_ms:
            self.clock_ms = now_ms
        return self.clock_ms

    def open_call(
        self, call_id: int, rate_coins: int, calls_max: int, at_ms: int, minute_ms: int
    ) -> Transfer:
        """Start paying for a call at `at_ms`: minute 1 is charged now, or the call does not
        start."""
        if self.role != "user":
            raise InvalidInput(f"user {self.user_id} is a {self.role}, not a user")
        if call_id in self.calls:
            raise InvariantViolation(f"wallet {self.user_id}: call {call_id} opened twice")
        if len(self.calls) >= calls_max:
            raise PartyBusy(
                f"user {self.user_id} already has {len(self.calls)} ongoing call(s), "
                f"the most allowed is {calls_max}"
            )
        if self.balance_coins < rate_coins:
            raise InsufficientCoins(
                f"user {self.user_id} has {self.balance_coins} coins, minute 1 costs {rate_coins}"
            )
        if minute_ms <= 0:
            raise InvariantViolation(f"call {call_id}: minute of {minute_ms} ms")
        self.calls[call_id] = [rate_coins, 0, at_ms, minute_ms]
        transfers, _, _ = self.bill_call(call_id, 1)
        return transfers[0]

    def bill_call(self, call_id: int, through_minute: int) -> tuple[list[Transfer], int, bool]:
        """Bill every minute of the call up to `through_minute` not billed yet, each stamped
        with the time it started.

        Returns (transfers, last billed minute, short) where short means the next minute could
        not be paid. Asking again for minutes already billed changes nothing (rule 4)."""
        entry = self.calls.get(call_id)
        if entry is None:
            raise UnknownCall(f"call {call_id} is not open on wallet {self.user_id}")
        rate, last, first_ms, minute_ms = entry
        billed_ms = self.clock_ms  # the host stamped the wallet with the time of this billing
        transfers: list[Transfer] = []
        short = False
        while last < through_minute:
            if self.balance_coins < rate:
                short = True
                break
            last += 1
            self.balance_coins -= rate
            starts_ms = first_ms + (last - 1) * minute_ms
            transfers.append(
                Transfer(
                    minute_transfer_id(call_id, last),
                    self.user_id,
                    COINS,
                    -rate,
                    SPEND,
                    call_id,
                    last,
                    starts_ms,
                    billed_ms if billed_ms > starts_ms else starts_ms,
                )
            )
        entry[1] = last
        self._check()
        return transfers, last, short

    def close_call(self, call_id: int) -> int | None:
        """Stop paying for a call. Returns its last billed minute, None if it was closed."""
        entry = self.calls.pop(call_id, None)
        return None if entry is None else entry[1]

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
        """Undo a reservation for a call that never started."""
        if self.listener_call_id == call_id:
            self.listener_call_id = self.listener_payer_id = None

    def state(self) -> dict:
        return {
            "user_id": self.user_id,
            "role": self.role,
            "balance_coins": self.balance_coins,
            "earnings_paise": self.earnings_paise,
            "calls": {
                cid: {"rate_coins": rate, "billed_minutes": last}
                for cid, (rate, last, _, _) in self.calls.items()
            },
            "listener_call_id": self.listener_call_id,
            "clock_ms": self.clock_ms,
            "external_transfers": len(self.external),
        }


__all__ = ["Wallet", "external_transfer_id", "minute_transfer_id", "PAISE"]
