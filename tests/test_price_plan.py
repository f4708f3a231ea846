"""Price plans, the arithmetic (actors/price_plan.py): a call's charge at its end on each
increment, free short calls, earnings by rule, listeners' prices clamped to their tier's
bounds, a card refused naming what is not whole; and the default card charging exactly what
whole minutes charge."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.errors import InvalidInput
from actors.money import CALL_TYPES, TIERS, RateCard
from actors.price_plan import INCREMENTS_S, Price, charge, in_words

MINUTE_MS = 60_000
BOUNDS = {"basic": [5, 15], "bronze": [5, 20], "silver": [8, 30], "gold": [10, 40]}


@pytest.mark.parametrize(
    "increment_s, charged_s, coins, returned, earnings",
    [(60, 120, 20, 0, 200), (30, 120, 20, 0, 200), (6, 96, 16, 4, 160), (1, 91, 16, 4, 151)],
)
def test_a_90_s_call_on_each_increment(increment_s, charged_s, coins, returned, earnings):
    """10 coins and 100 paise a minute; two minutes prepaid (the second started at 60 s)."""
    price = Price(rate_coins=10, increment_s=increment_s, paise_per_minute=100)
    c = charge(price, minutes_billed=2, elapsed_ms=90_000, minute_ms=MINUTE_MS)
    assert (c.charged_s, c.coins_charged, c.coins_returned, c.earnings_paise) == (
        charged_s, coins, returned, earnings,
    )  # fmt: skip


def test_the_issues_example_in_words():
    price = Price(rate_coins=10, increment_s=1, paise_per_minute=100)
    c = charge(price, 2, 90_400, MINUTE_MS)
    assert in_words(price, c, 2) == (
        "90.4 s billed as 91 s at 1-s increments: 16 coins; 4 of 20 prepaid returned"
    )


def test_a_call_shorter_than_its_free_seconds_costs_and_earns_nothing():
    price = Price(rate_coins=10, increment_s=6, free_s=20, paise_per_minute=100)
    free = charge(price, 1, 19_999, MINUTE_MS)
    assert (free.free, free.coins_charged, free.coins_returned, free.earnings_paise) == (
        True, 0, 10, 0,
    )  # fmt: skip
    assert "under the 20 free seconds" in in_words(price, free, 1)
    paid = charge(price, 1, 20_000, MINUTE_MS)  # at the free seconds: charged from the start
    assert (paid.free, paid.charged_s, paid.coins_charged) == (False, 24, 4)


def test_the_share_rule_pays_a_share_of_what_was_charged_and_shows_the_platforms_part():
    price = Price(rate_coins=10, increment_s=1, rule="share", share_pct=60, coin_value_paise=50)
    c = charge(price, 2, 90_400, MINUTE_MS)
    assert c.coins_charged == 16
    assert c.earnings_paise == 16 * 50 * 60 // 100 == 480
    assert c.platform_paise == 16 * 50 - 480


minutes = st.integers(min_value=1, max_value=500)


@given(minutes_billed=minutes, into=st.integers(0, MINUTE_MS), rate=st.integers(1, 10_000))
def test_the_default_card_charges_exactly_whole_minutes(minutes_billed, into, rate):
    """A call that billed minute `m` lasted at least m - 1 minutes and at most m (it ends at
    or before the next minute's start): charged m whole minutes, nothing returned."""
    price = RateCard(coins_per_minute=dict.fromkeys(CALL_TYPES, rate)).price("audio", "gold")
    elapsed = (minutes_billed - 1) * MINUTE_MS + into
    c = charge(price, minutes_billed, elapsed, MINUTE_MS)
    assert (c.coins_charged, c.coins_returned) == (rate * minutes_billed, 0)
    assert c.earnings_paise == price.paise_per_minute * minutes_billed


@given(
    minutes_billed=st.integers(0, 300),
    elapsed=st.integers(0, 400 * MINUTE_MS),
    later=st.integers(0, MINUTE_MS),
    increment_s=st.sampled_from(INCREMENTS_S),
    free_s=st.integers(0, 120),
    rate=st.integers(1, 1_000),
)
def test_a_charge_is_never_above_what_was_prepaid_and_never_falls_as_a_call_lasts(
    minutes_billed, elapsed, later, increment_s, free_s, rate
):
    price = Price(rate_coins=rate, increment_s=increment_s, free_s=free_s, paise_per_minute=77)
    c = charge(price, minutes_billed, elapsed, MINUTE_MS)
    assert 0 <= c.coins_charged <= rate * minutes_billed
    assert c.coins_charged + c.coins_returned == rate * minutes_billed
    assert 0 <= c.earnings_paise <= 77 * minutes_billed
    assert charge(price, minutes_billed, elapsed + later, MINUTE_MS).coins_charged >= (
        c.coins_charged
    )
    # A finer increment that divides a coarser one never charges more.
    for coarser in INCREMENTS_S:
        if coarser % increment_s == 0:
            other = Price(rate_coins=rate, increment_s=coarser, free_s=free_s, paise_per_minute=77)
            assert charge(other, minutes_billed, elapsed, MINUTE_MS).coins_charged >= (
                c.coins_charged
            )


@given(thirds=st.integers(0, 3_000), increment_s=st.sampled_from(INCREMENTS_S))
def test_a_shortened_minute_charges_the_same_call_the_same(thirds, increment_s):
    """With 1-s minutes (the demo's) a billed second lasts 1/60 s: the same call, scaled,
    costs the same, exactly (3 s scale to 50 ms, a whole number)."""
    elapsed_s = 3 * thirds
    price = Price(rate_coins=7, increment_s=increment_s, free_s=15, paise_per_minute=100)
    minutes_billed = elapsed_s // 60 + 1
    real = charge(price, minutes_billed, elapsed_s * 1000, MINUTE_MS)
    short = charge(price, minutes_billed, elapsed_s * 1000 // 60, 1_000)
    assert real == short


def test_a_listeners_price_is_clamped_to_their_tiers_bounds_and_says_so():
    card = RateCard(price_bounds={"audio": BOUNDS})
    high = card.price("audio", "basic", listener_price=30)
    assert (high.rate_coins, high.source, high.clamped_from) == (15, "listener", 30)
    same = card.price("audio", "gold", listener_price=30)  # gold allows it
    assert (same.rate_coins, same.source, same.clamped_from) == (30, "listener", None)
    low = card.price("audio", "silver", listener_price=5)
    assert (low.rate_coins, low.clamped_from) == (8, 5)
    # No bounds for video: its listeners cannot price it, the card's rate stands.
    video = card.price("video", "gold", listener_price=30)
    assert (video.rate_coins, video.source) == (60, "card")


def test_the_default_card_prices_as_today():
    for call_type in CALL_TYPES:
        for tier in TIERS:
            price = RateCard().price(call_type, tier)
            assert (price.increment_s, price.free_s, price.rule, price.source) == (
                60, 0, "tier", "card",
            )  # fmt: skip
            assert (price.rate_coins, price.paise_per_minute) == RateCard().rates(call_type, tier)


@pytest.mark.parametrize(
    "card, named",
    [
        ({"increment_s": {"audio": 7, "video": 60}}, "increment_s.audio must be one of"),
        ({"increment_s": {"audio": 60}}, "increment_s: missing call types ['video']"),
        ({"increment_s": {"audio": 60, "video": 60, "fax": 1}}, "unknown call types"),
        ({"free_s": {"audio": -1, "video": 0}}, "free_s.audio must be an integer"),
        ({"price_bounds": {"audio": {"basic": [20, 10]}}}, "must name every tier"),
        ({"price_bounds": {"audio": {**BOUNDS, "gold": [40, 10]}}}, "min 40 is above max 10"),
        ({"price_bounds": {"audio": {**BOUNDS, "gold": [0, 10]}}}, "gold min must be"),
        ({"earnings_rule": "share"}, "needs share_pct"),
        ({"earnings_rule": "split"}, "earnings_rule must be one of"),
        ({"share_pct": {"basic": 120, "bronze": 1, "silver": 1, "gold": 1}}, "share_pct.basic"),
        ({"coin_value_paise": 0}, "coin_value_paise"),
    ],
)
def test_a_card_that_is_not_whole_is_refused_naming_what(card, named):
    with pytest.raises(InvalidInput, match=named.replace("[", r"\[").replace("]", r"\]")):
        RateCard(**card)


def test_the_engine_reads_a_plan_card_and_names_what_is_wrong_in_one():
    from engine.config import from_env

    card = '{"increment_s": {"audio": 1, "video": 6}, "free_s": {"audio": 15, "video": 0}}'
    read = from_env({"BILLING_RATE_CARD": card}).rate_card
    assert (read.increment_s, read.free_s) == ({"audio": 1, "video": 6}, {"audio": 15, "video": 0})
    assert RateCard.from_dict(read.as_dict()) == read
    bad = '{"increment_s": {"audio": 7, "video": 6}}'
    with pytest.raises(InvalidInput, match="BILLING_RATE_CARD .* increment_s.audio"):
        from_env({"BILLING_RATE_CARD": bad})
    with pytest.raises(InvalidInput, match=r"no keys \['increments'\]"):
        from_env({"BILLING_RATE_CARD": '{"increments": {}}'})
    plain = '{"coins_per_minute": {"audio": 12, "video": 60}}'
    assert from_env({"BILLING_RATE_CARD": plain}).rate_card.rates("audio", "basic")[0] == 12
