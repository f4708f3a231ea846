"""What travels from the actors to the writer: flat lists packed with msgpack.

A transfer travels as its own fields, id first (a str): the hot path appends the tuple the
wallet made, with no copy. Every other record is a list whose first element, an int, says what
it is. Plain ints and strings keep packing cheap and let the writer check every field it reads
back.
"""

from __future__ import annotations

import msgpack

from actors import buckets as bk
from actors.call import STARTED_KEYS
from actors.errors import InvariantViolation
from actors.money import DROPPED, Transfer, check_transfer
from actors.settlement import END_FIELDS, Settlement

TRANSFER_FIELDS = len(Transfer._fields)
CALL_START = 1
CALL_END = 2
EVENT = 3
# Rows of the payouts and refunds tables. Each record carries the transfer and the event that
# go with its row, so that the three are one record and commit in one transaction whatever
# the producer's batches cut (`row_record`).
PAYOUT = 4  # a payout held: PAYOUT_FIELDS
PAYOUT_SETTLED = 5  # paid or rejected: PAYOUT_SETTLED_FIELDS
REFUND = 6  # a refund recorded with the listener's claw-back: REFUND_FIELDS
REFUNDED = 7  # its coins credited to the payer: REFUNDED_FIELDS
BUCKET = 8  # a bucket of coins that expire, with its top-up: BUCKET_FIELDS
BUCKET_STATES = 9  # a wallet's buckets as of a position, with what expired: BUCKET_STATES_FIELDS
PRICES = 10  # a change of a listener's prices: PRICES_FIELDS (prices and bounds as JSON text)

PAYOUT_FIELDS = ("payout_id", "listener_id", "amount_paise", "transfer_id", "created_ms")
PAYOUT_SETTLED_FIELDS = ("payout_id", "status", "reason", "settled_ms")
REFUND_FIELDS = (
    "refund_id",
    "call_id",
    "user_id",
    "listener_id",
    "minutes",
    "coins",
    "paise",
    "listener_pays",
    "reason",
    "created_ms",
)
REFUNDED_FIELDS = ("refund_id", "refunded_ms")
BUCKET_FIELDS = ("bucket_id", "user_id", "tx_type", "coins", "expires_ms", "as_of")
# one list per field, a bucket per index (`bucket_states_record`)
BUCKET_STATES_FIELDS = ("bucket_ids", "coins_left", "as_ofs", "expired")
PRICES_FIELDS = (
    "listener_id",
    "prices",
    "tier",
    "rate_card_id",
    "bounds",
    "set_ms",
    "idempotency_key",
)
ROW_FIELDS = {
    PRICES: PRICES_FIELDS,
    PAYOUT: PAYOUT_FIELDS,
    PAYOUT_SETTLED: PAYOUT_SETTLED_FIELDS,
    REFUND: REFUND_FIELDS,
    REFUNDED: REFUNDED_FIELDS,
    BUCKET: BUCKET_FIELDS,
    BUCKET_STATES: BUCKET_STATES_FIELDS,
}

# The events an app can follow (the outbox, then a Redis Stream and /v1/events).
CALL_STARTED = "call_started"
LOW_BALANCE = "low_balance"
CALL_DROPPED = "call_dropped"
CALL_SETTLED = "call_settled"
CALL_REFUNDED = "call_refunded"
CALL_SUSPENDED = "call_suspended"  # a minute the payer cannot pay waits for a credit
CALL_RESUMED = "call_resumed"  # a credit within the grace paid it
PAYOUT_EVENTS = {"pending": "payout_pending", "paid": "payout_paid", "rejected": "payout_rejected"}
WEBHOOK_DISABLED = "webhook_disabled"  # an endpoint failed past its retry time (engine/webhooks.py)
EVENT_TYPES = (
    CALL_STARTED,
    LOW_BALANCE,
    CALL_DROPPED,
    CALL_SETTLED,
    CALL_REFUNDED,
    CALL_SUSPENDED,
    CALL_RESUMED,
    *PAYOUT_EVENTS.values(),
    WEBHOOK_DISABLED,
)


def event_record(
    kind: str, call_id: int | None, user_id: int, at_ms: int, data: dict, of=None
) -> list:
    """An event, written in the same transaction as what it reports. Its key is the same
    however often the event is produced (a replay after a crash), so it is one row: one start,
    one low-balance notice, one drop and one settlement per call; one event per step of a
    payout or a refund (`of`: the payout or refund, when it is not the call)."""
    return [EVENT, f"{kind}:{call_id if of is None else of}", kind, call_id, user_id, at_ms, data]


def row_record(kind: int, row: dict, transfers=(), event: list | None = None) -> list:
    """A row of the payouts, refunds or buckets table (from a dict holding its fields), with
    the transfers and the event record (or None) written with it."""
    return [kind, *(row[f] for f in ROW_FIELDS[kind]), list(transfers), event]


def bucket_states_record(as_of: int, expired: list[str], transfers: list, after: list) -> list:
    """What a wallet's expiry wrote: the buckets `expired` (ids), the transfers of their rest,
    and the state of every bucket left (`[id, tx_type, coins_left, expires_ms, as_of]`), as of
    the position `as_of`: one record."""
    ids = [*expired, *(b[bk.ID] for b in after)]
    row = {
        "bucket_ids": ids,
        "coins_left": [0] * len(expired) + [b[bk.LEFT] for b in after],
        "as_ofs": [as_of] * len(ids),
        "expired": [True] * len(expired) + [False] * len(after),
    }
    return row_record(BUCKET_STATES, row, transfers)


