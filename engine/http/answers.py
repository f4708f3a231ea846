"""How the HTTP API answers: an Engine's answer as JSON, and every refusal as
`{"error": {"type", "message"}}` with its status (the table in engine/http/app.py)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from actors.errors import (
    BillingError,
    CallOngoing,
    CapacityExceeded,
    EngineUnavailable,
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    KeyInUse,
    PartyBusy,
    PayoutSettled,
    RefundExceedsBilled,
    UnknownCall,
    UnknownKey,
    UnknownOffer,
    UnknownPayout,
    UnknownUser,
    UnknownWebhook,
)
from actors.times import iso_times

RETRY_AFTER_S = 1


class JSONLine(JSONResponse):
    """JSON that ends with a newline, so that answers printed one after another (curl in a
    shell) stay apart, and a line reader reads one."""

    def render(self, content) -> bytes:
        return super().render(content) + b"\n"


STATUS: list[tuple[type[BaseException], int]] = [
    (InsufficientCoins, 402),
    (InsufficientEarnings, 402),
    (UnknownUser, 404),
    (UnknownCall, 404),
    (UnknownPayout, 404),
    (UnknownKey, 404),
    (UnknownWebhook, 404),
    (UnknownOffer, 404),
    (PartyBusy, 409),
    (IdempotencyConflict, 409),
    (KeyInUse, 409),
    (PayoutSettled, 409),
    (RefundExceedsBilled, 409),
    (CallOngoing, 409),
    (CapacityExceeded, 503),
    (BillingError, 400),
    (EngineUnavailable, 503),
]


def status_of(exc: BaseException) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def error(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONLine(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


def answer(value, status: int = 200) -> JSONResponse:
    """The Engine's answer, its times in ISO 8601 (`engine/times.py`): its model documents it
    (http_schema), and a test checks the two agree, so the replica does not validate every
    answer again."""
    return JSONLine(iso_times(value), status_code=status)


def validation_message(errors) -> str:
    """Pydantic's errors as one line that names each field ("amount: Input should be ...")."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def internal_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: see the service's log"
