"""Money rules on the plain Wallet class: microseconds each, no I/O."""

import pickle
import tracemalloc

import pytest

from actors import (
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    InvalidInput,
    InvariantViolation,
    PartyBusy,
    UnknownCall,
    Wallet,
)
from actors.money import check_transfer

AT = 1_800_000_000_000
MIN_MS = 60_000


def test_top_up_is_applied_once_per_key():
    w = Wallet(1, "user")
    t = w.apply_external("k", "purchase", 50, AT)
    assert t.transfer_id == "ext:1:k" and t.amount == 50
    assert w.apply_external("k", "purchase", 50, AT) is None
    assert w.balance_coins == 50


def test_reused_key_with_a_different_amount_is_refused_and_changes_nothing():
    w = Wallet(1, "user")
    w.apply_external("k", "purchase", 50, AT)
    with pytest.raises(IdempotencyConflict, match="purchase of 50"):
        w.apply_external("k", "purchase", 60, AT)
    with pytest.raises(IdempotencyConflict):
        w.apply_external("k", "bonus", 50, AT)
    assert w.balance_coins == 50


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10", True, None, 2**63])
def test_bad_amounts_are_refused_by_name(amount):
    w = Wallet(1, "user")
    with pytest.raises(InvalidInput, match="amount"):
        w.apply_external("k", "purchase", amount, AT)
    assert w.balance_coins == 0 and not w.external


def test_earnings_cannot_be_credited_from_outside():
    w = Wallet(1, "user")
    for tx in ("earn", "gift"):
        with pytest.raises(InvalidInput, match="cannot be applied from outside"):
            w.apply_external("k", tx, 5, AT)


def test_a_spend_outside_a_call_never_takes_coins_below_zero():
    w = Wallet(1, "user", balance_coins=10)
    with pytest.raises(InsufficientCoins, match="cannot spend 11"):
        w.apply_external("s", "spend", 11, AT)
    t = w.apply_external("s", "spend", 10, AT)
    assert (t.amount, t.unit, w.balance_coins) == (-10, "coins", 0)


def test_withdrawal_beyond_earnings_is_refused():
    w = Wallet(2, "listener", earnings_paise=100)
    with pytest.raises(InsufficientEarnings, match="100 paise"):
        w.apply_external("w", "withdraw", 101, AT, payout_id=1)
    t = w.apply_external("w", "withdraw", 100, AT, payout_id=1)
    assert t.amount == -100 and t.unit == "paise" and w.earnings_paise == 0
    assert w.payouts == {1: 100}  # held by payout 1 until it is paid or rejected
    check_transfer(t)


def test_a_payout_paid_keeps_its_hold_and_one_rejected_releases_it_once():
    w = Wallet(2, "listener", earnings_paise=300)
    w.apply_external("a", "withdraw", 100, AT, payout_id=1)
    w.apply_external("b", "withdraw", 150, AT, payout_id=2)
    assert w.settle_payout(1, "paid", AT) is None and w.earnings_paise == 50
    void = w.settle_payout(2, "rejected", AT + 1)
    assert (void.transfer_id, void.amount, void.tx_type) == ("payout:2:void", 150, "payout_void")
    assert w.earnings_paise == 200 and w.payouts == {}
    check_transfer(void)
    with pytest.raises(KeyError):
        w.settle_payout(2, "rejected", AT + 2)  # not pending here: its host asks PostgreSQL


def test_a_claw_back_never_takes_earnings_below_zero_and_refund_coins_apply_once():
    listener = Wallet(2, "listener", earnings_paise=150)
    with pytest.raises(InsufficientEarnings, match="listener_pays=false"):
        listener.claw_back("refund:7:k", 200, 7, AT)
    back = listener.claw_back("refund:7:k", 100, 7, AT)
    assert (back.transfer_id, back.amount, listener.earnings_paise) == (
        "refund:7:k:clawback",
        -100,
        50,
    )
    payer = Wallet(1, "user")
    coins = payer.refund_coins("refund:7:k", 10, 7, AT)
    assert (coins.transfer_id, coins.amount, payer.balance_coins) == ("refund:7:k", 10, 10)
    assert payer.refund_coins("refund:7:k", 10, 7, AT) is None and payer.balance_coins == 10
    check_transfer(back)
    check_transfer(coins)


def test_a_user_cannot_withdraw_earnings():
    with pytest.raises(InvalidInput, match="not a listener"):
        Wallet(1, "user").apply_external("w", "withdraw", 1, AT)


def test_call_cannot_start_unless_minute_one_is_affordable():
    w = Wallet(1, "user", balance_coins=9)
    with pytest.raises(InsufficientCoins, match="minute 1 costs 10"):
        w.open_call(7, 10, 1, AT, MIN_MS)
    assert w.balance_coins == 9 and not w.calls


def test_open_call_charges_minute_one():
    w = Wallet(1, "user", balance_coins=25)
    t = w.open_call(7, 10, 1, AT, MIN_MS)
    assert (t.transfer_id, t.amount, t.minute_no) == ("call:7:1", -10, 1)
    assert w.balance_coins == 15


def test_one_ongoing_call_per_user_by_default():
    w = Wallet(1, "user", balance_coins=100)
    w.open_call(7, 10, 1, AT, MIN_MS)
    with pytest.raises(PartyBusy, match="most allowed is 1"):
        w.open_call(8, 10, 1, AT, MIN_MS)
    w.open_call(8, 10, 2, AT, MIN_MS)  # configurable


