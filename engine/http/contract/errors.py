"""How every refusal looks (`{"error": {"type", "message"}}`) and what each status means."""

from __future__ import annotations

from pydantic import Field

from engine.http.contract.kinds import Answer


class ErrorDetail(Answer):
    type: str = Field(description="the error class, e.g. InsufficientCoins", examples=["X"])
    message: str = Field(description="what is wrong, naming the field or id")


class Error(Answer):
    error: ErrorDetail


ERRORS = {
    400: "bad input: the message names the field",
    401: "a missing or wrong API key",
    402: "insufficient coins or earnings",
    403: "the key lacks the scope this route needs (the message names it)",
    404: "an unknown user, call, payout, key, webhook or route",
    409: "a party is busy, an idempotency key or key name reused, a payout settled the other "
    "way, a refund over what was billed, the call is ongoing, or a key revoking itself",
    413: "the body is over the door's bound (BILLING_HTTP_BODY_BYTES_MAX)",
    429: "too many wrong keys from this address: retry after `Retry-After`",
    503: "the engine cannot answer now; retry after `Retry-After` with the same key",
}
DOOR_ERRORS = (400, 401, 403, 413, 429, 503)  # what the door may answer (http_door.py)


def errors(*statuses: int) -> dict:
    """The `responses` of a route: these error statuses and the door's, with the error body."""
    return {s: {"model": Error, "description": ERRORS[s]} for s in (*DOOR_ERRORS, *statuses)}
