"""Units, transaction types, transfers and the rate card. Money is always an int."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from actors.errors import InvalidInput, InvariantViolation

COINS = "coins"
PAISE = "paise"

PURCHASE = "purchase"
SPEND = "spend"
EARN = "earn"
WITHDRAW = "withdraw"
BONUS = "bonus"
REFERRAL_BONUS = "referral_bonus"
PAYOUT_VOID = "payout_void"  # a rejected payout: its hold (the withdraw) back to earnings
REFUND = "refund"  # a refunded call's coins back to its payer
CLAWBACK = "clawback"  # the same minutes' earnings back from the call's listener
EXPIRE = "expire"  # the rest of a bucket of bonus coins, at its expiry (actors/buckets.py)
UNUSED_COINS = "unused"  # a call's prepaid coins its price did not charge, back at its end
OFFER_GRANT = "offer_grant"  # an offer's coins for a call's free minutes, to its payer at start
OFFER_RETURN = "offer_return"  # what of them the call's price did not charge, out at its end

TX_TYPES = (
    PURCHASE,
    SPEND,
    EARN,
    WITHDRAW,
    BONUS,
    REFERRAL_BONUS,
    PAYOUT_VOID,
    REFUND,
    CLAWBACK,
    EXPIRE,
    UNUSED_COINS,
    OFFER_GRANT,
    OFFER_RETURN,
)
# Transfers from the outside that create coins: the only way coins enter the system.
TOP_UP_TYPES = (PURCHASE, BONUS, REFERRAL_BONUS)

# unit and sign of each transaction type: the writer and the audit check both against this.
TX_UNIT_SIGN = {
    PURCHASE: (COINS, 1),
    BONUS: (COINS, 1),
    REFERRAL_BONUS: (COINS, 1),
    SPEND: (COINS, -1),
    EARN: (PAISE, 1),
    WITHDRAW: (PAISE, -1),
    PAYOUT_VOID: (PAISE, 1),
    REFUND: (COINS, 1),
    CLAWBACK: (PAISE, -1),
    EXPIRE: (COINS, -1),
    UNUSED_COINS: (COINS, 1),
    OFFER_GRANT: (COINS, 1),
    OFFER_RETURN: (COINS, -1),
}

# A payout is a withdraw that holds the earnings at once, then is paid (the hold stays, as the
# payout) or rejected (the hold released by a `payout_void`): TigerBeetle's pending transfer,
# posted or voided.
PAYOUT_PENDING = "pending"
PAYOUT_PAID = "paid"
PAYOUT_REJECTED = "rejected"
PAYOUT_OUTCOMES = (PAYOUT_PAID, PAYOUT_REJECTED)
PAYOUT_STATUSES = (PAYOUT_PENDING, *PAYOUT_OUTCOMES)

CALL_TYPES = ("audio", "video")
TIERS = ("basic", "bronze", "silver", "gold")
ROLES = ("user", "listener")

ONGOING = "ongoing"
SUSPENDED = "suspended"  # a minute fell due that the payer could not pay: within its grace
LIVE_STATUSES = (ONGOING, SUSPENDED)  # a call not ended
COMPLETED = "completed"
DROPPED = "dropped"
REASON_HANGUP = "hangup"
REASON_INSUFFICIENT = "insufficient_coins"
REASON_EXPIRED = "expired"

# Every amount and id from outside is at most this: the largest integer a JSON number holds
# exactly (a JavaScript client's, a JSON Schema validator's: above it, 2**53 + 1 reads as 2**53),
# and far inside PostgreSQL's bigint, which bounds every balance.
AMOUNT_MAX = 2**53 - 1
# Text from outside, in characters: a person's name and an idempotency key.
NAME_CHARS_MAX = 200
IDEMPOTENCY_KEY_CHARS_MAX = 128
REASON_CHARS_MAX = 500  # why a payout was settled or a call refunded


def to_ms(seconds: float) -> int:
    """A time (epoch seconds) or a duration as integer milliseconds: the one rounding that the
    actors, the ledger rows and the audit share, so that they agree on every boundary."""
    return round(seconds * 1000)


class Transfer(NamedTuple):
    """One ledger row. A plain tuple so that msgpack packs it without help."""

    transfer_id: str
    user_id: int
    unit: str
    amount: int
    tx_type: str
    call_id: int | None
    minute_no: int | None
    at_ms: int  # when it happened: a minute's start, an outside transfer's stamp, a call's end
    billed_ms: int | None = None  # when the host made it (a minute billed late: later than at_ms)


# Where a transfer (or a row laid out as one) holds each field, for code that reads it by index.
USER_AT, UNIT_AT, AMOUNT_AT, TX_TYPE_AT, CALL_AT, AT_MS_AT, BILLED_MS_AT = (
    Transfer._fields.index(f)
    for f in ("user_id", "unit", "amount", "tx_type", "call_id", "at_ms", "billed_ms")
)


def is_call_minute(t: Transfer | tuple) -> bool:
    """A minute of a call (a spend that names its call): it moves its payer's wallet only when
    the call's end is written, by the sum of the call's minutes."""
    return t[TX_TYPE_AT] == SPEND and t[CALL_AT] is not None


def check_transfer(t: Transfer | tuple) -> None:
    """Second check of money, where transfers are read back (writer, recovery). Takes a
    Transfer or the plain tuple of its fields, as unpacked from a batch."""
    transfer_id, _, unit, amount, tx_type = t[:5]
    if type(amount) is not int:
        raise InvariantViolation(f"transfer {transfer_id}: amount {amount!r} is not an int")
    unit_sign = TX_UNIT_SIGN.get(tx_type)
    if unit_sign is None:
        raise InvariantViolation(f"transfer {transfer_id}: unknown type {tx_type!r}")
    if unit != unit_sign[0]:
        raise InvariantViolation(f"transfer {transfer_id}: {tx_type} in {unit}, not {unit_sign[0]}")
    if amount * unit_sign[1] <= 0:
        raise InvariantViolation(
            f"transfer {transfer_id}: {tx_type} of {amount} has the wrong sign"
        )


def positive_amount(value: object, what: str) -> int:
    """An amount of money from outside: a positive int (bool is not one)."""
    if type(value) is not int:
        raise InvalidInput(f"{what} must be a positive integer, got {value!r}")
    if value <= 0:
        raise InvalidInput(f"{what} must be a positive integer, got {value}")
    if value > AMOUNT_MAX:
        raise InvalidInput(f"{what} must be at most {AMOUNT_MAX}, got {value}")
    return value


# What may move money from outside a call: coins in, coins spent, earnings paid out. Earnings
# are only ever credited by a call's settlement, and never as coins.
EXTERNAL_TYPES = (*TOP_UP_TYPES, SPEND, WITHDRAW)


def check_external(tx_type: str, amount: int) -> None:
    """What an external transfer must be, before anything looks at its key."""
    if tx_type not in EXTERNAL_TYPES:
        raise InvalidInput(
            f"transaction type {tx_type!r} cannot be applied from outside; "
            f"use one of {', '.join(EXTERNAL_TYPES)}"
        )
    positive_amount(amount, "amount")


def entity_id(value: object, what: str) -> int:
    """A user, listener or call id: a positive int."""
    if type(value) is not int or value <= 0 or value > AMOUNT_MAX:
        raise InvalidInput(f"{what} must be a positive integer id, got {value!r}")
    return value


def page_limit(limit: object, limit_max: int, before: object = None) -> int:
    """How many rows a page of a read holds: an int in [1, `limit_max`]; and the id the page
    starts below (`before`), if any, an id."""
    if type(limit) is not int or not 1 <= limit <= limit_max:
        raise InvalidInput(f"limit must be an integer in [1, {limit_max}], got {limit!r}")
    if before is not None:
        entity_id(before, "before")
    return limit


def text_value(value: object, what: str, chars_max: int) -> str:
    """Text from outside that PostgreSQL must be able to store as given: non-empty, at most
    `chars_max` characters, no NUL, valid UTF-8 (no lone surrogates)."""
    if not isinstance(value, str) or not value.strip() or len(value) > chars_max:
        raise InvalidInput(
            f"{what} must be a non-empty string of at most {chars_max} characters, got {value!r}"
        )
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid UTF-8 text") from None
    return value


def key_of(value: object) -> str:
    """An idempotency key from outside, or a new one (a request without a key is applied as
    one request: a retry of it is not recognised)."""
    if value is None:
        return uuid.uuid4().hex
    return text_value(value, "idempotency_key", IDEMPOTENCY_KEY_CHARS_MAX)


def one_of(value: object, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInput(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _default_coins() -> dict[str, int]:
    return {"audio": 10, "video": 60}


def _default_paise() -> dict[str, dict[str, int]]:
    return {
        "basic": {"audio": 100, "video": 600},
        "bronze": {"audio": 125, "video": 700},
        "silver": {"audio": 150, "video": 850},
        "gold": {"audio": 180, "video": 1000},
    }


def _per_call_type(value: int) -> dict[str, int]:
    return dict.fromkeys(CALL_TYPES, value)


@dataclass(frozen=True)
class RateCard:
    """Coins per minute the user pays per call type; paise per minute the listener earns. The
    price plan's keys (actors/price_plan.py: increments, free seconds, listeners' price
    bounds, the earnings rule) are optional; their defaults price as whole minutes do."""

    coins_per_minute: dict[str, int] = field(default_factory=_default_coins)
    paise_per_minute: dict[str, dict[str, int]] = field(default_factory=_default_paise)
    increment_s: dict[str, int] = field(default_factory=lambda: _per_call_type(60))
    free_s: dict[str, int] = field(default_factory=lambda: _per_call_type(0))
    grace_s: dict[str, int] = field(default_factory=lambda: _per_call_type(0))
    price_bounds: dict = field(default_factory=dict)  # {call_type: {tier: (min, max)}}
    earnings_rule: str = "tier"
    share_pct: dict[str, int] | None = None  # by tier, for the rule "share"
    coin_value_paise: int | None = None

    def __post_init__(self) -> None:
        from actors import price_plan as plan  # it imports this module's words

        for call_type in CALL_TYPES:
            positive_amount(self.coins_per_minute.get(call_type), f"rate {call_type} coins")
            for tier in TIERS:
                rate = self.paise_per_minute.get(tier, {}).get(call_type)
                positive_amount(rate, f"rate {tier}/{call_type} paise")
        fix = functools.partial(object.__setattr__, self)
        fix("increment_s", plan.per_call_type(self.increment_s, "increment_s", plan.increment))
        fix("free_s", plan.per_call_type(self.free_s, "free_s", plan.free_seconds))
        fix("grace_s", plan.per_call_type(self.grace_s, "grace_s", plan.grace_seconds))
        fix("price_bounds", plan.price_bounds(self.price_bounds))
        one_of(self.earnings_rule, plan.EARNINGS_RULES, "earnings_rule")
        if self.coin_value_paise is not None:
            positive_amount(self.coin_value_paise, "coin_value_paise")
        if self.share_pct is not None:
            fix("share_pct", plan.share_pcts(self.share_pct))
        if self.earnings_rule == plan.SHARE_RULE and (
            self.share_pct is None or self.coin_value_paise is None
        ):
            raise InvalidInput(
                "earnings_rule 'share' needs share_pct (every tier) and coin_value_paise"
            )

    @classmethod
    def from_dict(cls, card: object) -> RateCard:
        """A card from JSON (BILLING_RATE_CARD, the body of a new card), naming what is
        wrong."""
        if not isinstance(card, dict):
            raise InvalidInput(f"a rate card must be an object, got {card!r}")
        unknown = set(card) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidInput(f"a rate card has no keys {sorted(unknown)}")
        return cls(**card)

    def as_dict(self) -> dict:
        """The card as JSON holds it (what `from_dict` reads back)."""
        out = dataclasses.asdict(self)
        out["price_bounds"] = {
            t: {tier: list(b) for tier, b in by_tier.items()}
            for t, by_tier in self.price_bounds.items()
        }
        return out

    def price(self, call_type: str, tier: str, listener_price: int | None = None):
        """The price a call of `call_type` with a listener of `tier` fixes at its start: the
        listener's own price clamped to the tier's bounds, or the card's rate when the card
        lets no listener price this call type or they set none."""
        from actors.price_plan import Price, clamp

        coins, paise = self.rates(call_type, tier)
        bounds = self.price_bounds.get(call_type, {}).get(tier)
        rate, source, clamped_from = coins, "card", None
        if listener_price is not None and bounds is not None:
            rate, source = clamp(listener_price, bounds), "listener"
            clamped_from = listener_price if rate != listener_price else None
        share = self.earnings_rule == "share"
        return Price(
            rate_coins=rate,
            increment_s=self.increment_s[call_type],
            free_s=self.free_s[call_type],
            rule=self.earnings_rule,
            paise_per_minute=None if share else paise,
            share_pct=self.share_pct[tier] if share else None,
            coin_value_paise=self.coin_value_paise,
            source=source,
            clamped_from=clamped_from,
        )

    def rates(self, call_type: str, tier: str) -> tuple[int, int]:
        one_of(call_type, CALL_TYPES, "call_type")
        one_of(tier, TIERS, "tier")
        return self.coins_per_minute[call_type], self.paise_per_minute[tier][call_type]