def test_billing_through_a_minute_bills_each_minute_once():
    w = Wallet(1, "user", balance_coins=100)
    w.open_call(7, 10, 1, AT, MIN_MS)
    transfers, last, short = w.bill_minutes(7, 4)
    assert [t.minute_no for t in transfers] == [2, 3, 4] and last == 4 and not short
    again, last, short = w.bill_minutes(7, 4)
    assert again == [] and last == 4 and w.balance_coins == 60
    older, last, _ = w.bill_minutes(7, 2)
    assert older == [] and last == 4


def test_each_minute_carries_the_time_it_started_however_late_it_is_billed():
    w = Wallet(1, "user", balance_coins=100)
    w.open_call(7, 10, 1, AT, MIN_MS)
    transfers, _, _ = w.bill_minutes(7, 3)
    assert [t.at_ms for t in transfers] == [AT + MIN_MS, AT + 2 * MIN_MS]


def test_billing_stops_at_the_first_minute_the_user_cannot_pay():
    w = Wallet(1, "user", balance_coins=35)
    w.open_call(7, 10, 1, AT, MIN_MS)
    transfers, last, short = w.bill_minutes(7, 10)
    assert last == 3 and short and w.balance_coins == 5 and len(transfers) == 2


def test_billing_a_call_not_open_is_refused():
    with pytest.raises(UnknownCall):
        Wallet(1, "user", balance_coins=35).bill_minutes(7, 2)


def test_listener_is_in_one_call_and_released_once():
    w = Wallet(2, "listener")
    w.reserve_listener(7)
    w.reserve_listener(7)  # the same call again is harmless
    with pytest.raises(PartyBusy, match="already in call 7"):
        w.reserve_listener(8)
    assert w.release_listener(7, 300) is True
    assert w.release_listener(7, 300) is False  # a repeated settlement credits nothing
    assert w.earnings_paise == 300 and w.listener_call_id is None


def test_a_user_cannot_be_reserved_as_listener():
    with pytest.raises(InvalidInput, match="not a listener"):
        Wallet(1, "user").reserve_listener(7)


def test_negative_balance_is_an_invariant_violation():
    with pytest.raises(InvariantViolation):
        Wallet(1, "user", balance_coins=-1)
    w = Wallet(1, "user", balance_coins=10)
    w.balance_coins = -5  # a bug somewhere else
    with pytest.raises(InvariantViolation):
        w.apply_external("k", "purchase", 1, AT)


def test_check_transfer_refuses_wrong_sign_unit_and_float():
    from actors.money import Transfer

    ok = Transfer("x", 1, "coins", -10, "spend", 1, 1, AT)
    check_transfer(ok)
    for bad in (
        ok._replace(amount=10),
        ok._replace(unit="paise"),
        ok._replace(amount=-10.0),
        ok._replace(tx_type="gift"),
    ):
        with pytest.raises(InvariantViolation):
            check_transfer(bad)


def test_what_a_wallet_never_used_is_one_shared_empty_that_refuses_to_change():
    payer, listener, other = Wallet(1, "user", 100), Wallet(2, "listener"), Wallet(3, "user")
    for name in ("calls", "external", "payouts", "buckets", "expiring"):
        assert getattr(payer, name) is getattr(other, name) and not getattr(other, name), name
    with pytest.raises(TypeError, match="shared empty"):
        other.external["ext:3:k"] = ("purchase", 1)
    with pytest.raises(TypeError, match="shared empty"):
        other.calls.pop(7, None)
    payer.apply_external("k", "purchase", 50, AT)
    payer.open_call(7, 10, 1, AT, MIN_MS)
    listener.earnings_paise = 500
    listener.apply_external("w", "withdraw", 200, AT, payout_id=9)
    payer.apply_external("b", "bonus", 5, AT + 1, expires_ms=AT + MIN_MS)
    payer.expire_through(AT + MIN_MS, 1)
    # Each took maps of its own; the wallet that used nothing still shares the empty ones.
    assert set(payer.external) == {"ext:1:k", "ext:1:b"} and list(payer.calls) == [7]
    assert listener.payouts == {9: 200} and payer.buckets == [] and len(payer.expiring) == 1
    for name in ("calls", "external", "payouts", "buckets", "expiring"):
        assert not getattr(other, name), name
    assert payer.close_call(7) == 1 and payer.close_call(7) is None
    assert listener.settle_payout(9, "paid", AT) is None
    with pytest.raises(KeyError):
        other.settle_payout(9, "paid", AT)  # what the host takes for "not pending here"
    copy = pickle.loads(pickle.dumps(other))
    with pytest.raises(TypeError, match="shared empty"):
        copy.payouts[1] = 1
    copy.hold_payout(1, 1)
    assert copy.payouts == {1: 1} and not other.payouts


def test_an_idle_wallet_and_an_open_call_hold_a_bounded_memory():
    """A million ongoing calls are two million wallets on the shards: what each holds is most
    of the engine's memory (docs/bench.md). A role read from PostgreSQL is a new string each
    time; the wallet keeps one copy of it."""
    n = 2_000
    roles = ["".join(["lis", "tener"]) for _ in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    wallets = [Wallet(10_000 + i, roles[i]) for i in range(n)]
    per_wallet = (tracemalloc.get_traced_memory()[0] - before) / n
    payers = [Wallet(i, "user", 1_000) for i in range(n)]
    before = tracemalloc.get_traced_memory()[0]
    for i, w in enumerate(payers):
        w.open_call(100_000 + i, 10, 1, AT + i, MIN_MS)
    per_call = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert len(wallets) == n and all(w.role is wallets[0].role for w in wallets)
    # A slotted wallet and its id: about 176 bytes here; with five empty containers of its
    # own and a copy of its role's string, 475.
    assert per_wallet < 200, per_wallet
    # The call's entry in its payer (a map of one, the entry, its times) and minute 1.
    assert per_call < 700, per_call
