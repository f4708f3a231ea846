"""What travels from the actors to the writer: flat lists packed with msgpack.

A transfer travels as its own fields, id first (a str): the hot path appends the tuple the
wallet made, with no copy. Every other record is a list whose first element, an int, says what
it is. Plain ints and strings keep packing cheap and let the writer check every field it reads
back.
"""

from __future__ import annotations

import msgpack

from actors.call import Settlement
from actors.errors import InvariantViolation
from actors.money import DROPPED, Transfer, check_transfer

TRANSFER_FIELDS = len(Transfer._fields)
CALL_START = 1
CALL_END = 2
EVENT = 3

# The call events an app can follow (the outbox, then a Redis Stream and /v1/events).
CALL_STARTED = "call_started"
LOW_BALANCE = "low_balance"
CALL_DROPPED = "call_dropped"
CALL_SETTLED = "call_settled"
EVENT_TYPES = (CALL_STARTED, LOW_BALANCE, CALL_DROPPED, CALL_SETTLED)


def event_record(kind: str, call_id: int, user_id: int, at_ms: int, data: dict) -> list:
    """An event of one call, written in the same transaction as what it reports. Its key is
    the same however often the event is produced (a replay after a crash), so it is one row:
    one start, one low-balance notice, one drop and one settlement per call."""
    return [EVENT, f"{kind}:{call_id}", kind, call_id, user_id, at_ms, data]


def call_started_event(call) -> list:
    data = {
        "call_id": call.call_id,
        "user_id": call.user_id,
        "listener_id": call.listener_id,
        "call_type": call.call_type,
        "tier": call.tier,
        "rate_coins": call.rate_coins,
        "rate_paise": call.rate_paise,
        "connected_at": call.connected_ms / 1000,
    }
    return event_record(CALL_STARTED, call.call_id, call.user_id, call.connected_ms, data)


def low_balance_event(notice: dict, at_ms: int) -> list:
    return event_record(LOW_BALANCE, notice["call_id"], notice["user_id"], at_ms, notice)


def call_start_record(call, start_key: str | None = None) -> list:
    return [
        CALL_START,
        call.call_id,
        call.user_id,
        call.listener_id,
        call.call_type,
        call.tier,
        call.rate_coins,
        call.rate_paise,
        call.connected_ms,
        call.minute_ms,
        call.max_minutes,
        start_key,
    ]


def call_end_record(s: Settlement) -> list:
    return [
        CALL_END,
        s.call_id,
        s.status,
        s.end_reason,
        s.billed_minutes,
        s.coins_spent,
        s.earnings_paise,
        s.ended_ms,
    ]


def settlement_records(s: Settlement) -> list[list]:
    """A settlement is written in one batch: the call's end, the listener's credit, and its
    events (`call_dropped` first if it was dropped, then `call_settled`)."""
    out = [call_end_record(s)]
    earn = s.earn_transfer()
    if earn is not None:
        out.append(earn)
    data = s.as_dict()
    if s.status == DROPPED:
        out.append(event_record(CALL_DROPPED, s.call_id, s.user_id, s.ended_ms, data))
    out.append(event_record(CALL_SETTLED, s.call_id, s.user_id, s.ended_ms, data))
    return out


def pack(records: list[list]) -> bytes:
    return msgpack.packb(records, use_bin_type=True)


def unpack(data: bytes) -> list[tuple]:
    return msgpack.unpackb(data, raw=False, use_list=False)


class Batch:
    """Records of one flush, split by kind and checked a second time."""

    __slots__ = ("transfers", "starts", "ends", "events")

    def __init__(self) -> None:
        self.transfers: list[tuple] = []  # Transfer fields, in Transfer's order
        self.starts: list[list] = []
        self.ends: list[list] = []
        self.events: list[list] = []

    def add(self, records: list[list]) -> None:
        for r in records:
            kind = r[0]
            if type(kind) is str:  # a transfer: its id comes first
                if len(r) != TRANSFER_FIELDS:
                    raise InvariantViolation(
                        f"transfer {kind}: {len(r)} fields, not {TRANSFER_FIELDS}"
                    )
                check_transfer(r)
                self.transfers.append(r)
            elif kind == CALL_START:
                self.starts.append(r[1:])
            elif kind == CALL_END:
                if r[5] < 0 or r[6] < 0 or r[4] < 0:
                    raise InvariantViolation(f"call end {r[1]}: negative totals {r[4:7]}")
                self.ends.append(r[1:])
            elif kind == EVENT:
                if r[2] not in EVENT_TYPES:
                    raise InvariantViolation(f"unknown event type {r[2]!r}")
                self.events.append(r[1:])
            else:
                raise InvariantViolation(f"unknown record kind {kind!r}")

    def __len__(self) -> int:
        return len(self.transfers) + len(self.starts) + len(self.ends) + len(self.events)