def call_started_event(call) -> list:
    data = {k: getattr(call, k) for k in STARTED_KEYS} | {"price": call.price_view()}
    if call.offer_id is not None:  # a call without one announces itself as it always did
        data["offer"] = {"offer_id": call.offer_id, "free_minutes": call.offer_minutes}
    return event_record(CALL_STARTED, call.call_id, call.user_id, call.connected_ms, data)


def grace_event(call, balance_coins: int) -> list:
    """The event of a call's change in its grace (`grace_note`, taken): suspended at the due
    time of the minute it cannot pay, or resumed when a credit paid it."""
    kind, at_ms = call.grace_note
    call.grace_note = None
    data = {"call_id": call.call_id, "user_id": call.user_id, "listener_id": call.listener_id}
    if kind == CALL_SUSPENDED:
        minute = call.billed_minutes + 1
        data |= {"minute": minute, "balance_coins": balance_coins,
                 "coins_needed": max(1, call.rate_coins - balance_coins),
                 "grace_until": call.grace_until_ms() / 1000}  # fmt: skip
    else:
        minute = call.billed_minutes
        data |= {"minute": minute, "paid_at": at_ms / 1000, "next_tick_at": call.wake_at()}
    return event_record(
        kind, call.call_id, call.user_id, at_ms, data, of=f"{call.call_id}:{minute}"
    )


def low_balance_event(notice: dict, at_ms: int) -> list:
    return event_record(LOW_BALANCE, notice["call_id"], notice["user_id"], at_ms, notice)


def call_start_record(call, start_key: str | None = None) -> list:
    """The call's CALL_FIELDS, then the idempotency key that started it."""
    return [CALL_START, *call.fields(), start_key]


def call_end_record(s: Settlement, transfers: list, events: list) -> list:
    """The settlement's END_FIELDS, then what it moves and its events: one record, so that a
    call's end, its return, its listener's credit and its events commit in one transaction
    whatever the producer's batches cut."""
    return [CALL_END, *(getattr(s, f) for f in END_FIELDS), transfers, events]


# Where an end record (without its kind) holds the totals that must not be negative.
END_TOTALS_AT = tuple(
    END_FIELDS.index(f)
    for f in ("billed_minutes", "coins_spent", "earnings_paise", "coins_charged",
              "coins_returned", "charged_seconds")
)  # fmt: skip
SPENT_AT, CHARGED_AT, RETURNED_AT = (
    END_FIELDS.index(f) for f in ("coins_spent", "coins_charged", "coins_returned")
)


def is_transfer_record(r) -> bool:
    """A transfer travels as its own fields, its id (a str) first; every other record starts
    with its kind (an int)."""
    return type(r[0]) is str


def settlement_records(s: Settlement) -> list[list]:
    """A settlement is one record: the call's end, the coins it returns and the listener's
    credit, and its events (`call_dropped` first if it was dropped, then `call_settled`)."""
    data = s.as_dict()
    events = []
    if s.status == DROPPED:
        events.append(event_record(CALL_DROPPED, s.call_id, s.user_id, s.ended_ms, data))
    events.append(event_record(CALL_SETTLED, s.call_id, s.user_id, s.ended_ms, data))
    return [call_end_record(s, s.transfers(), events)]


def pack(records: list[list]) -> bytes:
    return msgpack.packb(records, use_bin_type=True)


def unpack(data: bytes) -> list[tuple]:
    return msgpack.unpackb(data, raw=False, use_list=False)


class Batch:
    """Records of one flush, split by kind and checked a second time."""

    __slots__ = ("transfers", "starts", "ends", "events", "rows")

    def __init__(self) -> None:
        self.transfers: list[tuple] = []  # Transfer fields, in Transfer's order
        self.starts: list[list] = []
        self.ends: list[list] = []
        self.events: list[list] = []
        self.rows: dict[int, list[list]] = {}  # payouts and refunds, by kind (ROW_FIELDS)

    def add(self, records: list[list]) -> None:
        for r in records:
            kind = r[0]
            if is_transfer_record(r):
                if len(r) != TRANSFER_FIELDS:
                    raise InvariantViolation(
                        f"transfer {kind}: {len(r)} fields, not {TRANSFER_FIELDS}"
                    )
                check_transfer(r)
                self.transfers.append(r)
            elif kind == CALL_START:
                self.starts.append(r[1:])
            elif kind == CALL_END:
                *end, transfers, events = r[1:]
                totals = [end[i] for i in END_TOTALS_AT]
                if min(totals) < 0:
                    raise InvariantViolation(f"call end {end[0]}: negative totals {totals}")
                if end[CHARGED_AT] + end[RETURNED_AT] != end[SPENT_AT]:
                    raise InvariantViolation(
                        f"call end {end[0]}: charged {end[CHARGED_AT]} and returned "
                        f"{end[RETURNED_AT]} of {end[SPENT_AT]} prepaid"
                    )
                self.ends.append(end)
                self.add([*transfers, *events])
            elif kind == EVENT:
                if r[2] not in EVENT_TYPES:
                    raise InvariantViolation(f"unknown event type {r[2]!r}")
                self.events.append(r[1:])
            elif kind in ROW_FIELDS:
                if len(r) != len(ROW_FIELDS[kind]) + 3:
                    raise InvariantViolation(f"record of kind {kind}: {len(r) - 1} fields")
                *row, transfers, event = r[1:]
                self.rows.setdefault(kind, []).append(row)
                self.add([*transfers, *([] if event is None else [event])])
            else:
                raise InvariantViolation(f"unknown record kind {kind!r}")

    def __len__(self) -> int:
        rows = sum(map(len, self.rows.values()))
        return len(self.transfers) + len(self.starts) + len(self.ends) + len(self.events) + rows
