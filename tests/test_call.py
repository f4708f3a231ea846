"""The billing policy on the plain Call class."""

import pytest

from actors import Call, InvariantViolation

T0 = 1_800_000_000.0


def make(billed=1, minute_seconds=60.0, max_minutes=240, rate_paise=100):
    return Call(7, 1, 2, "audio", "basic", 10, rate_paise, T0, minute_seconds, max_minutes, billed)


def test_minutes_are_due_by_elapsed_time_not_by_how_often_we_look():
    c = make()
    assert c.minute_at(T0) == 1
    assert c.minute_at(T0 + 59.9) == 1
    assert c.minute_at(T0 + 60) == 2
    assert c.minute_at(T0 + 3600) == 61  # one late look bills every minute that started


def test_next_tick_is_at_the_next_minute_boundary():
    c = make(billed=3)
    assert c.next_due_at() == T0 + 180


def test_hang_up_mid_minute_keeps_the_started_minute_billed():
    c = make(billed=2)
    s = c.hang_up(T0 + 90)
    assert (s.status, s.end_reason, s.billed_minutes, s.coins_spent) == (
        "completed",
        "hangup",
        2,
        20,
    )


def test_short_wallet_drops_the_call_at_the_boundary_it_could_not_pay():
    c = make(billed=1)
    s = c.after_billing(3, True, T0 + 200)
    assert (s.status, s.end_reason, s.billed_minutes) == ("dropped", "insufficient_coins", 3)
    assert s.ended_at == T0 + 180


def test_call_expires_at_its_maximum_duration():
    c = make(billed=1, max_minutes=3)
    assert c.minute_at(T0 + 10_000) == 3
    s = c.after_billing(3, False, T0 + 180)
    assert (s.status, s.end_reason, s.ended_at) == ("dropped", "expired", T0 + 180)


def test_a_call_settles_once_whatever_races_to_end_it():
    c = make(billed=2)
    first = c.hang_up(T0 + 100)
    assert c.hang_up(T0 + 110) is None
    assert c.after_billing(2, True, T0 + 120) is None
    assert c.settlement == first


def test_earnings_accrue_at_the_rate_fixed_at_start_and_are_one_transfer():
    c = make(billed=4, rate_paise=180)
    [t] = c.hang_up(T0 + 200).transfers()  # the default card returns nothing: whole minutes
    assert (t.transfer_id, t.amount, t.unit, t.user_id) == ("earn:call:7", 720, "paise", 2)


def test_billed_minutes_never_go_back():
    c = make(billed=3)
    with pytest.raises(InvariantViolation):
        c.after_billing(2, False, T0 + 200)
