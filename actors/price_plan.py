"""Price plans, the arithmetic: what a rate card may say beyond its rates, the price a call
fixes at its start (and records: PLAN_FIELDS), and what a call of a given length is charged at
its end, returned and earned. Pure and exact: integers only, times
in milliseconds, no float on the way to a coin.

A minute is 60 billed seconds (with a shortened `minute_ms`, a billed second lasts
`minute_ms / 60` ms). Minutes are prepaid at their start, as today; at the end a call of `e`
billed seconds is charged for

    charged_s = min(60 * minutes_billed, increment_s * (floor(e / increment_s) + 1))

(the started increment counts, as the started minute does), `ceil(rate_coins * charged_s / 60)`
coins, or nothing if `e < free_s`; the prepaid rest goes back. With `increment_s = 60` and
`free_s = 0` (the default card) that is exactly what whole minutes charge.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.errors import InvalidInput
from actors.money import CALL_TYPES, TIERS, one_of

INCREMENTS_S = (1, 2, 3, 5, 6, 10, 12, 15, 20, 30, 60)  # each divides a minute
TIER_RULE, SHARE_RULE = "tier", "share"
EARNINGS_RULES = (TIER_RULE, SHARE_RULE)
FREE_S_MAX = 3_600  # free seconds a call type may have
# Billed seconds a call may stay suspended for a minute its payer cannot pay: under a minute, so
# that the next minute never falls due while one waits (a credit bills them in time order).
GRACE_S_MAX = 59
SECONDS_PER_MINUTE = 60
CARD, LISTENER = "card", "listener"  # where a call's rate came from
# What a call records of its price beyond its rates (`rate_coins`, `rate_paise`): columns of
# `calls`, fields of its spec.
PLAN_FIELDS = (
    "increment_s",
    "free_s",
    "earnings_rule",
    "share_pct",
    "coin_value_paise",
    "price_source",
    "rate_card_id",
    "clamped_from",
)


def _int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidInput(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def by_call_type(value: object, what: str) -> dict:
    """A card's object keyed by call type, naming none the engine does not know."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object by call type, got {value!r}")
    unknown = set(value) - set(CALL_TYPES)
    if unknown:
        raise InvalidInput(f"{what}: unknown call types {sorted(unknown)}")
    return value


def per_call_type(value: object, what: str, check) -> dict[str, int]:
    """A card's `{call_type: value}`, every call type present, each value checked."""
    by_call_type(value, what)
    missing = [t for t in CALL_TYPES if t not in value]
    if missing:
        raise InvalidInput(f"{what}: missing call types {missing}")
    return {t: check(value[t], f"{what}.{t}") for t in CALL_TYPES}


def increment(value: object, what: str) -> int:
    if value not in INCREMENTS_S or type(value) is not int:
        raise InvalidInput(f"{what} must be one of {', '.join(map(str, INCREMENTS_S))} (a "
                           f"divisor of 60 billed seconds), got {value!r}")  # fmt: skip
    return value


def free_seconds(value: object, what: str) -> int:
    return _int(value, what, 0, FREE_S_MAX)


def grace_seconds(value: object, what: str) -> int:
    return _int(value, what, 0, GRACE_S_MAX)


def price_bounds(value: object) -> dict[str, dict[str, tuple[int, int]]]:
    """`{call_type: {tier: [min, max]}}`: a call type present names every tier; absent, its
    listeners cannot set prices."""
    by_call_type(value, "price_bounds")
    out = {}
    for call_type, by_tier in value.items():
        if not isinstance(by_tier, dict) or set(by_tier) != set(TIERS):
            raise InvalidInput(
                f"price_bounds.{call_type} must name every tier ({', '.join(TIERS)}) once"
            )
        out[call_type] = {}
        for tier in TIERS:
            bounds = by_tier[tier]
            what = f"price_bounds.{call_type}.{tier}"
            if not isinstance(bounds, list | tuple) or len(bounds) != 2:
                raise InvalidInput(f"{what} must be [min, max] coins a minute, got {bounds!r}")
            low = _int(bounds[0], f"{what} min", 1, 2**31 - 1)
            high = _int(bounds[1], f"{what} max", 1, 2**31 - 1)
            if low > high:
                raise InvalidInput(f"{what}: min {low} is above max {high}")
            out[call_type][tier] = (low, high)
    return out


def share_pcts(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or set(value) != set(TIERS):
        raise InvalidInput(f"share_pct must name every tier ({', '.join(TIERS)}) once")
    return {t: _int(value[t], f"share_pct.{t}", 0, 100) for t in TIERS}


@dataclass(frozen=True)
class Price:
    """A call's price, fixed at its start and recorded on it."""

    rate_coins: int
    increment_s: int = 60
    free_s: int = 0
    rule: str = TIER_RULE
    paise_per_minute: int | None = None  # rule "tier": the listener's rate for the call
    share_pct: int | None = None  # rule "share": the listener's share of what was charged
    coin_value_paise: int | None = None  # what a coin is worth, when the card says
    source: str = "card"  # "listener": the listener's own price; "card": the card's rate
    clamped_from: int | None = None  # a listener's price the tier's bounds moved

    def __post_init__(self) -> None:
        _int(self.rate_coins, "rate_coins", 1, 2**31 - 1)
        increment(self.increment_s, "increment_s")
        free_seconds(self.free_s, "free_s")
        if one_of(self.rule, EARNINGS_RULES, "earnings rule") == TIER_RULE:
            _int(self.paise_per_minute, "paise_per_minute", 0, 2**31 - 1)
        else:
            _int(self.share_pct, "share_pct", 0, 100)
            _int(self.coin_value_paise, "coin_value_paise", 1, 2**31 - 1)


def clamp(price: int, bounds: tuple[int, int]) -> int:
    return min(max(price, bounds[0]), bounds[1])


@dataclass(frozen=True)
class Charge:
    """What a call of a given length costs at its end."""

    billed_tenths: int  # tenths of a billed second it lasted (floor): 904 is 90.4 s
    charged_s: int
    coins_charged: int
    coins_returned: int  # of the prepaid minutes: the transfer `unused:{call_id}`
    earnings_paise: int
    platform_paise: int | None  # coins_charged * coin_value_paise - earnings, if known
    free: bool  # shorter than the free seconds: nothing charged, nothing earned


def charge(price: Price, minutes_billed: int, elapsed_ms: int, minute_ms: int) -> Charge:
    """The end of a call on `price` that prepaid `minutes_billed` minutes and lasted
    `elapsed_ms` (from its recorded connect to its end), a minute being `minute_ms`."""
    _int(minutes_billed, "minutes_billed", 0, 2**31 - 1)
    _int(elapsed_ms, "elapsed_ms", 0, 2**62)
    _int(minute_ms, "minute_ms", 1, 2**40)
    prepaid = price.rate_coins * minutes_billed
    tenths = elapsed_ms * SECONDS_PER_MINUTE * 10 // minute_ms
    # e < free_s, with e = elapsed_ms * 60 / minute_ms exactly
    if elapsed_ms * SECONDS_PER_MINUTE < price.free_s * minute_ms:
        return Charge(tenths, 0, 0, prepaid, 0, 0 if price.coin_value_paise else None, True)
    # floor(e / increment_s), exactly
    started = elapsed_ms * SECONDS_PER_MINUTE // (minute_ms * price.increment_s) + 1
    charged_s = min(SECONDS_PER_MINUTE * minutes_billed, price.increment_s * started)
    coins = -(-price.rate_coins * charged_s // SECONDS_PER_MINUTE)  # ceil
    earnings = earnings_for(price, charged_s, coins)
    platform = None
    if price.coin_value_paise is not None:
        platform = coins * price.coin_value_paise - earnings
    return Charge(tenths, charged_s, coins, prepaid - coins, earnings, platform, False)


def earnings_for(price: Price, charged_s: int, coins_charged: int) -> int:
    """The listener's paise for `charged_s` billed seconds charged `coins_charged`."""
    if price.rule == TIER_RULE:
        return price.paise_per_minute * charged_s // SECONDS_PER_MINUTE
    return coins_charged * price.coin_value_paise * price.share_pct // 100


def price_of(call) -> Price:
    """The price a call recorded: from a Call, or a stored row (anything with its fields)."""
    get = call.__getitem__ if hasattr(call, "keys") else call.__getattribute__
    tier = get("earnings_rule") == TIER_RULE
    return Price(
        rate_coins=get("rate_coins"),
        increment_s=get("increment_s"),
        free_s=get("free_s"),
        rule=get("earnings_rule"),
        paise_per_minute=get("rate_paise") if tier else None,
        share_pct=get("share_pct"),
        coin_value_paise=get("coin_value_paise"),
        source=get("price_source"),
        clamped_from=get("clamped_from"),
    )


def view(price: Price, rate_card_id: int) -> dict:
    """A call's `price`, as answers and events show it."""
    earnings: dict = {"rule": price.rule}
    if price.rule == TIER_RULE:
        earnings["paise_per_minute"] = price.paise_per_minute
    else:
        earnings["share_pct"] = price.share_pct
    earnings["coin_value_paise"] = price.coin_value_paise
    return {
        "rate_coins": price.rate_coins,
        "increment_s": price.increment_s,
        "free_s": price.free_s,
        "earnings": earnings,
        "rate_card_id": rate_card_id,
        "source": price.source,
        "clamped_from": price.clamped_from,
    }


def in_words(price: Price, c: Charge, minutes_billed: int) -> str:
    """The end-of-call rounding as `explain` says it."""
    prepaid = price.rate_coins * minutes_billed
    lasted = f"{c.billed_tenths // 10}.{c.billed_tenths % 10}"
    if c.free:
        return (f"{lasted} s billed, under the {price.free_s} free seconds: nothing charged; "
                f"{c.coins_returned} of {prepaid} prepaid returned")  # fmt: skip
    unit = "by the minute" if price.increment_s == 60 else f"at {price.increment_s}-s increments"
    return (f"{lasted} s billed as {c.charged_s} s {unit}: {c.coins_charged} coins; "
            f"{c.coins_returned} of {prepaid} prepaid returned")  # fmt: skip


def from_view(v: dict) -> Price:
    """The price of a call as answers show it (`view`)."""
    e = v["earnings"]
    return Price(
        rate_coins=v["rate_coins"],
        increment_s=v["increment_s"],
        free_s=v["free_s"],
        rule=e["rule"],
        paise_per_minute=e.get("paise_per_minute"),
        share_pct=e.get("share_pct"),
        coin_value_paise=e.get("coin_value_paise"),
        source=v["source"],
        clamped_from=v["clamped_from"],
    )


def decided_in_words(v: dict, tier: str) -> str:
    """How a call's price was decided, as `explain` says it."""
    card = f"rate card {v['rate_card_id']}"
    if not v["rate_card_id"]:
        card += " (the configured one)"
    rate = f"{v['rate_coins']} coins a minute: "
    if v["source"] == LISTENER and v["clamped_from"] is not None:
        rate += (f"the listener's own price {v['clamped_from']} clamped to the bounds of "
                 f"tier {tier} on {card}")  # fmt: skip
    elif v["source"] == LISTENER:
        rate += f"the listener's own price, within tier {tier}'s bounds on {card}"
    else:
        rate += f"the rate of {card}"
    unit = "by the minute" if v["increment_s"] == 60 else f"at {v['increment_s']}-s increments"
    free = f", the first {v['free_s']} s free" if v["free_s"] else ""
    e = v["earnings"]
    if e["rule"] == TIER_RULE:
        earns = f"the listener earns {e['paise_per_minute']} paise a charged minute (tier {tier})"
    else:
        earns = (f"the listener earns {e['share_pct']}% of the coins charged at "
                 f"{e['coin_value_paise']} paise a coin (tier {tier})")  # fmt: skip
    return f"{rate}; billed {unit}{free}; {earns}"
